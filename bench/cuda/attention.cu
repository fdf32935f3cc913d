// The prefill attention, attention_kernel<paper_attention, cuda>::run (the runtime-dispatched entry
// point the mixer calls: d_state and the CTA value width are picked per call, so this program
// instantiates nothing the library does not), causal over the whole sequence (P = L), with D.
//
//   attention/transmamba/{bf16,fp32}/b:<65536/L>/L:<L>/h:32/p:64/n:128/g:1   L = 512 .. 65536
//   attention/transmamba/{bf16,fp32}/b:16/L:4096/h:32/p:{64,128}/n:{64,128}/g:{1,8,32}
// bf16: the tensor-core kernel (mma.sync, float32 accumulation), or in a 90a build on an sm_90 the
// Hopper kernel (sm90/attention_sm90.cuh; counter sm90 = 1, value_width its 64 or 128); fp32: the
// SIMT float32 kernel.
// batch x L = 65536 tokens in every case; x, B, C are views into one xBC row per token (the
// mixer's layout), y is float32. Inputs are always larger than the 50 MB L2 (xBC >= 285 MB in
// bf16, y >= 537 MB), so nothing is rotated. The peer (SDPA) is bench/peers/attention_sdpa.py.
//
// Timing (bench/support/cuda_bench.cuh): CUDA events around each call on the legacy default
// stream, 1-3 warm-up calls, a fixed iteration count per shape (fewer for the long ones), the
// median. One kernel launch per call, so no graph-captured variant: launch overhead is < 1% of the
// shortest call.
//
// Counters (causal half of the P x P score matrix, P^2 / 2 pairs, P = L):
//   TFLOP_per_s        SPEC section 4: scores once per group, values per head,
//                      2*b*g*P^2/2*n + 2*b*h*P^2/2*p = b*P^2*(g*n + h*p)
//   exec_TFLOP_per_s   what the kernel executes: the scores once per CTA column slice (a group
//                      wider than one CTA's value width computes its scores once per slice)
//   equiv_TFLOP_per_s  counted the PyTorch way, per head: 2*b*h*P^2/2*(n + p)
//   GB_per_s           x, B, C read once (storage type), y written once (float32)
//   value_width, slices  the CTA value width and the slices per group of this call
//   flop_fraction      of 676 TFLOP/s (bf16) or 52 TFLOP/s (fp32, SIMT: no tensor cores)
#include <cstdint>
#include <string>

#include <transmamba/backend/cuda/attention.cuh>

#include "../support/cuda_bench.cuh"

namespace {

using namespace transmamba;
using bf16 = __nv_bfloat16;
using kernel = attention_kernel<paper_attention, transmamba::cuda>;

constexpr index_t tokens = 65536;

struct shape {
    index_t L, h, p, n, g;
    index_t batch() const { return tokens / L; }
};

// The CTA value width the kernel uses for this shape (bf16: picked per group width; fp32: fixed).
template <class T>
int value_width(const shape& s) {
    if constexpr (std::is_same_v<T, float>) return cuda_attention_simt_tuning::value_cols;
    else if (kernel::uses_sm90(s.n)) return kernel::sm90_value_width(s.h / s.g * s.p, s.n);
    else return kernel::value_width(s.h / s.g * s.p, s.n);
}

// Expected ms of one call, for the iteration count: ~150 TFLOP/s executed in bf16 (PERF.md),
// ~6 TFLOP/s executed for the SIMT kernel (a guess, shared-memory bound: no figure measured yet).
template <class T>
double estimate_ms(const shape& s) {
    const double pairs = double(s.batch()) * double(s.L) * double(s.L) / 2.0;
    const index_t cols = s.h / s.g * s.p;
    const double slices = double((cols + value_width<T>(s) - 1) / value_width<T>(s));
    const double exec = 2.0 * pairs * (slices * double(s.g * s.n) + double(s.h * s.p));
    const double rate = std::is_same_v<T, float> ? 6e12 : 150e12;
    return exec / rate * 1e3 + 0.02;
}

template <class T>
void bm_attention(benchmark::State& st, shape s) {
    const index_t batch = s.batch(), L = s.L, h = s.h, p = s.p, n = s.n, g = s.g;
    mixer_config cfg;
    cfg.expand = 1;
    cfg.d_model = h * p;
    cfg.headdim = p;
    cfg.d_state = n;
    cfg.ngroups = g;
    cfg.validate();
    const index_t width = cfg.conv_dim();  // x | B | C
    device_buffer<T> xbc(static_cast<std::size_t>(batch * L * width));
    device_buffer<float> D(static_cast<std::size_t>(h)), y(static_cast<std::size_t>(batch * L * h * p));
    device_buffer<std::byte> scratch(kernel::scratch_bytes<T>(cfg, batch, L));
    bench::fill_uniform(xbc, 1 + static_cast<std::uint64_t>(L * 131 + g * 7 + p + n), -1.0f, 1.0f);
    bench::fill_uniform(D, 2, 0.5f, 1.5f);
    ssm_inputs<T> in;
    in.x = tensor_view<const T, 4>(xbc.data(), {batch, L, h, p}, {L * width, width, p, 1});
    in.B = tensor_view<const T, 4>(xbc.data() + h * p, {batch, L, g, n}, {L * width, width, n, 1});
    in.C = tensor_view<const T, 4>(xbc.data() + h * p + g * n, {batch, L, g, n}, {L * width, width, n, 1});
    in.D = D.data();
    const tensor_view<float, 4> yv(y.data(), {batch, L, h, p});
    const cuda_context ctx{};
    const double est = estimate_ms<T>(s);

    const auto times = bench::time_iterations(st, ctx.stream, bench::warmup_for(est), [&] {
        kernel::run<T>(ctx, cfg, in, L, yv, {scratch.data(), scratch.size()});
    });

    const double b = double(batch), pairs = double(L) * double(L) / 2.0;
    const int vw = value_width<T>(s);
    const double slices = double((h / g * p + vw - 1) / vw);
    const double score_flops = 2.0 * b * double(g) * pairs * double(n);
    const double value_flops = 2.0 * b * double(h) * pairs * double(p);
    bench::work_counts w;
    w.tokens = double(batch * L);
    w.flops = score_flops + value_flops;
    w.bytes = double(batch * L) * (double(width) * sizeof(T) + double(h * p) * sizeof(float));
    w.ceiling = bench::ceiling_TFLOP_per_s(bench::dtype_name<T>());
    bench::set_counters(st, times, w);
    const double sec = bench::median(times) * 1e-3;
    if (sec > 0) {
        st.counters["exec_TFLOP_per_s"] = (slices * score_flops + value_flops) / sec * 1e-12;
        st.counters["equiv_TFLOP_per_s"] = 2.0 * b * double(h) * pairs * double(n + p) / sec * 1e-12;
    }
    st.counters["value_width"] = vw;
    st.counters["sm90"] = std::is_same_v<T, float> ? 0 : kernel::uses_sm90(n);
    st.counters["slices"] = slices;
}

template <class T>
void add(const shape& s) {
    const auto name = bench::bench_name("attention", "transmamba", bench::dtype_name<T>(),
                                        {{"b", s.batch()}, {"L", s.L}, {"h", s.h}, {"p", s.p}, {"n", s.n}, {"g", s.g}});
    bench::add(name, bench::iterations_for(estimate_ms<T>(s)), [s](benchmark::State& st) { bm_attention<T>(st, s); });
}

template <class T>
void add_all() {
    for (index_t L = 512; L <= tokens; L *= 2) add<T>({L, 32, 64, 128, 1});
    for (index_t p : {64, 128})
        for (index_t n : {64, 128})
            for (index_t g : {1, 8, 32})
                if (!(p == 64 && n == 128 && g == 1)) add<T>({4096, 32, p, n, g});  // that one is in the sweep
}

}  // namespace

int main(int argc, char** argv) {
    add_all<bf16>();
    add_all<float>();
    return transmamba::bench::run_main(argc, argv);
}
