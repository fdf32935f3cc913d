#pragma once
// mamba2_projection on the CPU: conv1d + SiLU, the time steps, the gated grouped RMSNorm. The in-
// and out-projections are plain GEMMs (backend_traits<cpu>::gemm_nt).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/policy/projection.hpp"

namespace transmamba {

template <>
struct projection_kernel<mamba2_projection, cpu> {
    // xBC (rows, conv_dim) = silu(causal depthwise conv over time of the xBC slice of zxbcdt).
    // zxbcdt: (batch, L, d_in_proj); conv_weight: (conv_dim, d_conv); out-of-sequence inputs are 0.
    template <class T, class A>
    static void conv_silu(const cpu_context&, const mixer_config& cfg, index_t batch, index_t seqlen, const A* zxbcdt,
                          const T* conv_weight, const T* conv_bias, T* xbc) {
        static_assert(std::is_same_v<T, A>, "the CPU backend computes in its storage type");
        const index_t width = cfg.d_conv, channels = cfg.conv_dim(), in_stride = cfg.d_in_proj();
        const index_t in_offset = cfg.d_inner();  // xBC follows z in the in-projection's output
        parallel_for(batch * seqlen, [&](index_t row, int) {
            const index_t t = row % seqlen;
            A* out = xbc + row * channels;
            for (index_t c = 0; c < channels; ++c) out[c] = static_cast<A>(conv_bias[c]);
            for (index_t k = 0; k < width; ++k) {
                const index_t shift = width - 1 - k;  // tap k reads token t - shift
                if (shift > t) continue;
                const A* in = zxbcdt + (row - shift) * in_stride + in_offset;
                for (index_t c = 0; c < channels; ++c) out[c] += static_cast<A>(conv_weight[c * width + k]) * in[c];
            }
            for (index_t c = 0; c < channels; ++c) out[c] = silu(out[c]);
        });
    }

    // dt (rows, nheads) = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max); per head, in the
    // compute type: a_coef = A = -exp(A_log) and d_coef = D.
    template <class T, class A>
    static void time_steps(const cpu_context&, const mixer_config& cfg, index_t rows, const A* zxbcdt,
                           const T* dt_bias, const T* A_log, const T* D, A* dt, A* a_coef, A* d_coef) {
        const index_t h = cfg.nheads(), stride = cfg.d_in_proj(), offset = cfg.d_in_proj() - h;
        const A lo = static_cast<A>(cfg.dt_min), hi = static_cast<A>(std::min<double>(cfg.dt_max, 3.0e38));
        for (index_t k = 0; k < h; ++k) {
            a_coef[k] = -std::exp(static_cast<A>(A_log[k]));
            d_coef[k] = static_cast<A>(D[k]);
        }
        parallel_for(rows, [&](index_t r, int) {
            const A* raw = zxbcdt + r * stride + offset;
            for (index_t k = 0; k < h; ++k)
                dt[r * h + k] = std::clamp(softplus(raw[k] + static_cast<A>(dt_bias[k])), lo, hi);
        });
    }

    // v (rows, d_inner) = rmsnorm_g(y * gate) * norm_weight, gate = silu(z) on SSM tokens (t >= P)
    // and on attention tokens only when gate_attention. Each of the g groups of d_inner/g channels
    // is normalised on its own (mamba_ssm's grouped RMSNorm).
    template <class T, class A>
    static void gated_rmsnorm(const cpu_context&, const mixer_config& cfg, index_t batch, index_t seqlen,
                              index_t transpoint, bool gate_attention, const A* y, const A* zxbcdt,
                              const T* norm_weight, T* v) {
        const index_t d = cfg.d_inner(), group = d / cfg.ngroups, zstride = cfg.d_in_proj();
        const A eps = static_cast<A>(cfg.norm_eps);
        parallel_for(batch * seqlen, [&](index_t row, int) {
            const index_t t = row % seqlen;
            const bool gated = t >= transpoint || gate_attention;
            const A* yr = y + row * d;
            const A* z = zxbcdt + row * zstride;  // z is the first d_inner outputs of in_proj
            T* out = v + row * d;
            for (index_t g0 = 0; g0 < d; g0 += group) {
                A sumsq = 0;
                for (index_t c = g0; c < g0 + group; ++c) {
                    const A val = gated ? yr[c] * silu(z[c]) : yr[c];
                    sumsq += val * val;
                }
                const A inv = A(1) / std::sqrt(sumsq / static_cast<A>(group) + eps);
                for (index_t c = g0; c < g0 + group; ++c) {
                    const A val = gated ? yr[c] * silu(z[c]) : yr[c];
                    out[c] = static_cast<T>(val * inv * static_cast<A>(norm_weight[c]));
                }
            }
        });
    }
};

}  // namespace transmamba
