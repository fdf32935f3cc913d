#pragma once
// The gradients of the tensors in ssm_inputs (core/ssm_inputs.hpp), as the backward kernels of
// attention, converter and scan write them (docs/training.md). Every kernel ADDS into these views, so
// that the three parts of a mixer (prefix, converter, suffix) each contribute to the same x, B, dt
// and A; the caller zeroes them once. They are in the compute type.
//
// dA and dD are kept per sequence, (batch, nheads): the kernels run one task per sequence and group,
// so a per-sequence partial needs no atomics and the caller's sum over the batch is in a fixed order
// (the same bits on every run).
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

template <class Compute>
struct ssm_grads {
    tensor_view<Compute, 4> x;   // (batch, L, nheads, headdim)
    tensor_view<Compute, 4> B;   // (batch, L, ngroups, d_state)
    tensor_view<Compute, 4> C;   // (batch, L, ngroups, d_state)
    tensor_view<Compute, 3> dt;  // (batch, L, nheads): with respect to dt after softplus and the limit
    tensor_view<Compute, 2> A;   // (batch, nheads): with respect to A = -exp(A_log), per sequence
    tensor_view<Compute, 2> D;   // (batch, nheads), per sequence
};

}  // namespace transmamba
