#pragma once
// The backward of mamba2_projection on the GPU: the gated grouped RMSNorm, the time steps
// (softplus with the time-step limit, A = -exp(A_log)) and the causal depthwise conv1d + SiLU.
// The formulas are those of backend/cpu/projection_backward.hpp, computed in float32 for every
// storage type T. Each writes every element of its outputs; the weight gradients are sums over
// tokens in a fixed order (column_sums): the same bits on every run.
#include <cub/block/block_reduce.cuh>

#include <cmath>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cuda/column_sum.cuh"
#include "transmamba/backend/cuda/derivatives.cuh"
#include "transmamba/backend/cuda/traits.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/policy/projection.hpp"

namespace transmamba {

namespace kernels::cuda {

// One block per (row, group). Three passes over the group's channels: the sum of squares of the
// gated values, then xhat (kept for dw) with sum(e xhat), then dv and its share to y and z.
template <int Threads, class T, class A>
__global__ void gated_rmsnorm_backward_kernel(index_t seqlen, index_t d_inner, index_t group, index_t zstride,
                                              index_t transpoint, bool gate_attention, float eps,
                                              const A* __restrict__ y, const A* __restrict__ zxbcdt,
                                              const T* __restrict__ norm_weight, const A* __restrict__ dout,
                                              A* __restrict__ dy, A* __restrict__ dzxbcdt, A* __restrict__ xhat) {
    using reduce = cub::BlockReduce<float, Threads>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ float inv, mean_dot;
    const index_t row = blockIdx.x, g0 = blockIdx.y * group, g1 = g0 + group;
    const bool gated = (row % seqlen) >= transpoint || gate_attention;
    const A* yr = y + row * d_inner;
    const A* z = zxbcdt + row * zstride;  // z: the first d_inner columns of the in-projection
    const A* dr = dout + row * d_inner;
    A* xh = xhat + row * d_inner;
    float squares = 0;
    for (index_t c = g0 + threadIdx.x; c < g1; c += Threads) {
        const float v = gated ? float(yr[c]) * silu(float(z[c])) : float(yr[c]);
        squares += v * v;
    }
    const float total = reduce(temp).Sum(squares);
    if (threadIdx.x == 0) inv = rsqrtf(total / float(group) + eps);
    __syncthreads();
    const float r = inv;
    float dot = 0;
    for (index_t c = g0 + threadIdx.x; c < g1; c += Threads) {
        const float v = gated ? float(yr[c]) * silu(float(z[c])) : float(yr[c]);
        const float x = v * r;
        xh[c] = A(x);
        dot += float(dr[c]) * to_float(norm_weight[c]) * x;
    }
    const float dot_total = reduce(temp).Sum(dot);  // the barrier above separates the two uses of temp
    if (threadIdx.x == 0) mean_dot = dot_total / float(group);
    __syncthreads();
    const float md = mean_dot;
    A* dyr = dy + row * d_inner;
    A* dz = dzxbcdt + row * zstride;
    for (index_t c = g0 + threadIdx.x; c < g1; c += Threads) {  // xh[c] was written by this thread
        const float dv = r * (float(dr[c]) * to_float(norm_weight[c]) - float(xh[c]) * md);
        if (gated) {
            const float zc = float(z[c]);
            dyr[c] = A(dv * silu(zc));
            dz[c] = A(dv * float(yr[c]) * silu_derivative(zc));
        } else {
            dyr[c] = A(dv);
            dz[c] = A(0);
        }
    }
}

template <class T, class A>
struct norm_weight_sum {  // dw(c) = sum over rows of dout * xhat
    index_t width;
    const A* dout;
    const A* xhat;
    T* dweight;
    __device__ float value(index_t r, index_t c, int) const { return float(dout[r * width + c]) * float(xhat[r * width + c]); }
    __device__ void store(index_t c, int, float total) const { dweight[c] = from_float<T>(total); }
};

// draw = ddt sigmoid(raw + dt_bias) where the limit does not clamp, 0 where it does.
template <class A, class T>
__global__ void time_steps_backward_kernel(index_t rows, index_t heads, index_t stride, index_t offset,
                                           const A* __restrict__ zxbcdt, const T* __restrict__ dt_bias,
                                           const A* __restrict__ ddt, float lo, float hi, A* __restrict__ dzxbcdt) {
    const index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
    if (i >= rows * heads) return;
    const index_t r = i / heads, k = i % heads;
    const float pre = float(zxbcdt[r * stride + offset + k]) + to_float(dt_bias[k]);
    const float dt = softplus(pre);
    dzxbcdt[r * stride + offset + k] = A(dt < lo || dt > hi ? 0.0f : float(ddt[i]) * sigmoid(pre));
}

template <class T, class A>
struct time_step_sums {  // ddt_bias = sum over rows of draw; dA and dD summed over the batch in order
    index_t stride, offset, batch, heads;
    const A* dzxbcdt;
    const T* A_log;
    const A* dA;
    const A* dD;
    T* ddt_bias;
    T* dA_log;
    T* dD_param;
    __device__ float value(index_t r, index_t k, int) const { return float(dzxbcdt[r * stride + offset + k]); }
    __device__ void store(index_t k, int, float total) const {
        float a = 0, skip = 0;
        for (index_t b = 0; b < batch; ++b) {
            a += float(dA[b * heads + k]);
            skip += float(dD[b * heads + k]);
        }
        ddt_bias[k] = from_float<T>(total);
        dA_log[k] = from_float<T>(a * -expf(to_float(A_log[k])));  // dA/dA_log = A
        dD_param[k] = from_float<T>(skip);
    }
};

// dpre = dxbc silu'(pre), the conv's pre-activation recomputed; one thread per (row, channel).
template <class T, class A>
__global__ void conv_silu_dpre_kernel(index_t rows, index_t seqlen, index_t channels, index_t width, index_t in_stride,
                                      index_t in_offset, const A* __restrict__ zxbcdt, const T* __restrict__ weight,
                                      const T* __restrict__ bias, const A* __restrict__ dxbc, A* __restrict__ dpre) {
    const index_t c = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
    if (c >= channels) return;
    for (index_t row = blockIdx.y; row < rows; row += gridDim.y) {
        const index_t t = row % seqlen;
        float acc = to_float(bias[c]);
        for (index_t k = 0; k < width; ++k) {
            const index_t shift = width - 1 - k;
            if (shift <= t) acc += to_float(weight[c * width + k]) * float(zxbcdt[(row - shift) * in_stride + in_offset + c]);
        }
        dpre[row * channels + c] = A(float(dxbc[row * channels + c]) * silu_derivative(acc));
    }
}

// din(s, c) = sum_k w(c, k) dpre(s + d_conv - 1 - k, c) over tokens of the same sequence.
template <class T, class A>
__global__ void conv_input_backward_kernel(index_t rows, index_t seqlen, index_t channels, index_t width,
                                           index_t in_stride, index_t in_offset, const T* __restrict__ weight,
                                           const A* __restrict__ dpre, A* __restrict__ dzxbcdt) {
    const index_t c = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
    if (c >= channels) return;
    for (index_t row = blockIdx.y; row < rows; row += gridDim.y) {
        const index_t s = row % seqlen;
        float acc = 0;
        for (index_t k = 0; k < width; ++k) {
            const index_t shift = width - 1 - k;  // token s feeds tap k of token s + shift
            if (s + shift < seqlen) acc += to_float(weight[c * width + k]) * float(dpre[(row + shift) * channels + c]);
        }
        dzxbcdt[row * in_stride + in_offset + c] = A(acc);
    }
}

template <class T, class A>
struct conv_weight_sums {  // output k < width: dw(c, k); output width: dbias(c)
    index_t seqlen, channels, width, in_stride, in_offset;
    const A* zxbcdt;
    const A* dpre;
    T* dweight;
    T* dbias;
    __device__ float value(index_t r, index_t c, int k) const {
        const float g = float(dpre[r * channels + c]);
        if (k == width) return g;
        const index_t shift = width - 1 - k;
        return r % seqlen >= shift ? g * float(zxbcdt[(r - shift) * in_stride + in_offset + c]) : 0.0f;
    }
    __device__ void store(index_t c, int k, float total) const {
        if (k == width) dbias[c] = from_float<T>(total);
        else dweight[c * width + k] = from_float<T>(total);
    }
};

}  // namespace kernels::cuda

template <>
struct projection_backward_kernel<mamba2_projection, cuda> {
    // Writes dy (rows, d_inner), the z columns of dzxbcdt (rows, d_in_proj) and dnorm_weight;
    // `xhat` is scratch of rows * d_inner. The forward and the formulas: the CPU kernel's.
    template <class T, class A>
    static void gated_rmsnorm_backward(const cuda_context& ctx, const mixer_config& cfg, index_t batch, index_t seqlen,
                                       index_t transpoint, bool gate_attention, const A* y, const A* zxbcdt,
                                       const T* norm_weight, const A* dout, A* dy, A* dzxbcdt, T* dnorm_weight,
                                       A* xhat) {
        namespace k = kernels::cuda;
        const index_t rows = batch * seqlen, d = cfg.d_inner();
        if (rows > 0) {
            constexpr int threads = 256;
            const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(cfg.ngroups));
            k::gated_rmsnorm_backward_kernel<threads><<<grid, threads, 0, ctx.stream>>>(
                seqlen, d, d / cfg.ngroups, cfg.d_in_proj(), transpoint, gate_attention, static_cast<float>(cfg.norm_eps),
                y, zxbcdt, norm_weight, dout, dy, dzxbcdt, xhat);
            k::check_launch("gated_rmsnorm_backward_kernel");
        }
        k::column_sums(ctx, rows, d, 1, k::norm_weight_sum<T, A>{d, dout, xhat, dnorm_weight}, "norm_weight_sum");
    }

    // In: ddt (rows, nheads); dA, dD per sequence (batch, nheads). Writes the dt columns of
    // dzxbcdt, ddt_bias, dA_log and dD_param. Where the limit clamps, the gradient is 0.
    template <class T, class A>
    static void time_steps_backward(const cuda_context& ctx, const mixer_config& cfg, index_t batch, index_t rows,
                                    const A* zxbcdt, const T* dt_bias, const T* A_log, const A* ddt, const A* dA,
                                    const A* dD, A* dzxbcdt, T* ddt_bias, T* dA_log, T* dD_param) {
        namespace k = kernels::cuda;
        const index_t h = cfg.nheads(), stride = cfg.d_in_proj(), offset = cfg.d_in_proj() - h;
        const float lo = static_cast<float>(cfg.dt_min);
        const float hi = static_cast<float>(cfg.dt_max < 3.0e38 ? cfg.dt_max : 3.0e38);  // the CPU kernel's limit
        const auto n = static_cast<std::size_t>(rows * h);
        if (n > 0) {
            k::time_steps_backward_kernel<<<k::blocks_for(n, 256), 256, 0, ctx.stream>>>(rows, h, stride, offset, zxbcdt,
                                                                                       dt_bias, ddt, lo, hi, dzxbcdt);
            k::check_launch("time_steps_backward_kernel");
        }
        k::column_sums(ctx, rows, h, 1,
                       k::time_step_sums<T, A>{stride, offset, batch, h, dzxbcdt, A_log, dA, dD, ddt_bias, dA_log, dD_param},
                       "time_step_sums");
    }

    // In: dxbc (rows, conv_dim). Writes the xBC columns of dzxbcdt, dconv_weight (conv_dim, d_conv)
    // and dconv_bias; `dpre` is scratch of rows * conv_dim.
    template <class T, class A>
    static void conv_silu_backward(const cuda_context& ctx, const mixer_config& cfg, index_t batch, index_t seqlen,
                                   const A* zxbcdt, const T* conv_weight, const T* conv_bias, const A* dxbc,
                                   A* dzxbcdt, T* dconv_weight, T* dconv_bias, A* dpre) {
        namespace k = kernels::cuda;
        const index_t rows = batch * seqlen, channels = cfg.conv_dim(), width = cfg.d_conv;
        const index_t stride = cfg.d_in_proj(), offset = cfg.d_inner();
        if (rows > 0) {
            const dim3 grid(static_cast<unsigned>((channels + 127) / 128), static_cast<unsigned>(rows < 65535 ? rows : 65535));
            k::conv_silu_dpre_kernel<<<grid, 128, 0, ctx.stream>>>(rows, seqlen, channels, width, stride, offset, zxbcdt,
                                                                   conv_weight, conv_bias, dxbc, dpre);
            k::check_launch("conv_silu_dpre_kernel");
            k::conv_input_backward_kernel<<<grid, 128, 0, ctx.stream>>>(rows, seqlen, channels, width, stride, offset,
                                                                        conv_weight, dpre, dzxbcdt);
            k::check_launch("conv_input_backward_kernel");
        }
        k::column_sums(ctx, rows, channels, static_cast<int>(width + 1),
                       k::conv_weight_sums<T, A>{seqlen, channels, width, stride, offset, zxbcdt, dpre, dconv_weight,
                                                 dconv_bias},
                       "conv_weight_sums");
    }
};

}  // namespace transmamba
