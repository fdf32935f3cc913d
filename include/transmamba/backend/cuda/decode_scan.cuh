#pragma once
// Decoding on the GPU, SSM side: one token's state update for a batch of sequences (SPEC.md
// section 2),  S <- exp(dt A) S + dt x B^T,  y = S C + D x.  Every state element is read and
// written once and nothing else is large, so the step is bound by the state's bytes (and, at batch
// 1, by the launch): one warp walks one state row with 16-byte accesses and reduces y_p with a
// cub::WarpReduce; B and C of the row's group are read by every row (L1 hits).
#include <cub/warp/warp_reduce.cuh>

#include <cstdint>

#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/backend/cuda/context.cuh"
#include "transmamba/backend/cuda/types.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

namespace kernels::cuda::decode_scan {

struct tuning {
    static constexpr int threads = 128;      // 4 warps
    static constexpr int rows_per_warp = 4;  // state rows (headdim channels) per warp
    static constexpr int rows_per_block = rows_per_warp * threads / 32;
};

template <class T>
struct args {
    const T* x;
    index_t x_sb, x_sh;
    const T* B;
    index_t b_sb, b_sg;
    const T* C;
    index_t c_sb, c_sg;
    const float* dt;
    index_t dt_sb, dt_sh;
    const float* A;
    const float* D;
    float* state;  // (batch, nheads, headdim, d_state), contiguous
    float* y;
    index_t y_sb, y_sh;
    int nheads, heads_per_group, headdim, dstate, row_blocks;
};

// Four consecutive storage elements as floats (8 bytes for 16-bit storage, 16 for float).
template <class T>
__device__ __forceinline__ float4 load4(const T* p) {
    if constexpr (std::is_same_v<T, float>) {
        return *reinterpret_cast<const float4*>(p);
    } else {
        return make_float4(to_float(p[0]), to_float(p[1]), to_float(p[2]), to_float(p[3]));
    }
}

// One block per (sequence, head, rows_per_block headdim rows).
template <class T>
__global__ void __launch_bounds__(tuning::threads) state_update_kernel(const args<T> a) {
    using reduce = cub::WarpReduce<float>;
    __shared__ typename reduce::TempStorage temp[tuning::threads / 32];
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    const int bh = static_cast<int>(blockIdx.x) / a.row_blocks, rb = static_cast<int>(blockIdx.x) % a.row_blocks;
    const int b = bh / a.nheads, head = bh % a.nheads, grp = head / a.heads_per_group;
    const int n = a.dstate;
    const float dt = a.dt[b * a.dt_sb + head * a.dt_sh];
    const float decay = expf(dt * a.A[head]), Dh = a.D[head];
    const T* Bg = a.B + b * a.b_sb + grp * a.b_sg;
    const T* Cg = a.C + b * a.c_sb + grp * a.c_sg;
    const T* xh = a.x + b * a.x_sb + head * a.x_sh;
    float* y = a.y + b * a.y_sb + head * a.y_sh;
    float* state = a.state + (index_t(b) * a.nheads + head) * index_t(a.headdim) * n;

    const int r0 = rb * tuning::rows_per_block + warp * tuning::rows_per_warp;
    for (int r = r0; r < r0 + tuning::rows_per_warp && r < a.headdim; ++r) {
        const float xr = to_float(xh[r]), coef = dt * xr;
        float* row = state + index_t(r) * n;
        float acc = 0.0f;
        for (int k = 4 * lane; k < n; k += 128) {
            float4 s = *reinterpret_cast<const float4*>(row + k);
            const float4 bk = load4(Bg + k), ck = load4(Cg + k);
            s.x = fmaf(s.x, decay, coef * bk.x);
            s.y = fmaf(s.y, decay, coef * bk.y);
            s.z = fmaf(s.z, decay, coef * bk.z);
            s.w = fmaf(s.w, decay, coef * bk.w);
            *reinterpret_cast<float4*>(row + k) = s;
            acc += s.x * ck.x + s.y * ck.y + s.z * ck.z + s.w * ck.w;
        }
        acc = reduce(temp[warp]).Sum(acc);
        if (lane == 0) y[r] = fmaf(Dh, xr, acc);
    }
}

}  // namespace kernels::cuda::decode_scan

template <>
struct decode_scan_kernel<cuda> {
    // One token (seqlen 1) of `batch` sequences: S (batch, h, p, n) advances by it in place and
    // y (batch, 1, h, p) receives its output.
    template <class T>
    static void run(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, tensor_view<float, 4> y,
                    tensor_view<float, 4> state) {
        static_assert(cuda_storage_type<T>, "the CUDA decoding step takes float, __nv_bfloat16 or __half storage");
        namespace k = kernels::cuda::decode_scan;
        const index_t batch = in.batch(), h = in.nheads(), p = in.headdim(), n = in.d_state(), g = in.ngroups();
        expect_decode_step_views(cfg, in, y, state);
        require(n % 4 == 0, "decoding step (CUDA): d_state = ", n, " must be a multiple of 4");
        const bool aligned = reinterpret_cast<std::uintptr_t>(state.data()) % 16 == 0 &&
                             (!std::is_same_v<T, float> ||
                              (reinterpret_cast<std::uintptr_t>(in.B.data()) % 16 == 0 &&
                               reinterpret_cast<std::uintptr_t>(in.C.data()) % 16 == 0 && in.B.stride(0) % 4 == 0 &&
                               in.B.stride(2) % 4 == 0 && in.C.stride(0) % 4 == 0 && in.C.stride(2) % 4 == 0));
        require(aligned, "decoding step (CUDA): the state (and float B, C rows) must be 16-byte aligned");
        if (batch == 0) return;

        k::args<T> a{};
        a.x = in.x.data();
        a.x_sb = in.x.stride(0);
        a.x_sh = in.x.stride(2);
        a.B = in.B.data();
        a.b_sb = in.B.stride(0);
        a.b_sg = in.B.stride(2);
        a.C = in.C.data();
        a.c_sb = in.C.stride(0);
        a.c_sg = in.C.stride(2);
        a.dt = in.dt.data();
        a.dt_sb = in.dt.stride(0);
        a.dt_sh = in.dt.stride(2);
        a.A = in.A;
        a.D = in.D;
        a.state = state.data();
        a.y = y.data();
        a.y_sb = y.stride(0);
        a.y_sh = y.stride(2);
        a.nheads = static_cast<int>(h);
        a.heads_per_group = static_cast<int>(h / g);
        a.headdim = static_cast<int>(p);
        a.dstate = static_cast<int>(n);
        a.row_blocks = static_cast<int>((p + k::tuning::rows_per_block - 1) / k::tuning::rows_per_block);
        const auto blocks = static_cast<std::size_t>(batch * h) * a.row_blocks;
        require(blocks < (std::size_t(1) << 31), "decoding step: too many sequences for one launch");
        k::state_update_kernel<T><<<static_cast<unsigned>(blocks), k::tuning::threads, 0, ctx.stream>>>(a);
        kernels::cuda::check_launch("decode_scan state_update_kernel");
    }
};

}  // namespace transmamba
