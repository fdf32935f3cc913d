// The attention backward, attention_backward_kernel<paper_attention, cuda>::run (what the CUDA
// mixer's backward calls), causal over the whole sequence (P = L), with D, bf16 storage:
//
//   attention_backward/transmamba/bf16/b:16/L:4096/h:32/p:64/n:128/g:{1,8,32}
//   attention_forward_lse/transmamba/bf16/...  the forward that keeps the log-sum-exp (training),
//                                              beside attention/transmamba/... of bench/cuda/attention.cu
//                                              (the inference forward, nothing kept): same shapes
// The peer (PyTorch SDPA's backward, its fastest kernel) is bench/peers/attention_sdpa_backward.py.
//
// Timing (bench/support/cuda_bench.cuh): CUDA events around each call, the median. The backward
// reads the forward's y and lse (computed once before timing) and adds into zeroed gradients; the
// call is the whole backward (its prepare, dD and key-tile kernels).
//
// Counters:
//   TFLOP_per_s       the usual backward count: 2.5 x the forward's SPEC section 4 count,
//                     2.5 * b * P^2 * (g*n + h*p) (the forward: scores once per group, values per head)
//   exec_TFLOP_per_s  what the kernels execute: per column chunk of a group the scores, dP, dK and
//                     dQ products over its d_state (n) and dP, dV over its columns
//   flop_fraction     TFLOP_per_s of 676 TFLOP/s (the measured bf16 GEMM rate, PERF.md)
#include <cstdint>
#include <string>

#include <transmamba/backend/cuda/attention.cuh>
#include <transmamba/backend/cuda/attention_backward.cuh>

#include "../support/cuda_bench.cuh"

namespace {

using namespace transmamba;
using bf16 = __nv_bfloat16;
using forward = attention_kernel<paper_attention, transmamba::cuda>;
using backward = attention_backward_kernel<paper_attention, transmamba::cuda>;

struct shape {
    index_t batch, L, h, p, n, g;
};

struct problem {
    mixer_config cfg;
    index_t width;
    device_buffer<bf16> xbc;
    device_buffer<float> D, y, dy, lse, grads, dD;
    device_buffer<std::byte> scratch;
    ssm_inputs<bf16> in;

    explicit problem(const shape& s) {
        cfg.expand = 1;
        cfg.d_model = s.h * s.p;
        cfg.headdim = s.p;
        cfg.d_state = s.n;
        cfg.ngroups = s.g;
        cfg.validate();
        width = cfg.conv_dim();
        const auto rows = static_cast<std::size_t>(s.batch * s.L);
        xbc = device_buffer<bf16>(rows * static_cast<std::size_t>(width));
        D = device_buffer<float>(static_cast<std::size_t>(s.h));
        y = device_buffer<float>(rows * static_cast<std::size_t>(s.h * s.p));
        dy = device_buffer<float>(y.size());
        lse = device_buffer<float>(static_cast<std::size_t>(s.batch * s.g * s.L));
        grads = device_buffer<float>(rows * static_cast<std::size_t>(width));
        dD = device_buffer<float>(static_cast<std::size_t>(s.batch * s.h));
        scratch = device_buffer<std::byte>(std::max(forward::scratch_bytes<bf16>(cfg, s.batch, s.L),
                                                    backward::scratch_bytes<bf16>(cfg, s.batch, s.L)));
        bench::fill_uniform(xbc, 1 + static_cast<std::uint64_t>(s.L * 131 + s.g * 7), -1.0f, 1.0f);
        bench::fill_uniform(D, 2, 0.5f, 1.5f);
        bench::fill_uniform(dy, 3, -1.0f, 1.0f);
        bench::fill_uniform(grads, 4, 0.0f, 0.0f);
        bench::fill_uniform(dD, 5, 0.0f, 0.0f);
        in.x = tensor_view<const bf16, 4>(xbc.data(), {s.batch, s.L, s.h, s.p}, {s.L * width, width, s.p, 1});
        in.B = tensor_view<const bf16, 4>(xbc.data() + s.h * s.p, {s.batch, s.L, s.g, s.n}, {s.L * width, width, s.n, 1});
        in.C = tensor_view<const bf16, 4>(xbc.data() + s.h * s.p + s.g * s.n, {s.batch, s.L, s.g, s.n},
                                          {s.L * width, width, s.n, 1});
        in.D = D.data();
    }
    void run_forward(const cuda_context& ctx, const shape& s, bool keep_lse) {
        forward::run<bf16>(ctx, cfg, in, s.L, tensor_view<float, 4>(y.data(), {s.batch, s.L, s.h, s.p}),
                           {scratch.data(), scratch.size()},
                           keep_lse ? tensor_view<float, 3>(lse.data(), {s.batch, s.g, s.L}) : tensor_view<float, 3>{});
    }
    void run_backward(const cuda_context& ctx, const shape& s) {
        const ssm_grads<float> gr{
            tensor_view<float, 4>(grads.data(), {s.batch, s.L, s.h, s.p}, {s.L * width, width, s.p, 1}),
            tensor_view<float, 4>(grads.data() + s.h * s.p, {s.batch, s.L, s.g, s.n}, {s.L * width, width, s.n, 1}),
            tensor_view<float, 4>(grads.data() + s.h * s.p + s.g * s.n, {s.batch, s.L, s.g, s.n},
                                  {s.L * width, width, s.n, 1}),
            {},
            {},
            tensor_view<float, 2>(dD.data(), {s.batch, s.h}),
        };
        backward::run<bf16>(ctx, cfg, in, s.L, tensor_view<const float, 4>(y.data(), {s.batch, s.L, s.h, s.p}),
                            tensor_view<const float, 3>(lse.data(), {s.batch, s.g, s.L}),
                            tensor_view<const float, 4>(dy.data(), {s.batch, s.L, s.h, s.p}), gr,
                            {scratch.data(), scratch.size()});
    }
};

double forward_flops(const shape& s) {
    return double(s.batch) * double(s.L) * double(s.L) * double(s.g * s.n + s.h * s.p);
}

// What the key-tile kernel executes: per (query tile, key tile) pair below the diagonal and per
// column chunk, 3 products over n (S, dK, dQ) and 2 over the chunk's columns (dP, dV).
double executed_flops(const shape& s) {
    const index_t cols = s.h / s.g * s.p, vc = cuda_attention_backward_tuning<bf16>::value_cols;
    const double chunks = double((cols + vc - 1) / vc);
    const double pairs = double(s.batch) * double(s.g) * double(s.L) * double(s.L) / 2.0;
    return 2.0 * pairs * (chunks * 3.0 * double(s.n) + 2.0 * double(cols));
}

void bm_backward(benchmark::State& st, shape s) {
    problem pr(s);
    const cuda_context ctx{};
    pr.run_forward(ctx, s, true);
    const double est = executed_flops(s) / 150e12 * 1e3 + 0.05;
    const auto times = bench::time_iterations(st, ctx.stream, bench::warmup_for(est), [&] { pr.run_backward(ctx, s); });
    bench::work_counts w;
    w.tokens = double(s.batch * s.L);
    w.flops = 2.5 * forward_flops(s);
    w.bytes = double(s.batch * s.L) * (double(pr.width) * (sizeof(bf16) + 2 * sizeof(float)) +
                                       double(s.h * s.p) * 2 * sizeof(float));
    w.ceiling = bench::ceiling_TFLOP_per_s(bench::dtype_name<bf16>());
    bench::set_counters(st, times, w);
    const double sec = bench::median(times) * 1e-3;
    if (sec > 0) st.counters["exec_TFLOP_per_s"] = executed_flops(s) / sec * 1e-12;
}

void bm_forward_lse(benchmark::State& st, shape s) {
    problem pr(s);
    const cuda_context ctx{};
    const double est = forward_flops(s) / 150e12 * 1e3 + 0.02;
    const auto times = bench::time_iterations(st, ctx.stream, bench::warmup_for(est), [&] { pr.run_forward(ctx, s, true); });
    bench::work_counts w;
    w.tokens = double(s.batch * s.L);
    w.flops = forward_flops(s);
    w.bytes = double(s.batch * s.L) * (double(pr.width) * sizeof(bf16) + double(s.h * s.p) * sizeof(float));
    w.ceiling = bench::ceiling_TFLOP_per_s(bench::dtype_name<bf16>());
    bench::set_counters(st, times, w);
}

std::string name_of(const char* component, const shape& s) {
    return bench::bench_name(component, "transmamba", bench::dtype_name<bf16>(),
                             {{"b", s.batch}, {"L", s.L}, {"h", s.h}, {"p", s.p}, {"n", s.n}, {"g", s.g}});
}

}  // namespace

int main(int argc, char** argv) {
    for (index_t g : {1, 8, 32}) {
        const shape s{16, 4096, 32, 64, 128, g};
        bench::add(name_of("attention_backward", s), bench::iterations_for(executed_flops(s) / 150e12 * 1e3),
                   [s](benchmark::State& st) { bm_backward(st, s); });
        bench::add(name_of("attention_forward_lse", s), bench::iterations_for(forward_flops(s) / 150e12 * 1e3),
                   [s](benchmark::State& st) { bm_forward_lse(st, s); });
    }
    return transmamba::bench::run_main(argc, argv);
}
