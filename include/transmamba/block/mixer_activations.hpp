#pragma once
// What a mixer's forward pass keeps for its backward pass (docs/training.md): saved-for-backward
// tensors, owned here, apart from the scratch of the workspace. Sized by the pass that fills it
// (forward_for_backward, block/mixer_backward.hpp) and read by the backward of that same pass.
// What is cheap to recompute (the normed output, the conv pre-activations) is not kept.
#include <algorithm>
#include <cstddef>

#include "transmamba/backend/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

template <class T, class Backend>
struct mixer_activations {
    using A = compute_t<T>;
    template <class E>
    using buffer = typename backend_traits<Backend>::template buffer<E>;

    index_t batch = 0, seqlen = 0, transpoint = 0, blocks = 0;
    bool has_initial_state = false;
    buffer<A> zxbcdt;         // (batch*L, d_in_proj): the in-projection's output
    buffer<T> xbc;            // (batch*L, conv_dim): x | B | C after the conv and its SiLU
    buffer<A> dt;             // (batch*L, nheads): after softplus and the time-step limit
    buffer<A> a_coef;         // (nheads): A = -exp(A_log)
    buffer<A> d_coef;         // (nheads): D
    buffer<A> y;              // (batch*L, d_inner): attention / SSM output before the gated norm
    buffer<A> lse;            // (batch, ngroups, P): attention's log-sum-exp per (group, query)
    buffer<A> block_states;   // (batch, blocks, nheads, headdim, d_state): the SSM state before
                              // tokens P, P + chunk_size, ...
    buffer<A> initial_state;  // (batch, nheads, headdim, d_state) when the forward had one

    // Resizes for a pass over (batch, L) at TransPoint P (already read as min(P, L)); buffers that
    // already have the size keep their memory.
    void reserve(const mixer_config& c, index_t b, index_t L, index_t P, bool initial) {
        batch = b;
        seqlen = L;
        transpoint = P;
        blocks = L > P ? (L - P + c.chunk_size - 1) / c.chunk_size : 0;
        has_initial_state = initial;
        const auto rows = static_cast<std::size_t>(b * L), state = static_cast<std::size_t>(b * c.nheads() * c.headdim * c.d_state);
        zxbcdt.resize(rows * static_cast<std::size_t>(c.d_in_proj()));
        xbc.resize(rows * static_cast<std::size_t>(c.conv_dim()));
        dt.resize(rows * static_cast<std::size_t>(c.nheads()));
        a_coef.resize(static_cast<std::size_t>(c.nheads()));
        d_coef.resize(static_cast<std::size_t>(c.nheads()));
        y.resize(rows * static_cast<std::size_t>(c.d_inner()));
        lse.resize(static_cast<std::size_t>(b * c.ngroups * P));
        block_states.resize(static_cast<std::size_t>(blocks) * state);
        initial_state.resize(initial ? state : 0);
    }
};

}  // namespace transmamba
