#pragma once
// Training one TransMamba mixer (docs/training.md): a forward pass that keeps what the backward
// needs (mixer_activations), and the backward pass, for any TransPoint P. Both are written once
// against backend_traits and the component kernels, forward and backward, that the mixer's policies
// select; the backward runs the forward's graph in reverse:
//
//   dout -> out_proj (dW, dX) -> gated RMSNorm (dnorm.weight, dz on gated rows) -> dy
//   dy, t >= P: scan backward, from dL/dS_final to dL/dS at P       -> dx, dB, dC, ddt, dA, dD
//   dL/dS at P: converter backward                                   -> dx, dB, ddt, dA (t < P), dS_init
//   dy, t <  P: attention backward (from the saved log-sum-exp)      -> dx, dB, dC, dD
//   ddt, dA, dD -> time steps (softplus, limit, A_log); dxBC -> conv1d + SiLU -> in_proj (dW, du)
#include <algorithm>
#include <cstddef>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/traits.hpp"
#include "transmamba/block/mixer.hpp"
#include "transmamba/block/mixer_activations.hpp"
#include "transmamba/block/mixer_grads.hpp"
#include "transmamba/core/ssm_grads.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/tensor_view.hpp"
#include "transmamba/core/workspace.hpp"

namespace transmamba {

template <class T, class Backend, class Policies>
class mixer_training {
public:
    using layer = mixer<T, Backend, Policies>;
    using A = compute_t<T>;
    using traits = backend_traits<Backend>;
    using context = typename traits::context;
    using activations = mixer_activations<T, Backend>;
    using grads_type = mixer_grads<T, Backend>;

    using projection = typename layer::projection;
    using attention = typename layer::attention;
    using scan = typename layer::scan;
    using converter = typename layer::converter;
    using projection_backward = projection_backward_kernel<typename Policies::projection, Backend>;
    using attention_backward = attention_backward_kernel<typename Policies::attention, Backend>;
    using scan_backward = scan_backward_kernel<typename Policies::scan, Backend>;
    using converter_backward = converter_backward_kernel<typename Policies::converter, Backend>;

    // Bytes of workspace that forward() and backward() over (batch, L) need, whatever the TransPoint.
    static std::size_t workspace_bytes(const mixer_config& c, index_t batch, index_t L) {
        workspace_arena forward_measure, backward_measure;
        forward_layout(forward_measure, c, batch, L);
        backward_layout(backward_measure, c, batch, L);
        return std::max(forward_measure.used(), backward_measure.used());
    }

    // The mixer's forward pass (the same kernels, the same result as mixer::forward), keeping in
    // `saved` what backward() reads. P > L means L.
    static void forward(const layer& m, tensor_view<const T, 3> u, tensor_view<T, 3> out, index_t transpoint,
                        activations& saved, workspace_span ws, mixer_state_io<A> state = {}, const context& ctx = {}) {
        const auto& c = m.config();
        const auto& w = m.params();
        const index_t batch = u.extent(0), L = u.extent(1), rows = batch * L;
        check_forward(m, u, out, transpoint, ws, state, ctx);
        const index_t P = std::min(transpoint, L);
        const index_t h = c.nheads(), p = c.headdim, g = c.ngroups, n = c.d_state, hpn = h * p * n;
        saved.reserve(c, batch, L, P, !state.initial_state.empty());
        workspace_arena arena(ws);
        const auto buf = forward_layout(arena, c, batch, L);

        traits::gemm_nt(ctx, rows, c.d_in_proj(), c.d_model, u.data(), c.d_model, w.in_proj.data(), c.d_model,
                        saved.zxbcdt.data(), c.d_in_proj());
        projection::conv_silu(ctx, c, batch, L, saved.zxbcdt.data(), w.conv_weight.data(), w.conv_bias.data(),
                              saved.xbc.data());
        projection::time_steps(ctx, c, rows, saved.zxbcdt.data(), w.dt_bias.data(), w.A_log.data(), w.D.data(),
                               saved.dt.data(), saved.a_coef.data(), saved.d_coef.data());
        const auto in = inputs(c, saved);
        const tensor_view<A, 4> y(saved.y.data(), {batch, L, h, p});
        const tensor_view<A, 4> S(buf.state, {batch, h, p, n});

        attention::run(ctx, c, in, P, y, buf.scratch, tensor_view<A, 3>(saved.lse.data(), {batch, g, P}));
        if (state.initial_state.empty()) {
            traits::fill(ctx, S.data(), static_cast<std::size_t>(S.size()), A(0));
        } else {
            traits::copy(ctx, state.initial_state.data(), S.data(), static_cast<std::size_t>(S.size()));
            traits::copy(ctx, state.initial_state.data(), saved.initial_state.data(), static_cast<std::size_t>(S.size()));
        }
        converter::run(ctx, c, in, P, S, buf.scratch);
        for (index_t blk = 0; blk < saved.blocks; ++blk) {
            const index_t t0 = P + blk * c.chunk_size, t1 = std::min(L, t0 + c.chunk_size);
            traits::copy_rows(ctx, S.data(), hpn, saved.block_states.data() + blk * hpn, saved.blocks * hpn, batch, hpn);
            scan::run(ctx, c, in, t0, t1, y, S, buf.scratch);
        }
        if (!state.final_state.empty())
            traits::copy(ctx, S.data(), state.final_state.data(), static_cast<std::size_t>(S.size()));

        projection::gated_rmsnorm(ctx, c, batch, L, P, Policies::attention::gate_by_z, saved.y.data(),
                                  saved.zxbcdt.data(), w.norm_weight.data(), buf.normed);
        traits::gemm_nt(ctx, rows, c.d_model, c.d_inner(), buf.normed, c.d_inner(), w.out_proj.data(), c.d_inner(),
                        out.data(), c.d_model);
    }

    // The gradients of a loss L(out, final_state) with respect to u (du), every parameter (grads,
    // overwritten: every element is written) and, on request, the initial state, given dout =
    // dL/dout and optionally dL/dfinal_state. `u` and `saved` are those of the forward() being
    // differentiated; grads must have the layer's configuration.
    static void backward(const layer& m, tensor_view<const T, 3> u, const activations& saved,
                         tensor_view<const T, 3> dout, tensor_view<T, 3> du, grads_type& grads, workspace_span ws,
                         mixer_state_grads<A> state = {}, const context& ctx = {}) {
        const auto& c = m.config();
        const auto& w = m.params();
        const index_t batch = u.extent(0), L = u.extent(1), rows = batch * L, P = saved.transpoint;
        const index_t h = c.nheads(), p = c.headdim, g = c.ngroups, n = c.d_state, cd = c.conv_dim(), dip = c.d_in_proj();
        check_backward(m, u, saved, dout, du, grads, ws, state);
        workspace_arena arena(ws);
        const auto buf = backward_layout(arena, c, batch, L);

        // out = normed W_out^T: recompute normed, then dW_out = dout^T normed and dnormed = dout W_out.
        projection::gated_rmsnorm(ctx, c, batch, L, P, Policies::attention::gate_by_z, saved.y.data(),
                                  saved.zxbcdt.data(), w.norm_weight.data(), buf.normed);
        traits::gemm_tn(ctx, rows, c.d_model, c.d_inner(), dout.data(), c.d_model, buf.normed, c.d_inner(),
                        grads.out_proj.data(), c.d_inner());
        traits::gemm_nn(ctx, rows, c.d_model, c.d_inner(), dout.data(), c.d_model, w.out_proj.data(), c.d_inner(),
                        buf.dnormed, c.d_inner());
        projection_backward::gated_rmsnorm_backward(ctx, c, batch, L, P, Policies::attention::gate_by_z,
                                                    saved.y.data(), saved.zxbcdt.data(), w.norm_weight.data(),
                                                    buf.dnormed, buf.dy, buf.dzxbcdt, grads.norm_weight.data(),
                                                    buf.xhat);

        // The SSM part, the converter and attention add into the gradients of x, B, C, dt, A, D.
        traits::fill(ctx, buf.dxbc, static_cast<std::size_t>(rows * cd), A(0));
        traits::fill(ctx, buf.ddt, static_cast<std::size_t>(rows * h), A(0));
        traits::fill(ctx, buf.dA, static_cast<std::size_t>(batch * h), A(0));
        traits::fill(ctx, buf.dD, static_cast<std::size_t>(batch * h), A(0));
        const ssm_grads<A> gr{
            tensor_view<A, 4>(buf.dxbc, {batch, L, h, p}, {L * cd, cd, p, 1}),
            tensor_view<A, 4>(buf.dxbc + c.d_inner(), {batch, L, g, n}, {L * cd, cd, n, 1}),
            tensor_view<A, 4>(buf.dxbc + c.d_inner() + g * n, {batch, L, g, n}, {L * cd, cd, n, 1}),
            tensor_view<A, 3>(buf.ddt, {batch, L, h}),
            tensor_view<A, 2>(buf.dA, {batch, h}),
            tensor_view<A, 2>(buf.dD, {batch, h}),
        };
        const auto in = inputs(c, saved);
        const tensor_view<const A, 4> dy(buf.dy, {batch, L, h, p});
        const tensor_view<A, 4> G(buf.dstate, {batch, h, p, n});
        if (state.final_state.empty()) traits::fill(ctx, G.data(), static_cast<std::size_t>(G.size()), A(0));
        else traits::copy(ctx, state.final_state.data(), G.data(), static_cast<std::size_t>(G.size()));

        scan_backward::run(ctx, c, in, P, L,
                           tensor_view<const A, 5>(saved.block_states.data(), {batch, saved.blocks, h, p, n}),
                           dy, G, gr, buf.scratch);
        const tensor_view<const A, 4> init =
            saved.has_initial_state ? tensor_view<const A, 4>(saved.initial_state.data(), {batch, h, p, n})
                                    : tensor_view<const A, 4>{};
        converter_backward::run(ctx, c, in, P, init, tensor_view<const A, 4>(G), gr, state.initial_state, buf.scratch);
        attention_backward::run(ctx, c, in, P, tensor_view<const A, 4>(saved.y.data(), {batch, L, h, p}),
                                tensor_view<const A, 3>(saved.lse.data(), {batch, g, P}), dy, gr, buf.scratch);

        projection_backward::time_steps_backward(ctx, c, batch, rows, saved.zxbcdt.data(), w.dt_bias.data(),
                                                 w.A_log.data(), buf.ddt, buf.dA, buf.dD, buf.dzxbcdt,
                                                 grads.dt_bias.data(), grads.A_log.data(), grads.D.data());
        projection_backward::conv_silu_backward(ctx, c, batch, L, saved.zxbcdt.data(), w.conv_weight.data(),
                                                w.conv_bias.data(), buf.dxbc, buf.dzxbcdt, grads.conv_weight.data(),
                                                grads.conv_bias.data(), buf.dpre);
        traits::gemm_tn(ctx, rows, dip, c.d_model, buf.dzxbcdt, dip, u.data(), c.d_model, grads.in_proj.data(),
                        c.d_model);
        traits::gemm_nn(ctx, rows, dip, c.d_model, buf.dzxbcdt, dip, w.in_proj.data(), c.d_model, du.data(), c.d_model);
    }

    // Convenience: grow `ws` as needed.
    static void forward(const layer& m, tensor_view<const T, 3> u, tensor_view<T, 3> out, index_t transpoint,
                        activations& saved, workspace<Backend>& ws, mixer_state_io<A> state = {},
                        const context& ctx = {}) {
        forward(m, u, out, transpoint, saved, ws.reserve(workspace_bytes(m.config(), u.extent(0), u.extent(1))), state,
                ctx);
    }
    static void backward(const layer& m, tensor_view<const T, 3> u, const activations& saved,
                         tensor_view<const T, 3> dout, tensor_view<T, 3> du, grads_type& grads, workspace<Backend>& ws,
                         mixer_state_grads<A> state = {}, const context& ctx = {}) {
        backward(m, u, saved, dout, du, grads, ws.reserve(workspace_bytes(m.config(), u.extent(0), u.extent(1))),
                 state, ctx);
    }

private:
    static ssm_inputs<T> inputs(const mixer_config& c, const activations& saved) {
        const index_t batch = saved.batch, L = saved.seqlen, h = c.nheads(), p = c.headdim, g = c.ngroups,
                      n = c.d_state, cd = c.conv_dim();
        const T* xbc = saved.xbc.data();
        return {
            tensor_view<const T, 4>(xbc, {batch, L, h, p}, {L * cd, cd, p, 1}),
            tensor_view<const T, 4>(xbc + c.d_inner(), {batch, L, g, n}, {L * cd, cd, n, 1}),
            tensor_view<const T, 4>(xbc + c.d_inner() + g * n, {batch, L, g, n}, {L * cd, cd, n, 1}),
            tensor_view<const A, 3>(saved.dt.data(), {batch, L, h}),
            saved.a_coef.data(),
            saved.d_coef.data(),
        };
    }

    struct forward_buffers {
        A* state;  // (batch, h, p, n)
        T* normed;  // (batch*L, d_inner)
        workspace_span scratch;
    };
    static forward_buffers forward_layout(workspace_arena& arena, const mixer_config& c, index_t batch, index_t L) {
        const auto rows = static_cast<std::size_t>(batch * L);
        forward_buffers b{};
        b.state = arena.take<A>(static_cast<std::size_t>(batch * c.nheads() * c.headdim * c.d_state));
        b.normed = arena.take<T>(rows * c.d_inner());
        const std::size_t scratch = std::max({attention::template scratch_bytes<T>(c, batch, L),
                                              converter::template scratch_bytes<T>(c, batch, L),
                                              scan::template scratch_bytes<T>(c, batch, L)});
        std::byte* s = arena.take<std::byte>(scratch);
        b.scratch = {s, arena.measuring() ? 0 : scratch};
        return b;
    }

    struct backward_buffers {
        T* normed;    // (rows, d_inner): the out-projection's input, recomputed
        A* dnormed;   // (rows, d_inner)
        A* dy;        // (rows, d_inner) = (batch, L, h, p)
        A* xhat;      // (rows, d_inner): the norm's scratch
        A* dzxbcdt;   // (rows, d_in_proj)
        A* dxbc;      // (rows, conv_dim)
        A* dpre;      // (rows, conv_dim): the conv's scratch
        A* ddt;       // (rows, h)
        A* dA;        // (batch, h)
        A* dD;        // (batch, h)
        A* dstate;    // (batch, h, p, n)
        workspace_span scratch;
    };
    static backward_buffers backward_layout(workspace_arena& arena, const mixer_config& c, index_t batch, index_t L) {
        const auto rows = static_cast<std::size_t>(batch * L);
        const auto di = static_cast<std::size_t>(c.d_inner()), h = static_cast<std::size_t>(c.nheads());
        backward_buffers b{};
        b.normed = arena.take<T>(rows * di);
        b.dnormed = arena.take<A>(rows * di);
        b.dy = arena.take<A>(rows * di);
        b.xhat = arena.take<A>(rows * di);
        b.dzxbcdt = arena.take<A>(rows * static_cast<std::size_t>(c.d_in_proj()));
        b.dxbc = arena.take<A>(rows * static_cast<std::size_t>(c.conv_dim()));
        b.dpre = arena.take<A>(rows * static_cast<std::size_t>(c.conv_dim()));
        b.ddt = arena.take<A>(rows * h);
        b.dA = arena.take<A>(static_cast<std::size_t>(batch) * h);
        b.dD = arena.take<A>(static_cast<std::size_t>(batch) * h);
        b.dstate = arena.take<A>(static_cast<std::size_t>(batch * c.nheads() * c.headdim * c.d_state));
        const std::size_t scratch = std::max({attention_backward::template scratch_bytes<T>(c, batch, L),
                                              converter_backward::template scratch_bytes<T>(c, batch, L),
                                              scan_backward::template scratch_bytes<T>(c, batch, L)});
        std::byte* s = arena.take<std::byte>(scratch);
        b.scratch = {s, arena.measuring() ? 0 : scratch};
        return b;
    }

    // An optional state tensor (empty = not given) must have the state's shape and be contiguous.
    template <class V>
    static void expect_state_if_given(const V& state, const char* name, const extents<4>& shape) {
        if (state.empty()) return;
        expect_shape(state, name, shape);
        expect_contiguous(state, name);
    }

    static void check_forward(const layer& m, tensor_view<const T, 3> u, tensor_view<T, 3> out, index_t transpoint,
                              workspace_span ws, const mixer_state_io<A>& state, const context& ctx) {
        const auto& c = m.config();
        const index_t batch = u.extent(0), L = u.extent(1);
        require(c.norm_placement == gated_norm::after_gate,
                "mixer_backward: only the gated norm after the gate (Mamba2's) has a backward pass");
        require(u.extent(2) == c.d_model, "tensor 'u' has shape ", shape_string(u.shape()), ", expected (batch, L, ",
                c.d_model, ")");
        require(batch > 0 && L > 0, "tensor 'u' is empty: shape ", shape_string(u.shape()));
        expect_contiguous(u, "u");
        expect_shape(out, "out", {batch, L, c.d_model});
        expect_contiguous(out, "out");
        require(transpoint >= 0, "TransPoint P = ", transpoint, " is negative (P must be in [0, L])");
        const extents<4> state_shape{batch, c.nheads(), c.headdim, c.d_state};
        expect_state_if_given(state.initial_state, "initial_state", state_shape);
        expect_state_if_given(state.final_state, "final_state", state_shape);
        require(ws.bytes >= workspace_bytes(c, batch, L), "training workspace too small for batch ", batch, ", L ", L,
                ": has ", ws.bytes, " bytes, needs ", workspace_bytes(c, batch, L));
        check_finite(m.params(), "mixer", ctx);
        if constexpr (Policies::input_check::per_call) {
            const index_t bad = traits::first_non_finite(ctx, u.data(), static_cast<std::size_t>(u.size()));
            require(bad < 0, "tensor 'u' holds a non-finite value at flat index ", bad);
            if (!state.initial_state.empty()) {
                const index_t bad_state = traits::first_non_finite(ctx, state.initial_state.data(),
                                                                   static_cast<std::size_t>(state.initial_state.size()));
                require(bad_state < 0, "tensor 'initial_state' holds a non-finite value at flat index ", bad_state);
            }
        }
    }

    static void check_backward(const layer& m, tensor_view<const T, 3> u, const activations& saved,
                               tensor_view<const T, 3> dout, tensor_view<T, 3> du, const grads_type& grads,
                               workspace_span ws, const mixer_state_grads<A>& state) {
        const auto& c = m.config();
        const index_t batch = u.extent(0), L = u.extent(1);
        require(u.extent(2) == c.d_model, "tensor 'u' has shape ", shape_string(u.shape()), ", expected (batch, L, ",
                c.d_model, ")");
        require(saved.batch == batch && saved.seqlen == L, "the saved activations are of a pass over (batch ",
                saved.batch, ", L ", saved.seqlen, "), not over u's (batch ", batch, ", L ", L, ")");
        expect_contiguous(u, "u");
        expect_shape(dout, "dout", {batch, L, c.d_model});
        expect_contiguous(dout, "dout");
        expect_shape(du, "du", {batch, L, c.d_model});
        expect_contiguous(du, "du");
        const auto& gc = grads.config;
        require(gc.d_model == c.d_model && gc.expand == c.expand && gc.headdim == c.headdim && gc.d_state == c.d_state &&
                    gc.ngroups == c.ngroups && gc.d_conv == c.d_conv,
                "mixer_grads were made for another configuration than the mixer's");
        const extents<4> state_shape{batch, c.nheads(), c.headdim, c.d_state};
        expect_state_if_given(state.final_state, "final_state gradient", state_shape);
        expect_state_if_given(state.initial_state, "initial_state gradient", state_shape);
        require(ws.bytes >= workspace_bytes(c, batch, L), "training workspace too small for batch ", batch, ", L ", L,
                ": has ", ws.bytes, " bytes, needs ", workspace_bytes(c, batch, L));
    }
};

}  // namespace transmamba
