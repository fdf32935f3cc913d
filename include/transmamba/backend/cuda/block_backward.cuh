#pragma once
// block_backward_kernel<cuda>: the backward of block_kernel<cuda>'s RMSNorm and SwiGLU, the
// formulas of backend/cpu/block_backward.hpp in float32 for every storage type.
//
//   RMSNorm, per row: y = x r w, r = 1 / sqrt(mean(x^2) + eps). With e = dy w:
//     dx += r (e - x r^2 mean(e x)),   dw = sum over rows of dy x r (column_sums: fixed order).
//   SwiGLU: a = silu(g) u:  dg = da u silu'(g),  du = da silu(g).
#include <cub/block/block_reduce.cuh>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cuda/column_sum.cuh"
#include "transmamba/backend/cuda/derivatives.cuh"
#include "transmamba/backend/cuda/traits.cuh"
#include "transmamba/core/numeric.hpp"

namespace transmamba {

namespace kernels::cuda {

// One block per row: the two row reductions, then dx added into.
template <int Threads, class T>
__global__ void rmsnorm_backward_kernel(index_t width, const T* __restrict__ x, const T* __restrict__ weight, float eps,
                                        const T* __restrict__ dy, T* __restrict__ dx, float* __restrict__ inv) {
    using reduce = cub::BlockReduce<float, Threads>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ float r_shared, k_shared;
    const index_t row = blockIdx.x;
    const T* xr = x + row * width;
    const T* dyr = dy + row * width;
    float squares = 0, ex = 0;
    for (index_t i = threadIdx.x; i < width; i += Threads) {
        const float v = to_float(xr[i]);
        squares += v * v;
        ex += to_float(dyr[i]) * to_float(weight[i]) * v;
    }
    const float sq_total = reduce(temp).Sum(squares);
    __syncthreads();  // temp is used again
    const float ex_total = reduce(temp).Sum(ex);
    if (threadIdx.x == 0) {
        const float ri = rsqrtf(sq_total / float(width) + eps);
        r_shared = ri;
        k_shared = ri * ri * ex_total / float(width);
        inv[row] = ri;
    }
    __syncthreads();
    const float ri = r_shared, k = k_shared;
    T* dxr = dx + row * width;
    for (index_t i = threadIdx.x; i < width; i += Threads)
        dxr[i] = from_float<T>(to_float(dxr[i]) + ri * (to_float(dyr[i]) * to_float(weight[i]) - to_float(xr[i]) * k));
}

template <class T>
struct rmsnorm_weight_sum {  // dw(c) = sum over rows of dy x r
    index_t width;
    const T* x;
    const T* dy;
    const float* inv;
    T* dweight;
    __device__ float value(index_t r, index_t c, int) const {
        return to_float(dy[r * width + c]) * to_float(x[r * width + c]) * inv[r];
    }
    __device__ void store(index_t c, int, float total) const { dweight[c] = from_float<T>(total); }
};

template <class T>
__global__ void swiglu_backward_kernel(index_t rows, index_t d_ff, const T* __restrict__ gate_up, const T* __restrict__ dact,
                                       T* __restrict__ dgate_up) {
    const std::size_t n = std::size_t(rows) * d_ff;
    for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
        const std::size_t r = i / d_ff, c = i % d_ff;
        const float g = to_float(gate_up[r * 2 * d_ff + c]), u = to_float(gate_up[r * 2 * d_ff + d_ff + c]);
        const float da = to_float(dact[i]);
        dgate_up[r * 2 * d_ff + c] = from_float<T>(da * u * silu_derivative(g));
        dgate_up[r * 2 * d_ff + d_ff + c] = from_float<T>(da * silu(g));
    }
}

}  // namespace kernels::cuda

template <>
struct block_backward_kernel<cuda> {
    // dx (rows, width) += the RMSNorm's input gradient for dy; dweight (width) overwritten; inv
    // (rows) is scratch.
    template <class T>
    static void rmsnorm_backward(const cuda_context& ctx, index_t rows, index_t width, const T* x, const T* weight,
                                 double eps, const T* dy, T* dx, T* dweight, float* inv) {
        namespace k = kernels::cuda;
        if (rows > 0) {
            k::rmsnorm_backward_kernel<256><<<static_cast<unsigned>(rows), 256, 0, ctx.stream>>>(width, x, weight, float(eps),
                                                                                               dy, dx, inv);
            k::check_launch("rmsnorm_backward_kernel");
        }
        k::column_sums(ctx, rows, width, 1, k::rmsnorm_weight_sum<T>{width, x, dy, inv, dweight}, "rmsnorm_weight_sum");
    }

    // gate_up (rows, 2 d_ff) = [g | u]; dact (rows, d_ff); dgate_up (rows, 2 d_ff) = [dg | du], overwritten.
    template <class T>
    static void swiglu_backward(const cuda_context& ctx, index_t rows, index_t d_ff, const T* gate_up, const T* dact,
                                T* dgate_up) {
        const auto n = static_cast<std::size_t>(rows * d_ff);
        if (n == 0) return;
        kernels::cuda::swiglu_backward_kernel<<<kernels::cuda::blocks_for(n, 256), 256, 0, ctx.stream>>>(rows, d_ff, gate_up,
                                                                                                        dact, dgate_up);
        kernels::cuda::check_launch("swiglu_backward_kernel");
    }
};

}  // namespace transmamba
