#pragma once
// The exact Memory Converter on the CPU (SPEC.md section 3, paper eq. 8-9):
//   S_{P-1} = (prod_{m<P} a_m) S_init + sum_{j<P} w_j x_j B_j^T,  w_j = exp(sum_{m=j+1}^{P-1} dt_m A) dt_j
// i.e. X^T diag(w) B over the prefix, taken tile by tile (one chunk-state product per tile) so that
// the scratch is bounded by chunk_size whatever P is. The suffix sums are accumulated directly from
// the end, so no difference of large cumulative sums is ever taken.
#include <algorithm>
#include <cmath>

#include "transmamba/backend/cpu/eigen.hpp"
#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/core/sequence_layout.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/converter.hpp"

namespace transmamba {

template <>
struct converter_kernel<exact_converter, cpu> {
    template <class T>
    static T* layout(workspace_arena& arena, const mixer_config& cfg) {
        // per thread: one tile of weighted keys (chunk x d_state)
        return arena.take<T>(static_cast<std::size_t>(max_threads() * cfg.chunk_size * cfg.d_state));
    }
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t /*batch*/, index_t /*seqlen*/) {
        workspace_arena measure;
        layout<T>(measure, cfg);
        return measure.used();
    }

    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, const sequence_layout&) {
        return scratch_bytes<T>(cfg, 1, 1);
    }

    // state: in, the state before token 0 (zeros for a fresh sequence); out, the state after
    // token prefix - 1.
    template <class T>
    static void run(const cpu_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, index_t prefix,
                    tensor_view<T, 4> state, workspace_span span) {
        if (prefix <= 0) return;
        run(ctx, cfg, in, sequence_layout::dense(in.batch(), prefix).split_at(prefix), state, span);
    }
    // Per sequence s of the layout over its own prefix(s) tokens into state(s, ...); a sequence with
    // no attention prefix keeps its state.
    template <class T>
    static void run(const cpu_context&, const mixer_config& cfg, const ssm_inputs<T>& in, const sequence_layout& seqs,
                    tensor_view<T, 4> state, workspace_span span) {
        using namespace kernels::cpu;
        const index_t longest = seqs.max_prefix();
        if (longest <= 0) return;
        require(state.is_contiguous(), "converter: the state must be contiguous");
        workspace_arena arena(span);
        T* scratch = layout<T>(arena, cfg);
        const index_t Q = cfg.chunk_size, p = in.headdim(), n = in.d_state(), hg = in.heads_per_group();

        parallel_for(seqs.count() * in.nheads(), longest * p * n, [&](index_t task, int thread) {
            const index_t q = task / in.nheads(), k = task % in.nheads(), grp = k / hg;
            const index_t prefix = seqs.prefix(q), b = seqs.batch_of(q), row0 = seqs.first_row(q);
            if (prefix <= 0) return;
            const T A = in.A[k];
            auto S = map_rows(&state(q, k, 0, 0), p, n, n);
            T total = 0;  // sum over the whole prefix of dt_m A: decays the initial state
            for (index_t t = 0; t < prefix; ++t) total += in.dt(b, row0 + t, k) * A;
            S *= std::exp(total);

            auto Bw = map_rows(scratch + thread * Q * n, Q, n, n);
            T suffix = 0;  // sum_{m > j} dt_m A, grown from the end of the prefix
            const index_t last_tile = (prefix - 1) / Q * Q;
            for (index_t c0 = last_tile; c0 >= 0; c0 -= Q) {
                const index_t qn = std::min(Q, prefix - c0);
                const auto Bc = map_rows(&in.B(b, row0 + c0, grp, 0), qn, n, in.B.stride(1));
                for (index_t j = qn - 1; j >= 0; --j) {
                    const T dt = in.dt(b, row0 + c0 + j, k);
                    Bw.row(j) = (std::exp(suffix) * dt) * Bc.row(j);
                    suffix += dt * A;
                }
                S.noalias() +=
                    map_rows(&in.x(b, row0 + c0, k, 0), qn, p, in.x.stride(1)).transpose() * Bw.topRows(qn);
            }
        });
    }
};

}  // namespace transmamba
