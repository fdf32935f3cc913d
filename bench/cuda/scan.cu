// The chunked SSD scan, scan_kernel<chunked_ssd_scan, cuda>::run_with (the entry point whose
// dimensions are runtime values; run() is run_with<T, default_policy>), chunk 256, with D and an
// initial state, x/B/C as views into one xBC row per token (the mixer's layout):
//
//   scan/<impl>/<dtype>/b:<65536/L>/L:<L>/h:32/p:64/n:128/g:1              L = 512 .. 65536
//   scan/<impl>/<dtype>/b:16/L:4096/h:32/p:{64,128}/n:{64,128}/g:{1,8,32}
//   scan/transmamba_chunk128/bf16/b:4/L:16384/h:32/p:64/n:128/g:1          the same work, chunk 128
//   the shapes of the shared PERF.md table (16k, 64k and 256k tokens; h 32, p 64, n 128, g 1 or 8),
//   each precision as PERF.md lists it, fp32 with both policies
// impl/dtype: transmamba/bf16 (tensor cores, float32 accumulation), transmamba/fp32 (the default
// policy: 3xTF32, float32-accurate), transmamba_tf32/fp32 (ssd::tf32_policy: one tf32 pass, ~1e-3).
// batch x L = 65536 tokens in the sweeps: xBC >= 285 MB (bf16) and y >= 537 MB, far above the
// 50 MB L2, so nothing is rotated. The peer, mamba_ssm's Triton SSD on the same shapes, is
// bench/peers/ssd_triton.py.
//
// Timing (bench/support/cuda_bench.cuh): CUDA events around each eager call (3 launches) on the
// legacy default stream, 3 warm-up calls, the median; the initial state is restored before every
// call, outside the timed window.
// Counters:
//   tokens_per_s, GB_per_s   bytes = x, B, C (storage type) + dt (float) read once, y (float)
//                            written once, the state read and written; no scratch traffic
//   TFLOP_per_s              PERF.md's nominal count (SPEC section 4) b*h*L*(2*chunk*(n+p) + 4*n*p)
//   flop_fraction            of 676 (bf16), 52 (fp32, 3xTF32: float32 accuracy) or 352 (tf32) TFLOP/s
//   x_bytes_floor            median / (bytes / 3.0 TB/s): how far above the bytes floor
//   chunk_state_ms, state_passing_ms, chunk_scan_ms   the three kernels timed one by one (a
//                            separate pass of 11 calls, medians)
//   graph_ms                 the median of 20 replays of the call captured in a CUDA graph (as the
//                            peer's graph column; eager and graph were within 2% in PERF.md, so the
//                            graph figure is a counter, not a benchmark of its own)
#include <cuda_bf16.h>

#include <cstdint>
#include <string>
#include <vector>

#include <transmamba/backend/cuda/scan.cuh>

#include "../support/cuda_bench.cuh"

namespace {

using namespace transmamba;
using bf16 = __nv_bfloat16;
using kernel = scan_kernel<chunked_ssd_scan, transmamba::cuda>;
namespace ssd = kernels::cuda::ssd;
using bench::check_cuda;

constexpr index_t tokens = 65536;

struct shape {
    index_t L, h, p, n, g;
    index_t chunk = 256;
    index_t b = 0;  // the batch; 0: 65536 tokens in all
    index_t batch() const { return b > 0 ? b : tokens / L; }
};

double nominal_flops(const shape& s) {
    return double(s.batch() * s.L) * double(s.h) * (2.0 * double(s.chunk) * double(s.n + s.p) + 4.0 * double(s.n * s.p));
}

// Expected ms of one call, for the iteration count: the rates PERF.md measured at 64k tokens
// (bf16 ~125, 3xTF32 ~27, tf32 ~38 TFLOP/s nominal).
template <class T, class Policy>
double estimate_ms(const shape& s) {
    const double rate = std::is_same_v<T, float> ? (std::is_same_v<Policy, ssd::tf32_policy> ? 38e12 : 27e12) : 125e12;
    return nominal_flops(s) / rate * 1e3 + 0.05;
}

template <class T, class Policy>
void bm_scan(benchmark::State& st, shape s) {
    const index_t batch = s.batch(), L = s.L, rows = batch * L, h = s.h, p = s.p, n = s.n, g = s.g;
    mixer_config cfg;
    cfg.expand = 1;
    cfg.d_model = h * p;
    cfg.headdim = p;
    cfg.d_state = n;
    cfg.ngroups = g;
    cfg.chunk_size = s.chunk;
    cfg.validate();
    const index_t width = cfg.conv_dim();
    const auto state_size = static_cast<std::size_t>(batch * h * p * n);

    device_buffer<T> xbc(static_cast<std::size_t>(rows * width));
    device_buffer<float> dt(static_cast<std::size_t>(rows * h)), A(static_cast<std::size_t>(h)),
        D(static_cast<std::size_t>(h)), y(static_cast<std::size_t>(rows * h * p)), state0(state_size), state(state_size);
    bench::fill_uniform(xbc, 1, -1.0f, 1.0f);
    bench::fill_uniform(dt, 2, 1e-3f, 0.1f);
    bench::fill_uniform(A, 3, -1.5f, -0.05f);
    bench::fill_uniform(D, 4, 0.5f, 1.5f);
    bench::fill_uniform(state0, 5, -1.0f, 1.0f);
    device_buffer<std::byte> scratch(ssd::chunk_scratch_bytes<T, Policy>(cfg, batch, L, /*for_scan=*/true));

    ssm_inputs<T> in;
    in.x = tensor_view<const T, 4>(xbc.data(), {batch, L, h, p}, {L * width, width, p, 1});
    in.B = tensor_view<const T, 4>(xbc.data() + h * p, {batch, L, g, n}, {L * width, width, n, 1});
    in.C = tensor_view<const T, 4>(xbc.data() + h * p + g * n, {batch, L, g, n}, {L * width, width, n, 1});
    in.dt = tensor_view<const float, 3>(dt.data(), {batch, L, h});
    in.A = A.data();
    in.D = D.data();
    const tensor_view<float, 4> yv(y.data(), {batch, L, h, p});
    const tensor_view<float, 4> sv(state.data(), {batch, h, p, n});
    const cuda_context ctx{};
    const workspace_span span{scratch.data(), scratch.size()};
    const auto restore_state = [&] {
        check_cuda(cudaMemcpyAsync(state.data(), state0.data(), state_size * sizeof(float), cudaMemcpyDeviceToDevice,
                                   ctx.stream),
                   "cudaMemcpyAsync (initial state)");
    };

    const auto times = bench::time_iterations(st, ctx.stream, 3, restore_state,
                                              [&] { kernel::run_with<T, Policy>(ctx, cfg, in, 0, L, yv, sv, span); });

    // The three kernels timed one by one, with the launches the call above makes.
    {
        const auto op = ssd::make_operands<T, Policy>(cfg, in, 0, L, sv, "bench");
        workspace_arena arena(align_span(span));
        const auto scr = ssd::take_chunk_scratch<T, Policy>(arena, cfg, batch, L, true);
        cudaEvent_t ev[4];
        for (auto& e : ev) check_cuda(cudaEventCreate(&e), "cudaEventCreate");
        std::vector<double> part[3];
        for (int rep = 0; rep < 11; ++rep) {
            restore_state();
            check_cuda(cudaEventRecord(ev[0], ctx.stream), "cudaEventRecord");
            ssd::launch_chunk_state<T, Policy>(ctx, op, scr);
            check_cuda(cudaEventRecord(ev[1], ctx.stream), "cudaEventRecord");
            ssd::launch_state_passing<T, Policy>(ctx, scr, state.data(), op.batch, op.nheads, op.nchunks,
                                                 index_t(op.headdim) * op.dstate);
            check_cuda(cudaEventRecord(ev[2], ctx.stream), "cudaEventRecord");
            ssd::launch_chunk_scan<T, Policy>(ctx, op, scr, yv);
            check_cuda(cudaEventRecord(ev[3], ctx.stream), "cudaEventRecord");
            check_cuda(cudaEventSynchronize(ev[3]), "cudaEventSynchronize");
            for (int k = 0; k < 3; ++k) {
                float ms = 0;
                check_cuda(cudaEventElapsedTime(&ms, ev[k], ev[k + 1]), "cudaEventElapsedTime");
                part[k].push_back(ms);
            }
        }
        for (auto& e : ev) cudaEventDestroy(e);
        const char* names[3] = {"chunk_state_ms", "state_passing_ms", "chunk_scan_ms"};
        for (int k = 0; k < 3; ++k) st.counters[names[k]] = bench::median(part[k]);
    }
    st.counters["graph_ms"] = bench::graph_median_ms(
        20, [&](const cuda_context& gctx) { kernel::run_with<T, Policy>(gctx, cfg, in, 0, L, yv, sv, span); });

    bench::work_counts w;
    w.tokens = double(rows);
    w.flops = nominal_flops(s);
    w.bytes = double(rows) * double(width) * sizeof(T) + double(rows * h) * sizeof(float) +
              double(rows * h * p) * sizeof(float) + 2.0 * double(state_size) * sizeof(float);
    w.ceiling = bench::ceiling_TFLOP_per_s(std::is_same_v<Policy, ssd::tf32_policy> ? "tf32" : bench::dtype_name<T>());
    bench::set_counters(st, times, w);
    const double sec = bench::median(times) * 1e-3;
    if (sec > 0) st.counters["x_bytes_floor"] = sec / (w.bytes / (bench::copy_GB_per_s * 1e9));
}

template <class T, class Policy>
void add(const char* impl, const shape& s) {
    const auto name = bench::bench_name("scan", impl, bench::dtype_name<T>(),
                                        {{"b", s.batch()}, {"L", s.L}, {"h", s.h}, {"p", s.p}, {"n", s.n}, {"g", s.g}});
    bench::add(name, bench::iterations_for(estimate_ms<T, Policy>(s), 1000.0, 5, 40),
               [s](benchmark::State& st) { bm_scan<T, Policy>(st, s); });
}

template <class T, class Policy>
void add_all(const char* impl) {
    for (index_t L = 512; L <= tokens; L *= 2) add<T, Policy>(impl, {L, 32, 64, 128, 1});
    for (index_t p : {64, 128})
        for (index_t n : {64, 128})
            for (index_t g : {1, 8, 32})
                if (!(p == 64 && n == 128 && g == 1)) add<T, Policy>(impl, {4096, 32, p, n, g});  // in the sweep
}

}  // namespace

// The shared PERF.md table's shapes (bench/peers/ssd_triton.py PERF_MD_SHAPES), where they are
// not in the sweeps above.
void add_perf_md_shapes() {
    for (index_t g : {1, 8}) add<bf16, ssd::default_policy>("transmamba", {2048, 32, 64, 128, g, 256, 8});
    add<bf16, ssd::default_policy>("transmamba", {2048, 32, 64, 128, 1, 256, 128});
    for (index_t g : {1, 8}) add<bf16, ssd::default_policy>("transmamba", {16384, 32, 64, 128, g, 256, 16});
    add<float, ssd::default_policy>("transmamba", {16384, 32, 64, 128, 1, 256, 16});
    add<float, ssd::tf32_policy>("transmamba_tf32", {16384, 32, 64, 128, 1, 256, 16});
}

int main(int argc, char** argv) {
    add_all<bf16, ssd::default_policy>("transmamba");
    add<bf16, ssd::default_policy>("transmamba_chunk128", {16384, 32, 64, 128, 1, 128});
    add_all<float, ssd::default_policy>("transmamba");
    add_all<float, ssd::tf32_policy>("transmamba_tf32");
    add_perf_md_shapes();
    return transmamba::bench::run_main(argc, argv);
}
