#pragma once
// The gradients of one mixer's parameters, and of its state inputs and outputs (docs/training.md).
// mixer_grads is a mixer_params: the same names, shapes and for_each, so an optimizer walks a
// layer's parameters and their gradients side by side, and a checkpoint writer can save either.
#include "transmamba/block/mixer_params.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

template <class T, class Backend>
struct mixer_grads : mixer_params<T, Backend> {
    using mixer_params<T, Backend>::mixer_params;
};

// The state side of a backward pass, both optional, both (batch, nheads, headdim, d_state):
// final_state is dL/d(the forward's final state), an input (default: the loss does not read the
// final state); initial_state is dL/d(the forward's initial state), an output (default: not
// returned). A forward without an initial state started from zeros; its gradient is still defined.
template <class A>
struct mixer_state_grads {
    tensor_view<const A, 4> final_state{};
    tensor_view<A, 4> initial_state{};
};

}  // namespace transmamba
