#pragma once
// The backward of mamba2_projection on the CPU (docs/training.md): the gated grouped RMSNorm, the
// time steps (softplus with the time-step limit, A = -exp(A_log)), and the causal depthwise conv1d +
// SiLU. Each writes every element of its outputs (no accumulation), and each reduction over tokens
// (the weight gradients) runs in a fixed order, one task per channel: the same bits on every run.
// The in- and out-projections are GEMMs (backend_traits<cpu>::gemm_nn / gemm_tn).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/policy/projection.hpp"

namespace transmamba {

namespace kernels::cpu {
// sigmoid without overflow for either sign: d softplus(x) / dx.
template <class A>
A sigmoid(A x) {
    if (x >= A(0)) return A(1) / (A(1) + std::exp(-x));
    const A e = std::exp(x);
    return e / (A(1) + e);
}
// d silu(x) / dx = sigmoid(x) (1 + x (1 - sigmoid(x))).
template <class A>
A silu_derivative(A x) {
    const A s = sigmoid(x);
    return s * (A(1) + x * (A(1) - s));
}
}  // namespace kernels::cpu

template <>
struct projection_backward_kernel<mamba2_projection, cpu> {
    // Forward: v = y * gate, gate = silu(z) on gated rows (t >= P, or every row with gate_attention)
    // and 1 on the others; per group of G = d_inner/g channels, r = (mean(v^2) + eps)^(-1/2) and
    // out = v r w. With xhat = v r and e = dout * w:
    //   dv = r (e - xhat * sum_group(e xhat) / G),  dy = dv gate,  dz = dv y silu'(z) (0 if ungated),
    //   dw = sum over rows of dout * xhat.
    // Writes dy (rows, d_inner), the z columns of dzxbcdt (rows, d_in_proj) and dnorm_weight;
    // `xhat` is scratch of rows * d_inner.
    template <class T, class A>
    static void gated_rmsnorm_backward(const cpu_context&, const mixer_config& cfg, index_t batch, index_t seqlen,
                                       index_t transpoint, bool gate_attention, const A* y, const A* zxbcdt,
                                       const T* norm_weight, const A* dout, A* dy, A* dzxbcdt, T* dnorm_weight,
                                       A* xhat) {
        static_assert(std::is_same_v<T, A>, "the CPU backend computes in its storage type");
        const index_t d = cfg.d_inner(), group = d / cfg.ngroups, zstride = cfg.d_in_proj(), rows = batch * seqlen;
        const A eps = static_cast<A>(cfg.norm_eps);
        parallel_for(rows, 15 * d, [&](index_t row, int) {  // silu gate, squares, scaling
            const bool gated = row % seqlen >= transpoint || gate_attention;
            const A* yr = y + row * d;
            const A* z = zxbcdt + row * zstride;  // z: the first d_inner columns of the in-projection
            const A* dr = dout + row * d;
            A* xh = xhat + row * d;
            A* dyr = dy + row * d;
            A* dz = dzxbcdt + row * zstride;
            for (index_t c = 0; c < d; ++c) xh[c] = gated ? yr[c] * silu(z[c]) : yr[c];
            for (index_t g0 = 0; g0 < d; g0 += group) {
                A squares = 0;
                for (index_t c = g0; c < g0 + group; ++c) squares += xh[c] * xh[c];
                const A r = A(1) / std::sqrt(squares / static_cast<A>(group) + eps);
                A dot = 0;  // sum_group(e xhat)
                for (index_t c = g0; c < g0 + group; ++c) {
                    xh[c] *= r;
                    dot += dr[c] * static_cast<A>(norm_weight[c]) * xh[c];
                }
                const A mean_dot = dot / static_cast<A>(group);
                for (index_t c = g0; c < g0 + group; ++c) {
                    const A dv = r * (dr[c] * static_cast<A>(norm_weight[c]) - xh[c] * mean_dot);
                    if (gated) {
                        dyr[c] = dv * silu(z[c]);
                        dz[c] = dv * yr[c] * kernels::cpu::silu_derivative(z[c]);
                    } else {
                        dyr[c] = dv;
                        dz[c] = A(0);
                    }
                }
            }
        });
        parallel_for(d, 2 * rows, [&](index_t c, int) {
            A sum = 0;
            for (index_t row = 0; row < rows; ++row) sum += dout[row * d + c] * xhat[row * d + c];
            dnorm_weight[c] = static_cast<T>(sum);
        });
    }

    // Forward: dt = clamp(softplus(raw + dt_bias), dt_min, dt_max), A = -exp(A_log), D. Where the
    // limit clamps, dt does not depend on raw: the gradient there is 0.
    // In: ddt (rows, nheads); dA, dD per sequence (batch, nheads), summed here over the batch in order.
    // Writes the dt columns of dzxbcdt (rows, d_in_proj), ddt_bias, dA_log and dD_param (nheads each).
    template <class T, class A>
    static void time_steps_backward(const cpu_context&, const mixer_config& cfg, index_t batch, index_t rows,
                                    const A* zxbcdt, const T* dt_bias, const T* A_log, const A* ddt, const A* dA,
                                    const A* dD, A* dzxbcdt, T* ddt_bias, T* dA_log, T* dD_param) {
        const index_t h = cfg.nheads(), stride = cfg.d_in_proj(), offset = cfg.d_in_proj() - h;
        const A lo = static_cast<A>(cfg.dt_min), hi = static_cast<A>(std::min<double>(cfg.dt_max, 3.0e38));
        parallel_for(rows, 30 * h, [&](index_t r, int) {  // softplus and sigmoid per head
            const A* raw = zxbcdt + r * stride + offset;
            A* draw = dzxbcdt + r * stride + offset;
            for (index_t k = 0; k < h; ++k) {
                const A pre = raw[k] + static_cast<A>(dt_bias[k]);
                const A dt = softplus(pre);
                draw[k] = dt < lo || dt > hi ? A(0) : ddt[r * h + k] * kernels::cpu::sigmoid(pre);
            }
        });
        for (index_t k = 0; k < h; ++k) {
            A bias = 0, a = 0, skip = 0;
            for (index_t r = 0; r < rows; ++r) bias += dzxbcdt[r * stride + offset + k];
            for (index_t b = 0; b < batch; ++b) {
                a += dA[b * h + k];
                skip += dD[b * h + k];
            }
            ddt_bias[k] = static_cast<T>(bias);
            dA_log[k] = static_cast<T>(a * -std::exp(static_cast<A>(A_log[k])));  // dA/dA_log = A
            dD_param[k] = static_cast<T>(skip);
        }
    }

    // Forward: pre(t, c) = bias_c + sum_k w(c, k) in(t - (d_conv - 1) + k, c) (in = 0 before the
    // sequence), xbc = silu(pre). In: dxbc (rows, conv_dim). With dpre = dxbc silu'(pre):
    //   din(s, c) = sum_k w(c, k) dpre(s + d_conv - 1 - k, c) (tokens of the same sequence),
    //   dw(c, k) = sum_t dpre(t, c) in(t - (d_conv - 1) + k, c),  dbias_c = sum_t dpre(t, c).
    // Writes the xBC columns of dzxbcdt, dconv_weight (conv_dim, d_conv) and dconv_bias; `dpre` is
    // scratch of rows * conv_dim.
    template <class T, class A>
    static void conv_silu_backward(const cpu_context&, const mixer_config& cfg, index_t batch, index_t seqlen,
                                   const A* zxbcdt, const T* conv_weight, const T* conv_bias, const A* dxbc,
                                   A* dzxbcdt, T* dconv_weight, T* dconv_bias, A* dpre) {
        static_assert(std::is_same_v<T, A>, "the CPU backend computes in its storage type");
        const index_t width = cfg.d_conv, channels = cfg.conv_dim(), in_stride = cfg.d_in_proj();
        const index_t in_offset = cfg.d_inner(), rows = batch * seqlen;
        parallel_for(rows, channels * (width + 10), [&](index_t row, int) {  // the taps, then silu'
            const index_t t = row % seqlen;
            const A* last = zxbcdt + row * in_stride + in_offset;
            A* dp = dpre + row * channels;
            for (index_t c = 0; c < channels; ++c) dp[c] = static_cast<A>(conv_bias[c]);
            for (index_t k = 0; k < width; ++k) {
                const index_t shift = width - 1 - k;
                if (shift > t) continue;
                const A* in = last - shift * in_stride;
                for (index_t c = 0; c < channels; ++c) dp[c] += static_cast<A>(conv_weight[c * width + k]) * in[c];
            }
            const A* g = dxbc + row * channels;
            for (index_t c = 0; c < channels; ++c) dp[c] = g[c] * kernels::cpu::silu_derivative(dp[c]);
        });
        parallel_for(rows, channels * width, [&](index_t row, int) {
            const index_t s = row % seqlen;
            A* din = dzxbcdt + row * in_stride + in_offset;
            for (index_t c = 0; c < channels; ++c) din[c] = A(0);
            for (index_t k = 0; k < width; ++k) {
                const index_t shift = width - 1 - k;  // token s feeds tap k of token s + shift
                if (s + shift >= seqlen) continue;
                const A* dp = dpre + (row + shift) * channels;
                for (index_t c = 0; c < channels; ++c) din[c] += static_cast<A>(conv_weight[c * width + k]) * dp[c];
            }
        });
        parallel_for(channels, rows * (width + 1), [&](index_t c, int) {
            A bias = 0;
            for (index_t r = 0; r < rows; ++r) bias += dpre[r * channels + c];
            dconv_bias[c] = static_cast<T>(bias);
            for (index_t k = 0; k < width; ++k) {
                const index_t shift = width - 1 - k;
                A sum = 0;
                for (index_t b = 0; b < batch; ++b)
                    for (index_t t = shift; t < seqlen; ++t) {
                        const index_t row = b * seqlen + t;
                        sum += dpre[row * channels + c] * zxbcdt[(row - shift) * in_stride + in_offset + c];
                    }
                dconv_weight[c * width + k] = static_cast<T>(sum);
            }
        });
    }
};

}  // namespace transmamba
