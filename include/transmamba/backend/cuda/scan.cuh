#pragma once
// The SSM scan on the GPU, both policies, with the CPU kernels' interface (backend/cpu/scan.hpp).
// The state of head k of sequence b is the (headdim x d_state) row-major matrix state(b, k, :, :):
// read as the initial state, overwritten with the final one. y rows outside [t_begin, t_end) are
// not touched.
//   S_t = a_t S_{t-1} + dt_t x_t B_t^T,  a_t = exp(dt_t A),  y_t = S_t C_t + D x_t
#include <cstdint>

#include "transmamba/backend/cuda/ssd/dispatch.cuh"
#include "transmamba/backend/cuda/traits.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/scan.hpp"

namespace transmamba {

namespace kernels::cuda::ssd {

struct sequential_scan_policy {
    static constexpr int threads = 256;
};

// One block per (b, head), the state in shared memory, token by token: warp w owns state rows
// w, w + warps, ...; its lanes walk the d_state columns and reduce y_i = S_i . C over them.
template <class T, class Policy>
__global__ void __launch_bounds__(Policy::threads)
    sequential_scan_kernel(operands<T> op, float* y, index_t y_sb, index_t y_st, index_t y_sh, float* state) {
    constexpr int threads = Policy::threads, warps = threads / 32;
    extern __shared__ float seq_smem[];
    const int p = op.headdim, n = op.dstate;
    float* S = seq_smem;  // [p][n]
    float* xs = S + p * n;
    float* bs = xs + p;
    float* cs = bs + n;
    const int bh = blockIdx.x, b = bh / op.nheads, head = bh % op.nheads, grp = head / op.heads_per_group;
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    float* Sg = state + index_t(bh) * p * n;
    for (int e = threadIdx.x; e < p * n; e += threads) S[e] = Sg[e];
    const float A = op.A[head], D = op.D[head];
    for (index_t t = op.t_begin; t < op.t_end; ++t) {
        __syncthreads();  // the previous token's x, B, C are no longer read
        const T* x = op.x + b * op.x_sb + t * op.x_st + head * op.x_sh;
        const T* Bt = op.B + b * op.b_sb + t * op.b_st + grp * op.b_sg;
        const T* Ct = op.C + b * op.c_sb + t * op.c_st + grp * op.c_sg;
        for (int e = threadIdx.x; e < p; e += threads) xs[e] = to_float(x[e]);
        for (int e = threadIdx.x; e < n; e += threads) {
            bs[e] = to_float(Bt[e]);
            cs[e] = to_float(Ct[e]);
        }
        __syncthreads();
        const float dt = op.dt_at(b, t, head), a = expf(dt * A);
        float* yt = y + b * y_sb + t * y_st + head * y_sh;
        for (int i = warp; i < p; i += warps) {
            float* Si = S + i * n;
            const float dx = dt * xs[i];
            float acc = 0.0f;
            for (int j = lane; j < n; j += 32) {
                const float s = a * Si[j] + dx * bs[j];
                Si[j] = s;
                acc += s * cs[j];
            }
#pragma unroll
            for (int offset = 16; offset > 0; offset /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
            if (lane == 0) yt[i] = acc + D * xs[i];
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < p * n; e += threads) Sg[e] = S[e];
}

// y must be writable as float pairs (the chunked scan stores two columns at once).
inline void check_output(tensor_view<float, 4> y, const extents<4>& shape, const char* who) {
    expect_shape(y, "y", shape);
    require(y.stride(3) == 1, who, ": y must be contiguous along headdim");
    require(reinterpret_cast<std::uintptr_t>(y.data()) % 8 == 0 && y.stride(0) % 2 == 0 && y.stride(1) % 2 == 0 &&
                y.stride(2) % 2 == 0,
            who, " (CUDA): y must be 8-byte aligned with even strides");
}

}  // namespace kernels::cuda::ssd

template <>
struct scan_kernel<sequential_scan, cuda> {
    using policy = kernels::cuda::ssd::sequential_scan_policy;

    template <class T>
    static std::size_t scratch_bytes(const mixer_config&, index_t /*batch*/, index_t /*seqlen*/) {
        return 0;
    }

    template <class T>
    static void run(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, index_t t_begin,
                    index_t t_end, tensor_view<compute_t<T>, 4> y, tensor_view<compute_t<T>, 4> state, workspace_span) {
        namespace ssd = kernels::cuda::ssd;
        constexpr const char* who = "sequential_scan";
        const auto op = ssd::make_operands(cfg, in, t_begin, t_end, state, who);
        ssd::check_output(y, {in.batch(), in.seqlen(), in.nheads(), in.headdim()}, who);
        if (t_end <= t_begin) return;
        const auto smem = sizeof(float) * static_cast<std::size_t>(op.headdim * op.dstate + op.headdim + 2 * op.dstate);
        constexpr auto kernel = ssd::sequential_scan_kernel<T, policy>;
        kernels::cuda::allow_shared_memory<kernel>(smem, "cudaFuncSetAttribute (sequential_scan_kernel shared memory)");
        kernel<<<static_cast<unsigned>(op.batch * op.nheads), policy::threads, smem, ctx.stream>>>(
            op, y.data(), y.stride(0), y.stride(1), y.stride(2), state.data());
        kernels::cuda::check_launch("sequential_scan_kernel");
    }
};

template <>
struct scan_kernel<chunked_ssd_scan, cuda> {
    using policy = kernels::cuda::ssd::default_policy;

    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t batch, index_t seqlen) {
        return kernels::cuda::ssd::chunk_scratch_bytes<T, policy>(cfg, batch, seqlen, /*for_scan=*/true);
    }

    template <class T>
    static void run(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, index_t t_begin,
                    index_t t_end, tensor_view<compute_t<T>, 4> y, tensor_view<compute_t<T>, 4> state,
                    workspace_span span) {
        run_with<T, policy>(ctx, cfg, in, t_begin, t_end, y, state, span);
    }

    // The same with another tuning policy (e.g. ssd::tf32_policy); its scratch is
    // chunk_scratch_bytes<T, Policy>(cfg, batch, seqlen, true).
    template <class T, class Policy>
    static void run_with(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, index_t t_begin,
                         index_t t_end, tensor_view<float, 4> y, tensor_view<float, 4> state, workspace_span span) {
        namespace ssd = kernels::cuda::ssd;
        constexpr const char* who = "chunked_ssd_scan";
        const auto op = ssd::make_operands<T, Policy>(cfg, in, t_begin, t_end, state, who);
        ssd::check_output(y, {in.batch(), in.seqlen(), in.nheads(), in.headdim()}, who);
        if (t_end <= t_begin) return;
        workspace_arena arena(align_span(span));
        const auto scratch = ssd::take_chunk_scratch<T, Policy>(arena, cfg, in.batch(), in.seqlen(), /*for_scan=*/true);
        ssd::launch_chunk_state<T, Policy>(ctx, op, scratch);
        ssd::launch_state_passing<T, Policy>(ctx, scratch, state.data(), op.batch, op.nheads, op.nchunks,
                                             index_t(op.headdim) * op.dstate);
        ssd::launch_chunk_scan<T, Policy>(ctx, op, scratch, y);
    }
};

}  // namespace transmamba
