#pragma once
// The backward of causal attention with Q=C, K=B, V=x over the prefix t < P, on the CPU
// (FlashAttention-2's algorithm, docs/training.md). The forward kept one log-sum-exp per (group,
// query) (backend/cpu/attention.hpp); the probabilities are recomputed tile by tile from it, so no
// P x P matrix is ever held. Heads of a group share the probabilities, so their gradients meet in
// dP and in dC, dB:
//   P_ij = exp(s_ij - lse_i), s_ij = scale C_i . B_j (j <= i)
//   dP_ij = sum_heads dy_i . x_j,  Delta_i = sum_heads dy_i . o_i  (o = y - D x: the attention part)
//   dS_ij = P_ij (dP_ij - Delta_i)
//   dx_j += sum_i P_ij dy_i (+ D dy_j),  dC_i += scale sum_j dS_ij B_j,  dB_j += scale sum_i dS_ij C_i
// One task per (sequence, group), which owns those rows of dx, dB, dC: no atomics, a fixed order.
// RoPE variants rotate C and B first and turn the gradients back by the inverse rotation.
#include <algorithm>
#include <cmath>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cpu/attention.hpp"
#include "transmamba/backend/cpu/eigen.hpp"
#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/core/rotary.hpp"
#include "transmamba/core/ssm_grads.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/attention.hpp"

namespace transmamba {

template <attention_policy Variant>
struct attention_backward_kernel<Variant, cpu> {
    using tuning = cpu_attention_tuning;  // the forward's tile serves queries and keys alike

    template <class T>
    struct scratch {
        T* probs;   // per thread: (tile, tile), P then dS
        T* dprobs;  // per thread: (tile, tile)
        T* delta;   // per thread: (prefix)
        T* dq;      // per thread: (prefix, d_state), the gradient of the (rotated) queries
        T* dk;      // per thread: (prefix, d_state)
        T* q;       // per thread, RoPE only: (prefix, d_state) rotated C
        T* k;       // per thread, RoPE only: rotated B
    };
    template <class T>
    static scratch<T> layout(workspace_arena& arena, const mixer_config& cfg, index_t prefix) {
        const auto threads = static_cast<std::size_t>(max_threads());
        const auto tile = static_cast<std::size_t>(tuning::query_tile), rows = static_cast<std::size_t>(prefix);
        const auto qk = rows * static_cast<std::size_t>(cfg.d_state);
        scratch<T> s{};
        s.probs = arena.take<T>(threads * tile * tile);
        s.dprobs = arena.take<T>(threads * tile * tile);
        s.delta = arena.take<T>(threads * rows);
        s.dq = arena.take<T>(threads * qk);
        s.dk = arena.take<T>(threads * qk);
        if constexpr (Variant::position::rotary) {
            s.q = arena.take<T>(threads * qk);
            s.k = arena.take<T>(threads * qk);
        }
        return s;
    }
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t /*batch*/, index_t prefix) {
        workspace_arena measure;
        layout<T>(measure, cfg, prefix);
        return measure.used();
    }

    // y: the forward's output (batch, L, h, p) on rows t < prefix; lse (batch, g, prefix); dy the
    // gradient of y. Adds into grads.x, .B, .C on rows t < prefix and into grads.D.
    template <class T>
    static void run(const cpu_context&, const mixer_config& cfg, const ssm_inputs<T>& in, index_t prefix,
                    tensor_view<const T, 4> y, tensor_view<const T, 3> lse, tensor_view<const T, 4> dy,
                    const ssm_grads<T>& grads, workspace_span span) {
        using namespace kernels::cpu;
        if (prefix <= 0) return;
        const index_t batch = in.batch(), g = in.ngroups(), n = in.d_state(), p = in.headdim(), hg = in.heads_per_group();
        expect_shape(lse, "lse", {batch, g, prefix});
        require(in.x.stride(3) == 1 && in.x.stride(2) == p && grads.x.stride(3) == 1 && grads.x.stride(2) == p &&
                    dy.stride(3) == 1 && dy.stride(2) == p && y.stride(3) == 1 && y.stride(2) == p,
                "attention backward: the heads of x, dx, y and dy must be adjacent channels of one row");
        require(in.B.stride(3) == 1 && in.C.stride(3) == 1 && grads.B.stride(3) == 1 && grads.C.stride(3) == 1,
                "attention backward: B, C and their gradients must be contiguous along d_state");
        workspace_arena arena(span);
        const auto s = layout<T>(arena, cfg, prefix);
        const index_t tile = tuning::query_tile, qk = prefix * n;
        const T scale = static_cast<T>(Variant::scale::value(n));
        const index_t channels = hg * p;

        parallel_for(batch * g, prefix * prefix * hg * (n + p) / 2, [&](index_t task, int thread) {
            const index_t b = task / g, grp = task % g, head0 = grp * hg;
            T* const probs = s.probs + thread * tile * tile;
            T* const dprobs = s.dprobs + thread * tile * tile;
            T* const delta = s.delta + thread * prefix;
            T* const dq = s.dq + thread * qk;
            T* const dk = s.dk + thread * qk;
            std::fill_n(dq, qk, T(0));
            std::fill_n(dk, qk, T(0));

            // Queries and keys as the forward read them: rotated copies for RoPE, else the inputs.
            const T* q_rows = &in.C(b, 0, grp, 0);
            const T* k_rows = &in.B(b, 0, grp, 0);
            index_t q_stride = in.C.stride(1), k_stride = in.B.stride(1);
            if constexpr (Variant::position::rotary) {
                T* const q = s.q + thread * qk;
                T* const k = s.k + thread * qk;
                rotate_rows(in.C, b, grp, prefix, q, false);
                rotate_rows(in.B, b, grp, prefix, k, false);
                q_rows = q;
                k_rows = k;
                q_stride = k_stride = n;
            }

            // Delta_i = sum over the group's heads of dy_i . (y_i - D x_i).
            for (index_t i = 0; i < prefix; ++i) {
                T sum = 0;
                for (index_t kh = head0; kh < head0 + hg; ++kh) {
                    const T d = Variant::skip_D ? in.D[kh] : T(0);
                    const T* yr = &y(b, i, kh, 0);
                    const T* xr = &in.x(b, i, kh, 0);
                    const T* gr = &dy(b, i, kh, 0);
                    for (index_t c = 0; c < p; ++c) sum += gr[c] * (yr[c] - d * xr[c]);
                }
                delta[i] = sum;
            }

            for (index_t q0 = 0; q0 < prefix; q0 += tile) {
                const index_t rows = std::min(tile, prefix - q0);
                const auto Cq = map_rows(q_rows + q0 * q_stride, rows, n, q_stride);
                const auto dYq = map_rows(&dy(b, q0, head0, 0), rows, channels, dy.stride(1));
                auto dQ = map_rows(dq + q0 * n, rows, n, n);
                for (index_t k0 = 0; k0 < q0 + rows; k0 += tile) {  // causal: keys up to the tile's last query
                    const index_t keys = std::min(tile, q0 + rows - k0);
                    const auto Bk = map_rows(k_rows + k0 * k_stride, keys, n, k_stride);
                    const auto Xk = map_rows(&in.x(b, k0, head0, 0), keys, channels, in.x.stride(1));
                    auto P = map_rows(probs, rows, keys, keys);
                    auto dP = map_rows(dprobs, rows, keys, keys);
                    P.noalias() = Cq * Bk.transpose();
                    for (index_t r = 0; r < rows; ++r) {
                        const T l = lse(b, grp, q0 + r);
                        for (index_t j = 0; j < keys; ++j)
                            P(r, j) = k0 + j <= q0 + r ? std::exp(P(r, j) * scale - l) : T(0);
                    }
                    dP.noalias() = dYq * Xk.transpose();
                    map_rows(&grads.x(b, k0, head0, 0), keys, channels, grads.x.stride(1)).noalias() +=
                        P.transpose() * dYq;
                    for (index_t r = 0; r < rows; ++r)
                        for (index_t j = 0; j < keys; ++j) P(r, j) *= scale * (dP(r, j) - delta[q0 + r]);  // scale dS
                    dQ.noalias() += P * Bk;
                    map_rows(dk + k0 * n, keys, n, n).noalias() += P.transpose() * Cq;
                }
            }

            if constexpr (Variant::skip_D) {
                for (index_t kh = head0; kh < head0 + hg; ++kh) {
                    const T d = in.D[kh];
                    T dd = 0;
                    for (index_t i = 0; i < prefix; ++i) {
                        const T* gr = &dy(b, i, kh, 0);
                        const T* xr = &in.x(b, i, kh, 0);
                        T* dx = &grads.x(b, i, kh, 0);
                        for (index_t c = 0; c < p; ++c) {
                            dd += gr[c] * xr[c];
                            dx[c] += d * gr[c];
                        }
                    }
                    grads.D(b, kh) += dd;
                }
            }

            if constexpr (Variant::position::rotary) {  // back through the rotation: its transpose
                rotate_rows(tensor_view<const T, 4>(dq, {1, prefix, 1, n}), 0, 0, prefix, dq, true);
                rotate_rows(tensor_view<const T, 4>(dk, {1, prefix, 1, n}), 0, 0, prefix, dk, true);
            }
            for (index_t i = 0; i < prefix; ++i) {
                T* gc = &grads.C(b, i, grp, 0);
                T* gb = &grads.B(b, i, grp, 0);
                for (index_t j = 0; j < n; ++j) {
                    gc[j] += dq[i * n + j];
                    gb[j] += dk[i * n + j];
                }
            }
        });
    }

private:
    // Rows t < prefix of v(b, :, grp, :) turned by RoPE (or by its inverse) into out (prefix, n);
    // out may be v's own memory.
    template <class T>
    static void rotate_rows(tensor_view<const T, 4> v, index_t b, index_t grp, index_t prefix, T* out, bool inverse) {
        const index_t n = v.extent(3), half = n / 2;
        require(n % 2 == 0, "RoPE attention needs an even d_state, got ", n);
        for (index_t t = 0; t < prefix; ++t)
            for (index_t i = 0; i < half; ++i) {
                rotation r = rope_rotation(t, i, n, Variant::position::theta);
                if (inverse) r.sin = -r.sin;
                const auto turned = rope_rotate(v(b, t, grp, i), v(b, t, grp, i + half), r);
                out[t * n + i] = turned.first;
                out[t * n + i + half] = turned.second;
            }
    }
};

}  // namespace transmamba
