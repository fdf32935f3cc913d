#pragma once
// The tensors that attention, scan and converter all read (SPEC.md section 3): after the conv and
// its SiLU, x is the value/SSM input, B the key/input map, C the query/output map. They are views
// into the mixer's xBC buffer, hence strided. x, B, C are in the storage type T (bf16 on the GPU
// feeds the tensor cores); dt, A, D, and everything the kernels write (y, the state), are in the
// compute type.
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

template <class T>
struct ssm_inputs {
    using compute_type = compute_t<T>;
    tensor_view<const T, 4> x;              // (batch, L, nheads, headdim)
    tensor_view<const T, 4> B;              // (batch, L, ngroups, d_state)
    tensor_view<const T, 4> C;              // (batch, L, ngroups, d_state)
    tensor_view<const compute_type, 3> dt;  // (batch, L, nheads), after softplus and the time-step limit
    const compute_type* A = nullptr;        // (nheads), A = -exp(A_log) < 0
    const compute_type* D = nullptr;        // (nheads)

    index_t batch() const { return x.extent(0); }
    index_t seqlen() const { return x.extent(1); }
    index_t nheads() const { return x.extent(2); }
    index_t headdim() const { return x.extent(3); }
    index_t ngroups() const { return B.extent(2); }
    index_t d_state() const { return B.extent(3); }
    index_t heads_per_group() const { return nheads() / ngroups(); }
};

}  // namespace transmamba
