#pragma once
// mamba2_projection on the CPU: conv1d + SiLU, the time steps, the gated grouped RMSNorm. The in-
// and out-projections are plain GEMMs (backend_traits<cpu>::gemm_nt).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include <Eigen/Core>

#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/core/sequence_layout.hpp"
#include "transmamba/policy/projection.hpp"

namespace transmamba {

namespace kernels::cpu {
// Vectorised by Eigen's packets, from the first element on whatever the address: the same input gives
// the same bits in any buffer (Eigen's own expressions peel scalar elements up to an aligned address,
// and its scalar and packet exp differ in the last bit).
template <class A>
struct silu_math {
    using P = typename Eigen::internal::packet_traits<A>::type;
    static constexpr index_t W = Eigen::internal::unpacket_traits<P>::size;
    static P silu(const P& v) {
        namespace ei = Eigen::internal;
        return ei::pdiv(v, ei::padd(ei::pset1<P>(A(1)), ei::pexp(ei::pnegate(v))));
    }
};

// out[i] = silu(in[i]) (in may be out), or with `gate_of`: out[i] = in[i] * silu(gate_of[i]).
template <class A>
void silu_into(const A* in, const A* gate_of, A* out, index_t n) {
    namespace ei = Eigen::internal;
    using M = silu_math<A>;
    index_t i = 0;
    for (; i + M::W <= n; i += M::W) {
        const auto v = ei::ploadu<typename M::P>(in + i);
        ei::pstoreu(out + i, gate_of ? ei::pmul(v, M::silu(ei::ploadu<typename M::P>(gate_of + i))) : M::silu(v));
    }
    for (; i < n; ++i) out[i] = gate_of ? in[i] * silu(gate_of[i]) : silu(in[i]);
}

// sum of v[i]^2, in an order that depends on n only.
template <class A>
A sum_of_squares(const A* v, index_t n) {
    namespace ei = Eigen::internal;
    using M = silu_math<A>;
    auto acc = ei::pset1<typename M::P>(A(0));
    index_t i = 0;
    for (; i + M::W <= n; i += M::W) {
        const auto x = ei::ploadu<typename M::P>(v + i);
        acc = ei::pmadd(x, x, acc);
    }
    A sum = ei::predux(acc);
    for (; i < n; ++i) sum += v[i] * v[i];
    return sum;
}
}  // namespace kernels::cpu

template <>
struct projection_kernel<mamba2_projection, cpu> {
    // xBC (rows, conv_dim) = silu(causal depthwise conv over time of the xBC slice of zxbcdt).
    // zxbcdt: (batch, L, d_in_proj); conv_weight: (conv_dim, d_conv); out-of-sequence inputs are 0.
    template <class T, class A>
    static void conv_silu(const cpu_context& ctx, const mixer_config& cfg, index_t batch, index_t seqlen,
                          const A* zxbcdt, const T* conv_weight, const T* conv_bias, T* xbc) {
        conv_silu(ctx, cfg, sequence_layout::dense(batch, seqlen), zxbcdt, conv_weight, conv_bias, xbc);
    }
    // The same over the flat rows of any sequence layout: each sequence's window starts at its first
    // row (a packed batch's previous sequence is out of sequence, hence 0).
    template <class T, class A>
    static void conv_silu(const cpu_context&, const mixer_config& cfg, const sequence_layout& seqs, const A* zxbcdt,
                          const T* conv_weight, const T* conv_bias, T* xbc) {
        static_assert(std::is_same_v<T, A>, "the CPU backend computes in its storage type");
        const index_t width = cfg.d_conv, channels = cfg.conv_dim(), in_stride = cfg.d_in_proj();
        const index_t in_offset = cfg.d_inner();  // xBC follows z in the in-projection's output
        parallel_for(seqs.rows(), channels * (width + 10), [&](index_t row, int) {  // the taps, then silu
            const index_t t = seqs.locate(row).position;
            A* out = xbc + row * channels;
            const A* last = zxbcdt + row * in_stride + in_offset;  // tap width - 1 reads token t
            if (width == 4 && t >= 3) {
                // Mamba2's width with every tap inside the sequence: one pass the compiler vectorises.
                const A *in0 = last - 3 * in_stride, *in1 = last - 2 * in_stride, *in2 = last - in_stride;
                for (index_t c = 0; c < channels; ++c) {
                    const T* wc = conv_weight + c * 4;
                    out[c] = static_cast<A>(conv_bias[c]) + static_cast<A>(wc[0]) * in0[c] + static_cast<A>(wc[1]) * in1[c] +
                             static_cast<A>(wc[2]) * in2[c] + static_cast<A>(wc[3]) * last[c];
                }
            } else {
                for (index_t c = 0; c < channels; ++c) out[c] = static_cast<A>(conv_bias[c]);
                for (index_t k = 0; k < width; ++k) {
                    const index_t shift = width - 1 - k;  // tap k reads token t - shift
                    if (shift > t) continue;
                    const A* in = last - shift * in_stride;
                    for (index_t c = 0; c < channels; ++c) out[c] += static_cast<A>(conv_weight[c * width + k]) * in[c];
                }
            }
            kernels::cpu::silu_into<A>(out, nullptr, out, channels);
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
        parallel_for(rows, 20 * h, [&](index_t r, int) {  // softplus: an exp and a log per head
            const A* raw = zxbcdt + r * stride + offset;
            for (index_t k = 0; k < h; ++k)
                dt[r * h + k] = std::clamp(softplus(raw[k] + static_cast<A>(dt_bias[k])), lo, hi);
        });
    }

    // v (rows, d_inner) = rmsnorm_g(y * gate) * norm_weight, gate = silu(z) on SSM tokens (t >= P)
    // and on attention tokens only when gate_attention. Each of the g groups of d_inner/g channels
    // is normalised on its own (mamba_ssm's grouped RMSNorm). cfg.norm_placement moves the norm
    // before the gate or leaves it out (core/config.hpp).
    template <class T, class A>
    static void gated_rmsnorm(const cpu_context& ctx, const mixer_config& cfg, index_t batch, index_t seqlen,
                              index_t transpoint, bool gate_attention, const A* y, const A* zxbcdt,
                              const T* norm_weight, T* v) {
        gated_rmsnorm(ctx, cfg, sequence_layout::dense(batch, seqlen).split_at(transpoint), gate_attention, y, zxbcdt,
                      norm_weight, v);
    }
    // The same over the flat rows of a sequence layout, each sequence at its own TransPoint.
    template <class T, class A>
    static void gated_rmsnorm(const cpu_context&, const mixer_config& cfg, const sequence_layout& seqs,
                              bool gate_attention, const A* y, const A* zxbcdt, const T* norm_weight, T* v) {
        static_assert(std::is_same_v<T, A>, "the CPU backend computes in its storage type");
        const index_t d = cfg.d_inner(), group = d / cfg.ngroups, zstride = cfg.d_in_proj();
        const A eps = static_cast<A>(cfg.norm_eps);
        const gated_norm placement = cfg.norm_placement;
        parallel_for(seqs.rows(), 15 * d, [&](index_t row, int) {  // silu gate, squares, scaling
            const auto at = seqs.locate(row);
            const bool gated = at.position >= seqs.prefix(at.sequence) || gate_attention;
            const A* yr = y + row * d;
            const A* z = zxbcdt + row * zstride;  // z is the first d_inner outputs of in_proj
            T* out = v + row * d;
            const auto normalise = [&] {
                for (index_t g0 = 0; g0 < d; g0 += group) {
                    const A inv = A(1) / std::sqrt(kernels::cpu::sum_of_squares(out + g0, group) / static_cast<A>(group) + eps);
                    for (index_t c = g0; c < g0 + group; ++c) out[c] = out[c] * inv * static_cast<A>(norm_weight[c]);
                }
            };
            if (placement == gated_norm::before_gate) {
                std::copy_n(yr, d, out);
                normalise();
                if (gated) kernels::cpu::silu_into<A>(out, z, out, d);
                return;
            }
            if (gated) kernels::cpu::silu_into<A>(yr, z, out, d);  // y * gate, normalised in place below
            else std::copy_n(yr, d, out);
            if (placement == gated_norm::after_gate) normalise();
        });
    }
};

}  // namespace transmamba
