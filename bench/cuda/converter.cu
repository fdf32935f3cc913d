// The Memory Converter, converter_kernel<exact_converter, cuda>::run (the mixer's entry point; the
// dimensions are runtime values): the exact SSM state after a prefix of P tokens,
//   S = (prod_{m<P} a_m) S_init + sum_{j<P} exp(sum_{m=j+1}^{P-1} dt_m A) dt_j x_j B_j^T,
// from x, B, dt of the prefix (the chunked SSD's chunk_state + state_passing, chunk 256).
//
//   converter/transmamba/{bf16,fp32}/b:<65536/P>/h:32/p:64/n:128/g:1/P:<P>    P = 512 .. 65536
// batch x P = 65536 tokens; x/B/C are views into one xBC row per token (the mixer's layout). The
// inputs read (x and B: >= 285 MB in bf16) are far above the 50 MB L2, so nothing is rotated. The
// report script relates each figure to the attention over the same prefix (bench_cuda_attention,
// the same b and L = P).
//
// Timing (bench/support/cuda_bench.cuh): CUDA events around each eager call (2 launches) on the
// legacy default stream, 3 warm-up calls, the median; the initial state (zeros, as in the mixer) is
// reset before every call, outside the timed window. graph_ms: the median of 20 replays of the call
// captured in a CUDA graph.
// Counters:
//   TFLOP_per_s       SPEC section 4: 2*b*h*P*n*p
//   exec_TFLOP_per_s  the tensor-core work the kernels execute: bf16 enters the weighted keys as
//                     hi + lo pairs (2 passes), fp32 is 3xTF32 (3 passes)
//   GB_per_s          x, B (storage type) and dt (float) read once, the state read and written
//   flop_fraction     of 676 (bf16) or 52 (fp32: float32 accuracy) TFLOP/s
#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include <transmamba/backend/cuda/converter.cuh>

#include "../support/cuda_bench.cuh"

namespace {

using namespace transmamba;
using bf16 = __nv_bfloat16;
using kernel = converter_kernel<exact_converter, transmamba::cuda>;
using bench::check_cuda;

constexpr index_t tokens = 65536, heads = 32, headdim = 64, dstate = 128, groups = 1;

double spec_flops() { return 2.0 * double(tokens) * heads * dstate * headdim; }

// Expected ms of one call: ~0.3 ms (bf16) and ~1 ms (fp32) at 64k tokens (chunk_state's share of
// the scan in PERF.md's notes), for the iteration count.
template <class T>
double estimate_ms() {
    return std::is_same_v<T, float> ? 1.2 : 0.4;
}

template <class T>
void bm_converter(benchmark::State& st, index_t P) {
    const index_t batch = tokens / P, rows = batch * P, h = heads, p = headdim, n = dstate, g = groups;
    mixer_config cfg;
    cfg.expand = 1;
    cfg.d_model = h * p;
    cfg.headdim = p;
    cfg.d_state = n;
    cfg.ngroups = g;
    cfg.validate();
    const index_t width = cfg.conv_dim();
    const auto state_size = static_cast<std::size_t>(batch * h * p * n);

    device_buffer<T> xbc(static_cast<std::size_t>(rows * width));
    device_buffer<float> dt(static_cast<std::size_t>(rows * h)), A(static_cast<std::size_t>(h)),
        D(static_cast<std::size_t>(h)), state(state_size);
    bench::fill_uniform(xbc, 1, -1.0f, 1.0f);
    bench::fill_uniform(dt, 2, 1e-3f, 0.1f);
    bench::fill_uniform(A, 3, -1.5f, -0.05f);
    bench::fill_uniform(D, 4, 0.5f, 1.5f);
    device_buffer<std::byte> scratch(kernel::scratch_bytes<T>(cfg, batch, P));

    ssm_inputs<T> in;
    in.x = tensor_view<const T, 4>(xbc.data(), {batch, P, h, p}, {P * width, width, p, 1});
    in.B = tensor_view<const T, 4>(xbc.data() + h * p, {batch, P, g, n}, {P * width, width, n, 1});
    in.C = tensor_view<const T, 4>(xbc.data() + h * p + g * n, {batch, P, g, n}, {P * width, width, n, 1});
    in.dt = tensor_view<const float, 3>(dt.data(), {batch, P, h});
    in.A = A.data();
    in.D = D.data();
    const tensor_view<float, 4> sv(state.data(), {batch, h, p, n});
    const cuda_context ctx{};
    const workspace_span span{scratch.data(), scratch.size()};
    const auto zero_state = [&] {
        check_cuda(cudaMemsetAsync(state.data(), 0, state_size * sizeof(float), ctx.stream), "cudaMemsetAsync (state)");
    };

    const auto times =
        bench::time_iterations(st, ctx.stream, 3, zero_state, [&] { kernel::run<T>(ctx, cfg, in, P, sv, span); });
    st.counters["graph_ms"] =
        bench::graph_median_ms(20, [&](const cuda_context& gctx) { kernel::run<T>(gctx, cfg, in, P, sv, span); });

    bench::work_counts w;
    w.tokens = double(rows);
    w.flops = spec_flops();
    w.bytes = double(rows) * double(h * p + g * n) * sizeof(T) + double(rows * h) * sizeof(float) +
              2.0 * double(state_size) * sizeof(float);
    w.ceiling = bench::ceiling_TFLOP_per_s(bench::dtype_name<T>());
    bench::set_counters(st, times, w);
    const double sec = bench::median(times) * 1e-3;
    if (sec > 0) st.counters["exec_TFLOP_per_s"] = (std::is_same_v<T, float> ? 3.0 : 2.0) * w.flops / sec * 1e-12;
}

template <class T>
void add_all() {
    for (index_t P = 512; P <= tokens; P *= 2) {
        const auto name = bench::bench_name("converter", "transmamba", bench::dtype_name<T>(),
                                            {{"b", tokens / P}, {"h", heads}, {"p", headdim}, {"n", dstate},
                                             {"g", groups}, {"P", P}});
        bench::add(name, bench::iterations_for(estimate_ms<T>(), 1000.0, 5, 40),
                   [P](benchmark::State& st) { bm_converter<T>(st, P); });
    }
}

}  // namespace

int main(int argc, char** argv) {
    add_all<bf16>();
    add_all<float>();
    return transmamba::bench::run_main(argc, argv);
}
