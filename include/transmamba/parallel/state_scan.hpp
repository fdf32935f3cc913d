#pragma once
// The SSM state scan across ranks (docs/context_parallel.md). The recurrence S_t = a_t S_{t-1} +
// dt_t x_t B_t^T is linear in S, so a run of tokens [s, e) acts on the state entering it as
//   S_out = Lambda S_in + U,   Lambda = prod_{t in [s, e)} a_t = exp(A sum dt_t)   (per head),
//                              U = the state the run leaves when it starts from zero,
// and two runs compose as (Lambda2, U2) o (Lambda1, U1) = (Lambda2 Lambda1, Lambda2 U1 + U2). Each rank
// reduces its slice to its pair (U by the Memory Converter's chunk-state pass from a zero state, the
// same exact computation as the converter at P); the pairs are all-gathered, and each rank folds the
// pairs of the ranks before it (an exclusive prefix, local) into the state that enters its slice.
//
// Why one all-gather rather than log2(R) doubling steps: a pair is (h p n + h) values per sequence,
// kilobytes to a few MB, so a step costs its latency, not its bandwidth. The all-gather is one
// latency (NCCL's ring or NVLS collectives), the doubling scan log2(R) of them, dependent one after
// another; the local fold is R - 1 multiply-adds per state element, nothing beside the scan of the
// slice itself. The pair layout below is the all-gather's slot.
#include <cstddef>

#include "transmamba/core/numeric.hpp"
#include "transmamba/core/ssm_inputs.hpp"

namespace transmamba {

// One rank's pair in a flat buffer of the compute type: U (batch, nheads, headdim, d_state), then
// Lambda (batch, nheads).
struct state_pair_layout {
    index_t batch = 0, nheads = 0, headdim = 0, d_state = 0;

    index_t state_elements() const { return batch * nheads * headdim * d_state; }
    index_t decay_offset() const { return state_elements(); }
    index_t elements() const { return state_elements() + batch * nheads; }
};

// Per backend (parallel/cpu/state_scan.hpp, parallel/cuda/state_scan.cuh):
//   scratch_bytes<A>(batch, nheads, tokens): the scratch decay needs over at most `tokens` tokens;
//   decay(ctx, in, t_begin, t_end, lambda, scratch):  lambda(b, k) = exp(A_k sum_{t in [t_begin, t_end)} dt(b, t, k));
//   fold(ctx, layout, pairs, count, initial, state): state = the pairs 0 .. count - 1 (slots of
//       layout.elements() each) applied in order to `initial` (zeros when null).
template <class Backend>
struct state_scan_kernel;

}  // namespace transmamba
