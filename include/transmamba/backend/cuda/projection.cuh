#pragma once
// mamba2_projection on the GPU: conv1d + SiLU, the time steps, the gated grouped RMSNorm (its norm
// after the gate, before it, or none: mixer_config::norm_placement).
#include <cub/block/block_reduce.cuh>

#include <cmath>

#include "transmamba/backend/cuda/traits.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/policy/projection.hpp"

namespace transmamba {

namespace kernels::cuda {

// One thread per (row, channel): channels are contiguous, so a warp reads each tap coalesced.
template <class T, class A>
__global__ void conv_silu_kernel(index_t rows, index_t seqlen, index_t channels, index_t width, index_t in_stride,
                                 index_t in_offset, const A* __restrict__ zxbcdt, const T* __restrict__ weight,
                                 const T* __restrict__ bias, T* __restrict__ xbc) {
    const index_t c = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
    if (c >= channels) return;
    for (index_t row = blockIdx.y; row < rows; row += gridDim.y) {
        const index_t t = row % seqlen;
        float acc = to_float(bias[c]);
        for (index_t k = 0; k < width; ++k) {
            const index_t shift = width - 1 - k;
            if (shift <= t) acc += to_float(weight[c * width + k]) * float(zxbcdt[(row - shift) * in_stride + in_offset + c]);
        }
        xbc[row * channels + c] = from_float<T>(silu(acc));
    }
}

template <class T, class A>
__global__ void time_steps_kernel(index_t rows, index_t heads, index_t stride, index_t offset, const A* __restrict__ zxbcdt,
                                  const T* __restrict__ dt_bias, const T* __restrict__ A_log, const T* __restrict__ D,
                                  float lo, float hi, A* __restrict__ dt, A* __restrict__ a_coef, A* __restrict__ d_coef) {
    const index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
    if (i < heads) {
        a_coef[i] = A(-expf(to_float(A_log[i])));
        d_coef[i] = A(to_float(D[i]));
    }
    if (i >= rows * heads) return;
    const index_t r = i / heads, k = i % heads;
    const float v = softplus(float(zxbcdt[r * stride + offset + k]) + to_float(dt_bias[k]));
    dt[i] = A(fminf(fmaxf(v, lo), hi));
}

// One block per (row, group): the sum of squares of the normalised values, then the scaled output.
// `placement` moves the norm before the gate or leaves it out (core/config.hpp, gated_norm).
template <int Threads, class T, class A>
__global__ void gated_rmsnorm_kernel(index_t seqlen, index_t d_inner, index_t group, index_t zstride, index_t transpoint,
                                     bool gate_attention, gated_norm placement, float eps, const A* __restrict__ y,
                                     const A* __restrict__ zxbcdt, const T* __restrict__ norm_weight, T* __restrict__ v) {
    using reduce = cub::BlockReduce<float, Threads>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ float inv;
    const index_t row = blockIdx.x, g0 = blockIdx.y * group;
    const bool gated = (row % seqlen) >= transpoint || gate_attention;
    const A* yr = y + row * d_inner;
    const A* z = zxbcdt + row * zstride;
    // after_gate normalises y * gate; before_gate normalises y and gates after; none only gates.
    const bool gate_first = placement != gated_norm::before_gate;
    const auto gate = [&](index_t c) { return gated ? silu(float(z[c])) : 1.0f; };
    if (placement != gated_norm::none) {
        float sumsq = 0;
        for (index_t c = g0 + threadIdx.x; c < g0 + group; c += Threads) {
            const float val = gate_first ? float(yr[c]) * gate(c) : float(yr[c]);
            sumsq += val * val;
        }
        const float total = reduce(temp).Sum(sumsq);
        if (threadIdx.x == 0) inv = rsqrtf(total / float(group) + eps);
        __syncthreads();
    }
    for (index_t c = g0 + threadIdx.x; c < g0 + group; c += Threads) {
        float val = float(yr[c]);
        if (placement == gated_norm::none) val *= gate(c);
        else if (gate_first) val = val * gate(c) * inv * to_float(norm_weight[c]);
        else val = val * inv * to_float(norm_weight[c]) * gate(c);
        v[row * d_inner + c] = from_float<T>(val);
    }
}

}  // namespace kernels::cuda

template <>
struct projection_kernel<mamba2_projection, cuda> {
    template <class T, class A>
    static void conv_silu(const cuda_context& ctx, const mixer_config& cfg, index_t batch, index_t seqlen, const A* zxbcdt,
                          const T* conv_weight, const T* conv_bias, T* xbc) {
        const index_t rows = batch * seqlen, channels = cfg.conv_dim();
        const dim3 grid(static_cast<unsigned>((channels + 127) / 128), static_cast<unsigned>(rows < 65535 ? rows : 65535));
        kernels::cuda::conv_silu_kernel<<<grid, 128, 0, ctx.stream>>>(rows, seqlen, channels, cfg.d_conv, cfg.d_in_proj(),
                                                                      cfg.d_inner(), zxbcdt, conv_weight, conv_bias, xbc);
        kernels::cuda::check_launch("conv_silu_kernel");
    }

    template <class T, class A>
    static void time_steps(const cuda_context& ctx, const mixer_config& cfg, index_t rows, const A* zxbcdt,
                           const T* dt_bias, const T* A_log, const T* D, A* dt, A* a_coef, A* d_coef) {
        const index_t h = cfg.nheads();
        const float lo = static_cast<float>(cfg.dt_min);
        const float hi = cfg.dt_max > 3.0e38 ? INFINITY : static_cast<float>(cfg.dt_max);
        const auto n = static_cast<std::size_t>(rows * h);
        kernels::cuda::time_steps_kernel<<<kernels::cuda::blocks_for(n, 256), 256, 0, ctx.stream>>>(
            rows, h, cfg.d_in_proj(), cfg.d_in_proj() - h, zxbcdt, dt_bias, A_log, D, lo, hi, dt, a_coef, d_coef);
        kernels::cuda::check_launch("time_steps_kernel");
    }

    template <class T, class A>
    static void gated_rmsnorm(const cuda_context& ctx, const mixer_config& cfg, index_t batch, index_t seqlen,
                              index_t transpoint, bool gate_attention, const A* y, const A* zxbcdt, const T* norm_weight,
                              T* v) {
        constexpr int threads = 256;
        const dim3 grid(static_cast<unsigned>(batch * seqlen), static_cast<unsigned>(cfg.ngroups));
        kernels::cuda::gated_rmsnorm_kernel<threads><<<grid, threads, 0, ctx.stream>>>(
            seqlen, cfg.d_inner(), cfg.d_inner() / cfg.ngroups, cfg.d_in_proj(), transpoint, gate_attention,
            cfg.norm_placement, static_cast<float>(cfg.norm_eps), y, zxbcdt, norm_weight, v);
        kernels::cuda::check_launch("gated_rmsnorm_kernel");
    }
};

}  // namespace transmamba
