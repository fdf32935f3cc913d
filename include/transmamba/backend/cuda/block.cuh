#pragma once
// block_kernel<cuda>: the row-wise parts of the residual blocks.
#include <cub/block/block_reduce.cuh>

#include "transmamba/backend/cuda/traits.cuh"
#include "transmamba/core/numeric.hpp"

namespace transmamba {

namespace kernels::cuda {

template <int Threads, class T>
__global__ void rmsnorm_kernel(index_t width, const T* in, const T* __restrict__ weight, float eps, T* out) {
    using reduce = cub::BlockReduce<float, Threads>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ float inv;
    const T* x = in + blockIdx.x * width;
    float sumsq = 0;
    for (index_t i = threadIdx.x; i < width; i += Threads) {
        const float v = to_float(x[i]);
        sumsq += v * v;
    }
    const float total = reduce(temp).Sum(sumsq);
    if (threadIdx.x == 0) inv = rsqrtf(total / float(width) + eps);
    __syncthreads();
    T* o = out + blockIdx.x * width;  // may alias x: each element is read before it is written
    for (index_t i = threadIdx.x; i < width; i += Threads) o[i] = from_float<T>(to_float(x[i]) * inv * to_float(weight[i]));
}

template <class T>
__global__ void add_kernel(std::size_t n, const T* __restrict__ delta, T* __restrict__ acc) {
    for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
        acc[i] = from_float<T>(to_float(acc[i]) + to_float(delta[i]));
}

template <class T>
__global__ void swiglu_kernel(index_t rows, index_t d_ff, const T* __restrict__ gate_up, T* __restrict__ out) {
    const std::size_t n = std::size_t(rows) * d_ff;
    for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
        const std::size_t r = i / d_ff, c = i % d_ff;
        const T* gu = gate_up + r * 2 * d_ff;
        out[i] = from_float<T>(silu(to_float(gu[c])) * to_float(gu[d_ff + c]));
    }
}

template <class T>
__global__ void relu_squared_kernel(std::size_t n, const T* __restrict__ in, T* __restrict__ out) {
    for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
        const float x = fmaxf(to_float(in[i]), 0.0f);
        out[i] = from_float<T>(x * x);
    }
}

template <class T>
__global__ void add_scaled_kernel(std::size_t n, const T* __restrict__ delta, float scale, T* __restrict__ acc) {
    for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
        acc[i] = from_float<T>(to_float(acc[i]) + scale * to_float(delta[i]));
}

template <class T>
__global__ void scale_kernel(std::size_t n, float factor, T* __restrict__ data) {
    for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
        data[i] = from_float<T>(to_float(data[i]) * factor);
}

}  // namespace kernels::cuda

template <>
struct block_kernel<cuda> {
    template <class T>
    static void rmsnorm(const cuda_context& ctx, index_t rows, index_t width, const T* in, const T* weight, double eps,
                        T* out) {
        if (rows == 0) return;
        kernels::cuda::rmsnorm_kernel<256><<<static_cast<unsigned>(rows), 256, 0, ctx.stream>>>(width, in, weight,
                                                                                               float(eps), out);
        kernels::cuda::check_launch("rmsnorm_kernel");
    }
    template <class T>
    static void add(const cuda_context& ctx, std::size_t n, const T* delta, T* acc) {
        if (n == 0) return;
        kernels::cuda::add_kernel<<<kernels::cuda::blocks_for(n, 256), 256, 0, ctx.stream>>>(n, delta, acc);
        kernels::cuda::check_launch("add_kernel");
    }
    template <class T>
    static void swiglu(const cuda_context& ctx, index_t rows, index_t d_ff, const T* gate_up, T* out) {
        const auto n = static_cast<std::size_t>(rows * d_ff);
        if (n == 0) return;
        kernels::cuda::swiglu_kernel<<<kernels::cuda::blocks_for(n, 256), 256, 0, ctx.stream>>>(rows, d_ff, gate_up, out);
        kernels::cuda::check_launch("swiglu_kernel");
    }
    template <class T>
    static void relu_squared(const cuda_context& ctx, std::size_t n, const T* in, T* out) {
        if (n == 0) return;
        kernels::cuda::relu_squared_kernel<<<kernels::cuda::blocks_for(n, 256), 256, 0, ctx.stream>>>(n, in, out);
        kernels::cuda::check_launch("relu_squared_kernel");
    }
    template <class T>
    static void add_scaled(const cuda_context& ctx, std::size_t n, const T* delta, double scale, T* acc) {
        if (n == 0) return;
        kernels::cuda::add_scaled_kernel<<<kernels::cuda::blocks_for(n, 256), 256, 0, ctx.stream>>>(n, delta, float(scale),
                                                                                                   acc);
        kernels::cuda::check_launch("add_scaled_kernel");
    }
    template <class T>
    static void scale(const cuda_context& ctx, std::size_t n, double factor, T* data) {
        if (n == 0) return;
        kernels::cuda::scale_kernel<<<kernels::cuda::blocks_for(n, 256), 256, 0, ctx.stream>>>(n, float(factor), data);
        kernels::cuda::check_launch("scale_kernel");
    }
};

}  // namespace transmamba
