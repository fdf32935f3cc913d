// attention_kernel<paper_attention, cuda> at bf16: batch * L = 16384 tokens, 32 heads of headdim 64,
// d_state 128, ngroups 1, 8, 32. Each iteration times one call with CUDA events (manual time);
// three warm-up calls first; 5 repetitions, the median is the figure to read. The inputs (xBC:
// 75 MB, y: 134 MB) exceed the 50 MB L2. The peer, PyTorch SDPA on the same shapes, is
// bench/peers/attention_sdpa.py.
//
// Counters (causal half of the L x L score matrix, L^2 / 2 pairs):
//   TFLOP/s        the algorithm's flops: scores once per group, values per head,
//                  2*b*g*L^2/2*n + 2*b*h*L^2/2*p
//   exec_TFLOP/s   what the kernel executes: scores once per CTA column slice (a group wider
//                  than one CTA's value width computes its scores once per slice)
//   equiv_TFLOP/s  counted the PyTorch way, per head: 2*b*h*L^2/2*(n + p)
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>

#include <transmamba/backend/cuda/attention.cuh>

namespace {

using namespace transmamba;
using bf16 = __nv_bfloat16;

constexpr index_t tokens = 16384, heads = 32, headdim = 64, d_state = 128;

// Uniform [-1, 1) from a hash of the index: fills 75 MB in microseconds, no host round trip.
__global__ void fill_uniform(bf16* data, std::size_t n, std::uint32_t seed) {
    for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
        std::uint32_t v = static_cast<std::uint32_t>(i) * 2654435761u ^ seed;
        v ^= v >> 16;
        v *= 0x7feb352du;
        v ^= v >> 15;
        v *= 0x846ca68bu;
        v ^= v >> 16;
        data[i] = __float2bfloat16(static_cast<float>(v) * (2.0f / 4294967296.0f) - 1.0f);
    }
}

// The operands of one (L, g): rebuilt only when the shape changes.
struct problem {
    index_t batch, L, g;
    mixer_config cfg;
    device_buffer<bf16> xbc;
    device_buffer<float> D, y;
    device_buffer<std::byte> scratch;
    ssm_inputs<bf16> in;

    problem(index_t L_, index_t g_) : batch(tokens / L_), L(L_), g(g_) {
        cfg.expand = 1;
        cfg.d_model = heads * headdim;
        cfg.headdim = headdim;
        cfg.d_state = d_state;
        cfg.ngroups = g;
        cfg.validate();
        const index_t width = cfg.conv_dim();
        xbc.resize(static_cast<std::size_t>(batch * L * width));
        D.resize(heads);
        y.resize(static_cast<std::size_t>(batch * L * heads * headdim));
        scratch.resize(attention_kernel<paper_attention, transmamba::cuda>::scratch_bytes<bf16>(cfg, batch, L));
        fill_uniform<<<1024, 256>>>(xbc.data(), xbc.size(), 12345u + static_cast<std::uint32_t>(L * 64 + g));
        kernels::cuda::check_launch("fill_uniform");
        backend_traits<transmamba::cuda>::fill<float>({}, D.data(), D.size(), 1.0f);
        const bf16* base = xbc.data();
        in.x = tensor_view<const bf16, 4>(base, {batch, L, heads, headdim}, {L * width, width, headdim, 1});
        in.B = tensor_view<const bf16, 4>(base + heads * headdim, {batch, L, g, d_state}, {L * width, width, d_state, 1});
        in.C = tensor_view<const bf16, 4>(base + heads * headdim + g * d_state, {batch, L, g, d_state},
                                          {L * width, width, d_state, 1});
        in.D = D.data();
    }
    void run(const cuda_context& ctx) {
        attention_kernel<paper_attention, transmamba::cuda>::run<bf16>(ctx, cfg, in, L,
                                                           tensor_view<float, 4>(y.data(), {batch, L, heads, headdim}),
                                                           align_span({scratch.data(), scratch.size()}));
    }
};

problem& problem_for(index_t L, index_t g) {
    static std::unique_ptr<problem> cached;
    if (!cached || cached->L != L || cached->g != g) {
        cached.reset();
        cached = std::make_unique<problem>(L, g);
    }
    return *cached;
}

void BM_attention_bf16(benchmark::State& state) {
    const index_t L = state.range(0), g = state.range(1);
    auto& prob = problem_for(L, g);
    const cuda_context ctx{};
    for (int i = 0; i < 3; ++i) prob.run(ctx);
    backend_traits<transmamba::cuda>::synchronize(ctx);

    cudaEvent_t start, stop;
    kernels::cuda::check_cuda(cudaEventCreate(&start), "cudaEventCreate");
    kernels::cuda::check_cuda(cudaEventCreate(&stop), "cudaEventCreate");
    for (auto _ : state) {
        kernels::cuda::check_cuda(cudaEventRecord(start, ctx.stream), "cudaEventRecord");
        prob.run(ctx);
        kernels::cuda::check_cuda(cudaEventRecord(stop, ctx.stream), "cudaEventRecord");
        kernels::cuda::check_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
        float ms = 0;
        kernels::cuda::check_cuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        state.SetIterationTime(ms * 1e-3);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);

    const double b = double(prob.batch), pairs = double(L) * double(L) / 2.0;
    const index_t group_cols = heads / g * headdim;
    const int width = attention_kernel<paper_attention, transmamba::cuda>::value_width(group_cols, d_state);
    const double slices = double((group_cols + width - 1) / width);
    const double score_flops = 2.0 * b * double(g) * pairs * d_state;
    const double value_flops = 2.0 * b * double(heads) * pairs * headdim;
    using benchmark::Counter;
    state.counters["TFLOP/s"] = Counter((score_flops + value_flops) * 1e-12, Counter::kIsIterationInvariantRate);
    state.counters["exec_TFLOP/s"] =
        Counter((slices * score_flops + value_flops) * 1e-12, Counter::kIsIterationInvariantRate);
    state.counters["equiv_TFLOP/s"] =
        Counter(2.0 * b * double(heads) * pairs * double(d_state + headdim) * 1e-12, Counter::kIsIterationInvariantRate);
    state.counters["value_width"] = width;
    state.counters["batch"] = b;
}

BENCHMARK(BM_attention_bf16)
    ->ArgNames({"L", "g"})
    ->ArgsProduct({{1024, 2048, 4096, 8192, 16384}, {1, 8, 32}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.3)
    ->Repetitions(5)
    ->ReportAggregatesOnly(true);

}  // namespace

BENCHMARK_MAIN();
