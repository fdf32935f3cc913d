#pragma once
// The tensors that attention, scan and converter all read (SPEC.md section 3): after the conv and
// its SiLU, x is the value/SSM input, B the key/input map, C the query/output map. They are views
// into the mixer's xBC buffer, hence strided. x, B, C are in the storage type T (bf16 on the GPU
// feeds the tensor cores); dt, A, D, and everything the kernels write (y, the state), are in the
// compute type.
#include "transmamba/core/config.hpp"
#include "transmamba/core/error.hpp"
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

// The views of one decoding step (decode_scan_kernel on every backend): one token of `batch`
// sequences whose sizes match `cfg`, y (batch, 1, h, p) and the state (batch, h, p, n), both with
// a contiguous last dimension, the state contiguous. Throws transmamba::error naming what differs.
template <class T, class Y>
void expect_decode_step_views(const mixer_config& cfg, const ssm_inputs<T>& in, const tensor_view<Y, 4>& y,
                              const tensor_view<Y, 4>& state) {
    const index_t batch = in.batch(), h = in.nheads(), p = in.headdim(), n = in.d_state(), g = in.ngroups();
    require(in.seqlen() == 1, "decoding step: the inputs must hold one token, got ", in.seqlen());
    require(g > 0 && h % g == 0, "decoding step: ngroups = ", g, " does not divide nheads = ", h);
    require(h == cfg.nheads() && p == cfg.headdim && n == cfg.d_state && g == cfg.ngroups,
            "decoding step: the inputs' (nheads, headdim, d_state, ngroups) = (", h, ", ", p, ", ", n, ", ", g,
            ") do not match the configuration (", cfg.nheads(), ", ", cfg.headdim, ", ", cfg.d_state, ", ",
            cfg.ngroups, ")");
    require(in.x.stride(3) == 1 && in.B.stride(3) == 1 && in.C.stride(3) == 1,
            "decoding step: x, B and C must be contiguous along their last dimension");
    expect_shape(in.B, "B", {batch, 1, g, n});
    expect_shape(in.C, "C", {batch, 1, g, n});
    expect_shape(in.dt, "dt", {batch, 1, h});
    expect_shape(y, "y", {batch, 1, h, p});
    expect_shape(state, "state", {batch, h, p, n});
    expect_contiguous(state, "state");
    require(y.stride(3) == 1, "decoding step: y must be contiguous along its last dimension");
}

}  // namespace transmamba
