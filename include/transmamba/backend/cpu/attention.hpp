#pragma once
// Causal softmax attention with Q=C, K=B, V=x over the prefix t < P, on the CPU.
// Heads of a group share C and B, so scores and softmax are computed once per (group, query tile)
// and applied to all h/g heads at once: their values are adjacent channels of x, so one GEMM
// (tile x keys) * (keys x (h/g)*p) serves the whole group.
#include <algorithm>
#include <cmath>
#include <limits>

#include "transmamba/backend/cpu/eigen.hpp"
#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/rotary.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/core/sequence_layout.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/attention.hpp"

namespace transmamba {

// Tuning of the CPU attention kernel, kept out of the algorithm.
struct cpu_attention_tuning {
    static constexpr index_t query_tile = 64;
};

template <attention_policy Variant>
struct attention_kernel<Variant, cpu> {
    using tuning = cpu_attention_tuning;

    template <class T>
    struct scratch {
        T* scores = nullptr;     // per thread: (query_tile, longest prefix)
        T* rotated_c = nullptr;  // (prefix rows of all sequences, g, n), RoPE variants only
        T* rotated_b = nullptr;
    };
    template <class T>
    static scratch<T> layout(workspace_arena& arena, const mixer_config& cfg, index_t rotated_rows, index_t prefix) {
        scratch<T> s;
        s.scores = arena.take<T>(static_cast<std::size_t>(max_threads() * tuning::query_tile * prefix));
        if constexpr (Variant::position::rotary) {
            const auto n = static_cast<std::size_t>(rotated_rows * cfg.ngroups * cfg.d_state);
            s.rotated_c = arena.take<T>(n);
            s.rotated_b = arena.take<T>(n);
        }
        return s;
    }
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t batch, index_t prefix) {
        workspace_arena measure;
        layout<T>(measure, cfg, batch * prefix, prefix);
        return measure.used();
    }
    // For any layout at its TransPoints (enough for every run() over it).
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, const sequence_layout& seqs) {
        workspace_arena measure;
        layout<T>(measure, cfg, seqs.rows(), seqs.max_length());
        return measure.used();
    }

    // Writes y(b, t, :, :) for first_query <= t < prefix; other rows are not touched. With `lse`
    // (batch, g, prefix), also each (group, query)'s log-sum-exp of its scaled scores, which the
    // backward pass recomputes the softmax from (backend/cpu/attention_backward.hpp). A first_query
    // above 0 computes a band of queries against all the keys they see, the work one rank of the
    // context-parallel layer takes (parallel/query_assignment.hpp).
    template <class T>
    static void run(const cpu_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, index_t prefix,
                    tensor_view<T, 4> y, workspace_span span, tensor_view<T, 3> lse = {}, index_t first_query = 0) {
        if (prefix <= 0 || first_query >= prefix) return;
        require(first_query >= 0, "attention: first_query = ", first_query, " is negative");
        if (!lse.empty()) expect_shape(lse, "lse", {in.batch(), in.ngroups(), prefix});
        run(ctx, cfg, in, sequence_layout::dense(in.batch(), prefix).split_at(prefix), y, span, lse, first_query);
    }
    // Each sequence of `seqs` attends causally within itself over its first prefix(s) tokens; a
    // packed sequence never sees another's keys. `lse`, when given, is (count, g, longest prefix).
    // first_query > 0 (dense layouts only) starts every sequence's queries there.
    template <class T>
    static void run(const cpu_context&, const mixer_config& cfg, const ssm_inputs<T>& in, const sequence_layout& seqs,
                    tensor_view<T, 4> y, workspace_span span, tensor_view<T, 3> lse = {}, index_t first_query = 0) {
        const index_t longest = seqs.max_prefix();
        if (longest <= 0 || longest <= first_query) return;
        require(in.x.stride(3) == 1 && in.x.stride(2) == in.headdim(),
                "attention: the heads of x must be adjacent channels of one row");
        workspace_arena arena(span);
        const auto s = layout<T>(arena, cfg, seqs.rows(), longest);
        const index_t g = in.ngroups(), n = in.d_state(), p = in.headdim();
        const index_t hg = in.heads_per_group();
        const T scale = static_cast<T>(Variant::scale::value(n));

        // Query and key rows of sequence q as the kernel reads them: rotated copies for RoPE (at the
        // sequence's flat rows), else the inputs.
        auto query_row = [&](index_t q, index_t t) -> const T* {
            if constexpr (Variant::position::rotary) return s.rotated_c + (seqs.flat_row(q) + t) * g * n;
            else return &in.C(seqs.batch_of(q), seqs.first_row(q) + t, 0, 0);
        };
        auto key_row = [&](index_t q, index_t t) -> const T* {
            if constexpr (Variant::position::rotary) return s.rotated_b + (seqs.flat_row(q) + t) * g * n;
            else return &in.B(seqs.batch_of(q), seqs.first_row(q) + t, 0, 0);
        };
        index_t qk_row_stride = in.C.stride(1);
        if constexpr (Variant::position::rotary) {
            rotate(in, seqs, s.rotated_c, s.rotated_b);
            qk_row_stride = g * n;
        } else {
            require(in.B.stride(0) == in.C.stride(0) && in.B.stride(1) == in.C.stride(1),
                    "attention: B and C must share a layout");
        }

        // Tasks over (sequence, group, query tile) at the longest prefix's tile count; a shorter
        // sequence's surplus tiles return at once.
        require(first_query == 0 || !seqs.is_packed(), "attention: first_query needs a dense layout");
        const index_t tiles = (longest - first_query + tuning::query_tile - 1) / tuning::query_tile;
        // A tile's work: its scores against the keys it sees (half the prefix on average), then
        // the heads of the group reading the values.
        const index_t tile_work = std::min(longest, tuning::query_tile) * (longest / 2 + 1) * (n + hg * p);
        parallel_for(seqs.count() * g * tiles, tile_work, [&](index_t task, int thread) {
            // Largest tiles first would balance better; dynamic scheduling already evens it out.
            const index_t tile = task % tiles, grp = (task / tiles) % g, q = task / (tiles * g);
            const index_t prefix = seqs.prefix(q);
            const index_t q0 = first_query + tile * tuning::query_tile, q1 = std::min(prefix, q0 + tuning::query_tile);
            if (q0 >= prefix) return;
            const index_t rows = q1 - q0, keys = q1;  // causal: this tile sees keys [0, q1)
            const index_t b = seqs.batch_of(q), row0 = seqs.first_row(q);

            const T* cq = query_row(q, q0) + grp * n;
            const T* bk = key_row(q, 0) + grp * n;
            auto scores = kernels::cpu::map_rows(s.scores + thread * tuning::query_tile * longest, rows, keys, keys);
            scores.noalias() = kernels::cpu::map_rows(cq, rows, n, qk_row_stride) *
                               kernels::cpu::map_rows(bk, keys, n, qk_row_stride).transpose();

            for (index_t r = 0; r < rows; ++r) {
                const index_t last = q0 + r;  // keys 0..last are visible to query q0 + r
                T* srow = &scores(r, 0);
                T mx = -std::numeric_limits<T>::infinity();
                for (index_t j = 0; j <= last; ++j) mx = std::max(mx, srow[j] * scale);
                T sum = 0;
                for (index_t j = 0; j <= last; ++j) {
                    srow[j] = std::exp(srow[j] * scale - mx);
                    sum += srow[j];
                }
                const T inv = T(1) / sum;
                if (!lse.empty()) lse(q, grp, last) = mx + std::log(sum);
                for (index_t j = 0; j <= last; ++j) srow[j] *= inv;
                for (index_t j = last + 1; j < keys; ++j) srow[j] = 0;
            }

            const index_t head0 = grp * hg;
            const T* xv = &in.x(b, row0, head0, 0);
            T* yo = &y(b, row0 + q0, head0, 0);
            kernels::cpu::map_rows(yo, rows, hg * p, y.stride(1)).noalias() =
                scores * kernels::cpu::map_rows(xv, keys, hg * p, in.x.stride(1));
            if constexpr (Variant::skip_D) {
                for (index_t r = 0; r < rows; ++r)
                    for (index_t k = head0; k < head0 + hg; ++k) {
                        const T d = in.D[k];
                        const T* xr = &in.x(b, row0 + q0 + r, k, 0);
                        T* yr = &y(b, row0 + q0 + r, k, 0);
                        for (index_t i = 0; i < p; ++i) yr[i] += d * xr[i];
                    }
            }
        });
    }

private:
    // Rotate-half RoPE of C and B at each sequence's positions < prefix(s), into buffers at the
    // sequences' flat rows (g, n per row).
    template <class T>
    static void rotate(const ssm_inputs<T>& in, const sequence_layout& seqs, T* rc, T* rb) {
        const index_t g = in.ngroups(), n = in.d_state(), half = n / 2;
        require(n % 2 == 0, "RoPE attention needs an even d_state, got ", n);
        parallel_for(seqs.rows(), 20 * g * n, [&](index_t row, int) {  // a pow, a cos and a sin per pair
            const auto at = seqs.locate(row);
            const index_t t = at.position;
            if (t >= seqs.prefix(at.sequence)) return;
            const index_t b = seqs.batch_of(at.sequence), r0 = seqs.first_row(at.sequence) + t;
            for (index_t grp = 0; grp < g; ++grp) {
                T* oc = rc + (row * g + grp) * n;
                T* ob = rb + (row * g + grp) * n;
                for (index_t i = 0; i < half; ++i) {
                    const rotation r = rope_rotation(t, i, n, Variant::position::theta);
                    const auto c = rope_rotate(in.C(b, r0, grp, i), in.C(b, r0, grp, i + half), r);
                    const auto k = rope_rotate(in.B(b, r0, grp, i), in.B(b, r0, grp, i + half), r);
                    oc[i] = c.first;
                    oc[i + half] = c.second;
                    ob[i] = k.first;
                    ob[i + half] = k.second;
                }
            }
        });
    }
};

}  // namespace transmamba
