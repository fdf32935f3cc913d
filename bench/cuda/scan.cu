// The chunked SSD scan on PERF.md's scan shapes: H = 32 heads, headdim 64, d_state 128, chunk 256,
// with D and an initial state, x/B/C as views into one xBC row per token (the mixer's layout).
// The peer, mamba_ssm's Triton SSD on the same shapes, is bench/peers/ssd_triton.py: run both in
// one session on one device.
//
// Timing: CUDA events around each call (eager: 3 launches), 3 warm-up calls, the median over the
// iterations; the initial state is restored between calls outside the timed window. graph_ms: the
// median of 20 replays of the call captured in a CUDA graph. Every input set is far above the
// 50 MB L2 (x alone is >= 64 MiB).
// Counters:
//   tokens_per_s, GB_per_s   bytes = x, B, C (storage type) + dt (float) read once, y (float)
//                             written once, the state read and written; no scratch traffic
//   TFLOP_per_s              PERF.md's nominal count b*h*L*(2*chunk*(n+p) + 4*n*p)
//   x_bytes_floor            median / (bytes / 3.0 TB/s, the device copy rate of PERF.md)
//   chunk_state_ms, state_passing_ms, chunk_scan_ms: the three kernels timed one by one
#include <benchmark/benchmark.h>

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <transmamba/backend/cuda/scan.cuh>

namespace {

using namespace transmamba;
using kernels::cuda::check_cuda;

__host__ __device__ inline std::uint64_t splitmix64(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

template <class T>
__global__ void fill_uniform(T* data, std::size_t n, std::uint64_t seed, float lo, float hi) {
    for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
        const float u = static_cast<float>(splitmix64(seed * 0x100000001b3ull + i) >> 40) * (1.0f / 16777216.0f);
        data[i] = kernels::cuda::from_float<T>(lo + (hi - lo) * u);
    }
}

template <class T>
void fill(device_buffer<T>& buf, std::uint64_t seed, float lo, float hi) {
    fill_uniform<<<kernels::cuda::blocks_for(buf.size(), 256), 256>>>(buf.data(), buf.size(), seed, lo, hi);
    kernels::cuda::check_launch("fill_uniform");
}

struct ssd_shape {
    int batch, L, g;
    int chunk = 256;
};

constexpr int heads = 32, headdim = 64, dstate = 128;

template <class T, class Policy>
void bm_chunked_ssd(benchmark::State& st, ssd_shape sh) {
    mixer_config cfg;
    cfg.expand = 1;
    cfg.d_model = heads * headdim;
    cfg.headdim = headdim;
    cfg.d_state = dstate;
    cfg.ngroups = sh.g;
    cfg.chunk_size = sh.chunk;
    const int chunk = sh.chunk;
    cfg.validate();
    const index_t batch = sh.batch, L = sh.L, rows = batch * L, g = sh.g;
    const index_t width = heads * headdim + 2 * g * dstate;
    const auto state_size = static_cast<std::size_t>(batch * heads * headdim * dstate);

    device_buffer<T> xbc(static_cast<std::size_t>(rows * width));
    device_buffer<float> dt(static_cast<std::size_t>(rows * heads)), A(heads), D(heads), y(static_cast<std::size_t>(rows * heads * headdim)),
        state0(state_size), state(state_size);
    fill(xbc, 1, -1.0f, 1.0f);
    fill(dt, 2, 1e-3f, 0.1f);
    fill(A, 3, -1.5f, -0.05f);
    fill(D, 4, 0.5f, 1.5f);
    fill(state0, 5, -1.0f, 1.0f);
    using kernel = scan_kernel<chunked_ssd_scan, transmamba::cuda>;
    namespace ssd = kernels::cuda::ssd;
    device_buffer<std::byte> scratch(ssd::chunk_scratch_bytes<T, Policy>(cfg, batch, L, /*for_scan=*/true));

    ssm_inputs<T> in;
    in.x = tensor_view<const T, 4>(xbc.data(), {batch, L, heads, headdim}, {L * width, width, headdim, 1});
    in.B = tensor_view<const T, 4>(xbc.data() + heads * headdim, {batch, L, g, dstate}, {L * width, width, dstate, 1});
    in.C = tensor_view<const T, 4>(xbc.data() + heads * headdim + g * dstate, {batch, L, g, dstate},
                                   {L * width, width, dstate, 1});
    in.dt = tensor_view<const float, 3>(dt.data(), {batch, L, heads});
    in.A = A.data();
    in.D = D.data();
    const tensor_view<float, 4> yv(y.data(), {batch, L, heads, headdim});
    const tensor_view<float, 4> sv(state.data(), {batch, heads, headdim, dstate});
    const cuda_context ctx{};
    const auto call = [&] {
        check_cuda(cudaMemcpyAsync(state.data(), state0.data(), state_size * sizeof(float), cudaMemcpyDeviceToDevice),
                   "cudaMemcpyAsync (initial state)");
        kernel::run_with<T, Policy>(ctx, cfg, in, 0, L, yv, sv, {scratch.data(), scratch.size()});
    };
    for (int i = 0; i < 3; ++i) call();
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (warm-up)");

    cudaEvent_t start, stop;
    check_cuda(cudaEventCreate(&start), "cudaEventCreate");
    check_cuda(cudaEventCreate(&stop), "cudaEventCreate");
    std::vector<float> times;
    for (auto _ : st) {
        check_cuda(cudaMemcpyAsync(state.data(), state0.data(), state_size * sizeof(float), cudaMemcpyDeviceToDevice),
                   "cudaMemcpyAsync (initial state)");
        check_cuda(cudaEventRecord(start), "cudaEventRecord");
        kernel::run_with<T, Policy>(ctx, cfg, in, 0, L, yv, sv, {scratch.data(), scratch.size()});
        check_cuda(cudaEventRecord(stop), "cudaEventRecord");
        check_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
        float ms = 0;
        check_cuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        times.push_back(ms);
        st.SetIterationTime(ms * 1e-3);
    }
    // The three kernels timed one by one (a separate pass of 11 calls, medians).
    {
        const auto op = ssd::make_operands<T, Policy>(cfg, in, 0, L, sv, "bench");
        workspace_arena arena(align_span({scratch.data(), scratch.size()}));
        const auto scr = ssd::take_chunk_scratch<T, Policy>(arena, cfg, batch, L, true);
        cudaEvent_t ev[4];
        for (auto& e : ev) check_cuda(cudaEventCreate(&e), "cudaEventCreate");
        std::vector<float> part[3];
        for (int rep = 0; rep < 11; ++rep) {
            check_cuda(cudaEventRecord(ev[0]), "cudaEventRecord");
            ssd::launch_chunk_state<T, Policy>(ctx, op, scr);
            check_cuda(cudaEventRecord(ev[1]), "cudaEventRecord");
            ssd::launch_state_passing<T, Policy>(ctx, scr, state.data(), op.batch, op.nheads, op.nchunks,
                                                 index_t(headdim) * dstate);
            check_cuda(cudaEventRecord(ev[2]), "cudaEventRecord");
            ssd::launch_chunk_scan<T, Policy>(ctx, op, scr, yv);
            check_cuda(cudaEventRecord(ev[3]), "cudaEventRecord");
            check_cuda(cudaEventSynchronize(ev[3]), "cudaEventSynchronize");
            for (int k = 0; k < 3; ++k) {
                float ms = 0;
                check_cuda(cudaEventElapsedTime(&ms, ev[k], ev[k + 1]), "cudaEventElapsedTime");
                part[k].push_back(ms);
            }
        }
        const char* names[3] = {"chunk_state_ms", "state_passing_ms", "chunk_scan_ms"};
        for (int k = 0; k < 3; ++k) {
            std::sort(part[k].begin(), part[k].end());
            st.counters[names[k]] = part[k][part[k].size() / 2];
        }
        for (auto& e : ev) cudaEventDestroy(e);
    }
    // The same call captured in a CUDA graph on a stream of its own (as the peer's "graph" column).
    {
        cuda_stream stream;
        const cuda_context gctx = stream.context();
        cudaGraph_t graph = nullptr;
        cudaGraphExec_t exec = nullptr;
        check_cuda(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
        kernel::run_with<T, Policy>(gctx, cfg, in, 0, L, yv, sv, {scratch.data(), scratch.size()});
        check_cuda(cudaStreamEndCapture(stream.get(), &graph), "cudaStreamEndCapture");
        check_cuda(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
        std::vector<float> replays;
        for (int rep = 0; rep < 23; ++rep) {
            check_cuda(cudaEventRecord(start, stream.get()), "cudaEventRecord");
            check_cuda(cudaGraphLaunch(exec, stream.get()), "cudaGraphLaunch");
            check_cuda(cudaEventRecord(stop, stream.get()), "cudaEventRecord");
            check_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
            float ms = 0;
            check_cuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
            if (rep >= 3) replays.push_back(ms);
        }
        std::sort(replays.begin(), replays.end());
        st.counters["graph_ms"] = replays[replays.size() / 2];
        cudaGraphExecDestroy(exec);
        cudaGraphDestroy(graph);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    std::sort(times.begin(), times.end());
    const double median_ms = times[times.size() / 2];
    const double seconds = median_ms * 1e-3;
    const double bytes = double(rows) * width * sizeof(T) + double(rows) * heads * sizeof(float) +
                         double(rows) * heads * headdim * sizeof(float) + 2.0 * state_size * sizeof(float);
    const double flops = double(rows) * heads * (2.0 * chunk * (dstate + headdim) + 4.0 * dstate * headdim);
    st.counters["median_ms"] = median_ms;
    st.counters["tokens_per_s"] = double(rows) / seconds;
    st.counters["GB_per_s"] = bytes / seconds * 1e-9;
    st.counters["TFLOP_per_s"] = flops / seconds * 1e-12;
    st.counters["x_bytes_floor"] = seconds / (bytes / 3.0e12);
}

template <class T, class Policy>
void add(const std::string& name, ssd_shape sh) {
    benchmark::RegisterBenchmark(name.c_str(), [sh](benchmark::State& st) { bm_chunked_ssd<T, Policy>(st, sh); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(40);
}

}  // namespace

int main(int argc, char** argv) {
    namespace ssd = kernels::cuda::ssd;
    using bf16 = __nv_bfloat16;
    // PERF.md's table: tokens (B x L), G, dtype.
    add<bf16, ssd::default_policy>("ssd/16k_8x2048/g1/bf16", {8, 2048, 1});
    add<bf16, ssd::default_policy>("ssd/16k_8x2048/g8/bf16", {8, 2048, 8});
    add<bf16, ssd::default_policy>("ssd/64k_32x2048/g1/bf16", {32, 2048, 1});
    add<float, ssd::default_policy>("ssd/64k_32x2048/g1/fp32_3xtf32", {32, 2048, 1});
    add<float, ssd::tf32_policy>("ssd/64k_32x2048/g1/fp32_tf32", {32, 2048, 1});
    add<bf16, ssd::default_policy>("ssd/256k_128x2048/g1/bf16", {128, 2048, 1});
    add<bf16, ssd::default_policy>("ssd/256k_16x16384/g1/bf16", {16, 16384, 1});
    add<bf16, ssd::default_policy>("ssd/256k_16x16384/g8/bf16", {16, 16384, 8});
    add<float, ssd::default_policy>("ssd/256k_16x16384/g1/fp32_3xtf32", {16, 16384, 1});
    add<float, ssd::tf32_policy>("ssd/256k_16x16384/g1/fp32_tf32", {16, 16384, 1});
    // Not in PERF.md: the same work with 128-token chunks (the layer's chunk_size is the caller's choice).
    add<bf16, ssd::default_policy>("ssd/256k_16x16384/g1/bf16_chunk128", {16, 16384, 1, 128});

    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) benchmark::AddCustomContext("device", prop.name);
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
