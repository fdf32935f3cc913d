// The SSM scan's backward, scan_backward_kernel<chunked_ssd_scan, cuda>::run (backend/cuda/scan_backward.cuh),
// bf16 storage (float32 arithmetic), chunk 256, over the whole sequence from a given dL/dS_final,
// x/B/C as views into one xBC row per token (the mixer's layout):
//
//   scan_backward/transmamba/bf16/b:16/L:4096/h:32/p:64/n:128/g:{1,8}
//
// The peer, mamba_ssm's Triton mamba_chunk_scan_combined backward on the same shapes, is
// bench/peers/ssd_backward_triton.py.
//
// Timing (bench/support/cuda_bench.cuh): CUDA events around each eager call, warm-up, the median;
// dL/dS_final is restored and the gradients zeroed before every call, outside the timed window.
// Counters:
//   TFLOP_per_s     a nominal count: twice the forward's (SPEC section 4), b*h*L*2*(2*chunk*(n+p) + 4*n*p),
//                   the convention of a backward pass; flop_fraction of 676 TFLOP/s (bf16)
//   GB_per_s        bytes = x, B, C (bf16) and dt read, dy (float) read, dx, dB, dC, ddt (float) written,
//                   the saved block states read; no scratch traffic
//   x_bytes_floor   median / (bytes / 3.0 TB/s)
// Floors at b16 L4096 h32 p64 n128 g1: 5.5e11 nominal flops / 676 TFLOP/s = 0.81 ms;
// ~1.4 GB / 3.0 TB/s = 0.47 ms. The walk of today (a sequential pass over the tokens of each
// (sequence, head)) is far from both: the chunked tensor-core backward is to come (docs/training.md).
#include <cuda_bf16.h>

#include <cstdint>
#include <string>
#include <vector>

#include <transmamba/backend/cuda/scan_backward.cuh>

#include "../support/cuda_bench.cuh"

namespace {

using namespace transmamba;
using bf16 = __nv_bfloat16;
using kernel = scan_backward_kernel<chunked_ssd_scan, transmamba::cuda>;
using bench::check_cuda;

struct shape {
    index_t b, L, h, p, n, g;
    index_t chunk = 256;
};

double nominal_flops(const shape& s) {
    return 2.0 * double(s.b * s.L) * double(s.h) *
           (2.0 * double(s.chunk) * double(s.n + s.p) + 4.0 * double(s.n * s.p));
}

template <class T>
void bm_scan_backward(benchmark::State& st, shape s) {
    const index_t batch = s.b, L = s.L, rows = batch * L, h = s.h, p = s.p, n = s.n, g = s.g;
    mixer_config cfg;
    cfg.expand = 1;
    cfg.d_model = h * p;
    cfg.headdim = p;
    cfg.d_state = n;
    cfg.ngroups = g;
    cfg.chunk_size = s.chunk;
    cfg.validate();
    const index_t width = cfg.conv_dim(), blocks = (L + s.chunk - 1) / s.chunk;
    const auto state_size = static_cast<std::size_t>(batch * h * p * n);

    device_buffer<T> xbc(static_cast<std::size_t>(rows * width));
    device_buffer<float> dt(static_cast<std::size_t>(rows * h)), A(static_cast<std::size_t>(h)),
        D(static_cast<std::size_t>(h)), dy(static_cast<std::size_t>(rows * h * p)),
        block_states(state_size * static_cast<std::size_t>(blocks)), G0(state_size), G(state_size),
        dxbc(static_cast<std::size_t>(rows * width)), ddt(static_cast<std::size_t>(rows * h)),
        dA(static_cast<std::size_t>(batch * h)), dD(static_cast<std::size_t>(batch * h));
    bench::fill_uniform(xbc, 1, -1.0f, 1.0f);
    bench::fill_uniform(dt, 2, 1e-3f, 0.1f);
    bench::fill_uniform(A, 3, -1.5f, -0.05f);
    bench::fill_uniform(D, 4, 0.5f, 1.5f);
    bench::fill_uniform(dy, 5, -1.0f, 1.0f);
    bench::fill_uniform(block_states, 6, -1.0f, 1.0f);
    bench::fill_uniform(G0, 7, -1.0f, 1.0f);
    device_buffer<std::byte> scratch(kernel::scratch_bytes<T>(cfg, batch, L));

    ssm_inputs<T> in;
    in.x = tensor_view<const T, 4>(xbc.data(), {batch, L, h, p}, {L * width, width, p, 1});
    in.B = tensor_view<const T, 4>(xbc.data() + h * p, {batch, L, g, n}, {L * width, width, n, 1});
    in.C = tensor_view<const T, 4>(xbc.data() + h * p + g * n, {batch, L, g, n}, {L * width, width, n, 1});
    in.dt = tensor_view<const float, 3>(dt.data(), {batch, L, h});
    in.A = A.data();
    in.D = D.data();
    const ssm_grads<float> grads{
        tensor_view<float, 4>(dxbc.data(), {batch, L, h, p}, {L * width, width, p, 1}),
        tensor_view<float, 4>(dxbc.data() + h * p, {batch, L, g, n}, {L * width, width, n, 1}),
        tensor_view<float, 4>(dxbc.data() + h * p + g * n, {batch, L, g, n}, {L * width, width, n, 1}),
        tensor_view<float, 3>(ddt.data(), {batch, L, h}),
        tensor_view<float, 2>(dA.data(), {batch, h}),
        tensor_view<float, 2>(dD.data(), {batch, h}),
    };
    const tensor_view<const float, 5> bs(block_states.data(), {batch, blocks, h, p, n});
    const tensor_view<const float, 4> dyv(dy.data(), {batch, L, h, p});
    const tensor_view<float, 4> Gv(G.data(), {batch, h, p, n});
    const cuda_context ctx{};
    const workspace_span span{scratch.data(), scratch.size()};
    const auto prepare = [&] {
        check_cuda(cudaMemcpyAsync(G.data(), G0.data(), state_size * sizeof(float), cudaMemcpyDeviceToDevice, ctx.stream),
                   "cudaMemcpyAsync (dL/dS_final)");
        for (auto* buf : {&dxbc, &ddt, &dA, &dD})
            check_cuda(cudaMemsetAsync(buf->data(), 0, buf->size() * sizeof(float), ctx.stream), "cudaMemsetAsync");
    };
    const auto times = bench::time_iterations(st, ctx.stream, 1, prepare,
                                              [&] { kernel::run<T>(ctx, cfg, in, 0, L, bs, dyv, Gv, grads, span); });

    bench::work_counts w;
    w.tokens = double(rows);
    w.flops = nominal_flops(s);
    w.bytes = double(rows) * double(width) * (sizeof(T) + sizeof(float)) + 2.0 * double(rows * h) * sizeof(float) +
              double(rows * h * p) * sizeof(float) + double(state_size) * double(blocks + 2) * sizeof(float);
    w.ceiling = bench::ceiling_TFLOP_per_s(bench::dtype_name<T>());
    bench::set_counters(st, times, w);
    const double sec = bench::median(times) * 1e-3;
    if (sec > 0) st.counters["x_bytes_floor"] = sec / (w.bytes / (bench::copy_GB_per_s * 1e9));
}

void add(const shape& s) {
    const auto name = bench::bench_name("scan_backward", "transmamba", bench::dtype_name<bf16>(),
                                        {{"b", s.b}, {"L", s.L}, {"h", s.h}, {"p", s.p}, {"n", s.n}, {"g", s.g}});
    // The walk is expected at tens of ms: a few timed calls.
    bench::add(name, 5, [s](benchmark::State& st) { bm_scan_backward<bf16>(st, s); });
}

}  // namespace

int main(int argc, char** argv) {
    for (index_t g : {1, 8}) add({16, 4096, 32, 64, 128, g});
    return transmamba::bench::run_main(argc, argv);
}
