#pragma once
// The cross-rank state scan's two local steps on the CPU (parallel/state_scan.hpp).
#include <cmath>
#include <cstddef>

#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/parallel/state_scan.hpp"

namespace transmamba {

template <>
struct state_scan_kernel<cpu> {
    template <class A>
    static std::size_t scratch_bytes(index_t /*batch*/, index_t /*nheads*/, index_t /*tokens*/) {
        return 0;
    }

    template <class T, class A>
    static void decay(const cpu_context&, const ssm_inputs<T>& in, index_t t_begin, index_t t_end, A* lambda,
                      workspace_span = {}) {
        const index_t h = in.nheads();
        parallel_for(in.batch() * h, t_end - t_begin, [&](index_t task, int) {
            const index_t b = task / h, k = task % h;
            A sum = 0;  // the exponent, summed before the one exp (as the converter does)
            for (index_t t = t_begin; t < t_end; ++t) sum += in.dt(b, t, k);
            lambda[task] = std::exp(sum * in.A[k]);
        });
    }

    template <class A>
    static void fold(const cpu_context&, const state_pair_layout& lay, const A* pairs, index_t count, const A* initial,
                     A* state) {
        const index_t pn = lay.headdim * lay.d_state, stride = lay.elements();
        parallel_for(lay.batch * lay.nheads, (count + 1) * pn, [&](index_t head, int) {
            A* S = state + head * pn;
            for (index_t e = 0; e < pn; ++e) S[e] = initial ? initial[head * pn + e] : A(0);
            for (index_t q = 0; q < count; ++q) {
                const A* U = pairs + q * stride + head * pn;
                const A lambda = pairs[q * stride + lay.decay_offset() + head];
                for (index_t e = 0; e < pn; ++e) S[e] = lambda * S[e] + U[e];
            }
        });
    }
};

}  // namespace transmamba
