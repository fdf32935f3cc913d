#pragma once
// Training one residual block (docs/training.md): block_training<Block> runs the block's forward
// keeping what its backward reads, and the backward, for both block kinds of block/block.hpp.
//
//   mixer block:  h = rmsnorm(u) w_norm,  out = u + mixer(h)
//                 dh = mixer backward(dout);  du = dout + rmsnorm backward(dh)
//   MLP block:    h = rmsnorm(u) w_norm,  [g | v] = h [W_gate | W_up]^T,  a = silu(g) v,
//                 out = u + a W_down^T
//                 dW_down = dout^T a,  da = dout W_down,  [dg | dv] = swiglu backward(da),
//                 dW_gate = dg^T h,  dW_up = dv^T h,  dh = dg W_gate + dv W_up,
//                 du = dout + rmsnorm backward(dh)
//
// The block's input u is the caller's to keep (the stack keeps every block's input under either
// activation policy); `activations` holds the rest. h and a are recomputed in backward (a norm
// and an elementwise product), not kept. The forward is the block's own computation in the same
// order, so its output has the same bits as mixer_block::forward / mlp_block::forward.
#include <algorithm>
#include <cstddef>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/traits.hpp"
#include "transmamba/block/block.hpp"
#include "transmamba/block/block_grads.hpp"
#include "transmamba/block/mixer_backward.hpp"
#include "transmamba/core/tensor_view.hpp"
#include "transmamba/core/workspace.hpp"

namespace transmamba {

template <class Block>
struct block_training;

template <class T, class Backend, class Policies>
struct block_training<mixer_block<T, Backend, Policies>> {
    using block_type = mixer_block<T, Backend, Policies>;
    using mixer_trainer = mixer_training<T, Backend, Policies>;
    using grads_type = mixer_block_grads<T, Backend>;
    using A = compute_t<T>;
    using traits = backend_traits<Backend>;
    using context = typename traits::context;
    struct activations {
        typename mixer_trainer::activations mixer;
    };

    static std::size_t workspace_bytes(const block_type& block, index_t batch, index_t L) {
        workspace_arena measure;
        layout(measure, block, batch, L);
        return measure.used();
    }

    // out = u + mixer(rmsnorm(u) w) at TransPoint P; out must not alias u.
    static void forward(const block_type& block, tensor_view<const T, 3> u, tensor_view<T, 3> out, index_t transpoint,
                        activations& saved, workspace_span ws, const context& ctx = {}) {
        const auto& c = block.mixer_layer().config();
        const index_t batch = u.extent(0), L = u.extent(1), rows = batch * L;
        check(block, u, out, ws, "out");
        workspace_arena arena(ws);
        const auto b = layout(arena, block, batch, L);
        block_kernel<Backend>::rmsnorm(ctx, rows, c.d_model, u.data(), block.norm_weight().data(), c.norm_eps, b.normed);
        mixer_trainer::forward(block.mixer_layer(), tensor_view<const T, 3>(b.normed, {batch, L, c.d_model}),
                               tensor_view<T, 3>(b.other, {batch, L, c.d_model}), transpoint, saved.mixer, b.inner, {},
                               ctx);
        traits::copy(ctx, u.data(), out.data(), static_cast<std::size_t>(u.size()));
        block_kernel<Backend>::add(ctx, static_cast<std::size_t>(u.size()), b.other, out.data());
    }

    // du = dL/du for dout = dL/dout; every gradient of the block in `grads` is overwritten. u and
    // saved are the forward's; du must not alias dout.
    static void backward(const block_type& block, tensor_view<const T, 3> u, const activations& saved,
                         tensor_view<const T, 3> dout, tensor_view<T, 3> du, grads_type& grads, workspace_span ws,
                         const context& ctx = {}) {
        const auto& c = block.mixer_layer().config();
        const index_t batch = u.extent(0), L = u.extent(1), rows = batch * L;
        check(block, u, du, ws, "du");
        expect_shape(dout, "dout", {batch, L, c.d_model});
        expect_contiguous(dout, "dout");
        workspace_arena arena(ws);
        const auto b = layout(arena, block, batch, L);
        block_kernel<Backend>::rmsnorm(ctx, rows, c.d_model, u.data(), block.norm_weight().data(), c.norm_eps, b.normed);
        mixer_trainer::backward(block.mixer_layer(), tensor_view<const T, 3>(b.normed, {batch, L, c.d_model}),
                                saved.mixer, dout, tensor_view<T, 3>(b.other, {batch, L, c.d_model}), grads.mixer,
                                b.inner, {}, ctx);
        traits::copy(ctx, dout.data(), du.data(), static_cast<std::size_t>(du.size()));
        block_backward_kernel<Backend>::rmsnorm_backward(ctx, rows, c.d_model, u.data(), block.norm_weight().data(),
                                                         c.norm_eps, b.other, du.data(), grads.norm_weight.data(),
                                                         b.inv);
    }

private:
    struct buffers {
        T* normed;  // (rows, d_model): rmsnorm(u) w
        T* other;   // (rows, d_model): the mixer's output, in backward dL/dh
        A* inv;     // (rows): the norm backward's scratch
        workspace_span inner;
    };
    static buffers layout(workspace_arena& arena, const block_type& block, index_t batch, index_t L) {
        const auto& c = block.mixer_layer().config();
        const auto rows = static_cast<std::size_t>(batch * L);
        buffers b{arena.take<T>(rows * c.d_model), arena.take<T>(rows * c.d_model), arena.take<A>(rows), {}};
        const std::size_t inner = mixer_trainer::workspace_bytes(c, batch, L);
        b.inner = {arena.take<std::byte>(inner), arena.measuring() ? 0 : inner};
        return b;
    }
    static void check(const block_type& block, tensor_view<const T, 3> u, tensor_view<T, 3> out, workspace_span ws,
                      const char* out_name) {
        const index_t batch = u.extent(0), L = u.extent(1), d = block.mixer_layer().config().d_model;
        require(batch > 0 && L > 0, "tensor 'u' is empty: shape ", shape_string(u.shape()));
        expect_shape(u, "u", {batch, L, d});
        expect_contiguous(u, "u");
        expect_shape(out, out_name, {batch, L, d});
        expect_contiguous(out, out_name);
        require(ws.bytes >= workspace_bytes(block, batch, L), "training workspace too small for the mixer block: has ",
                ws.bytes, " bytes, needs ", workspace_bytes(block, batch, L));
    }
};

template <class T, class Backend>
struct block_training<mlp_block<T, Backend>> {
    using block_type = mlp_block<T, Backend>;
    using grads_type = mlp_block_grads<T, Backend>;
    using A = compute_t<T>;
    using traits = backend_traits<Backend>;
    using context = typename traits::context;
    template <class E>
    using buffer = typename traits::template buffer<E>;
    struct activations {
        buffer<T> gate_up;  // (rows, 2 d_ff): [g | v], the gate and up projections
    };

    static std::size_t workspace_bytes(const block_type& block, index_t batch, index_t L) {
        workspace_arena measure;
        layout(measure, block, batch, L);
        return measure.used();
    }

    // out = u + down(silu(gate(h)) up(h)), h = rmsnorm(u) w; the TransPoint is not read.
    static void forward(const block_type& block, tensor_view<const T, 3> u, tensor_view<T, 3> out,
                        index_t /*transpoint*/, activations& saved, workspace_span ws, const context& ctx = {}) {
        const index_t batch = u.extent(0), L = u.extent(1), rows = batch * L, d = block.d_model(), f = block.d_ff();
        check(block, u, out, ws, "out");
        saved.gate_up.resize(static_cast<std::size_t>(rows * 2 * f));
        workspace_arena arena(ws);
        const auto b = layout(arena, block, batch, L);
        T* gu = saved.gate_up.data();
        block_kernel<Backend>::rmsnorm(ctx, rows, d, u.data(), block.norm_weight().data(), block.norm_eps(), b.normed);
        traits::gemm_nt(ctx, rows, f, d, b.normed, d, block.gate_proj().data(), d, gu, 2 * f);
        traits::gemm_nt(ctx, rows, f, d, b.normed, d, block.up_proj().data(), d, gu + f, 2 * f);
        block_kernel<Backend>::swiglu(ctx, rows, f, gu, b.act);
        traits::gemm_nt(ctx, rows, d, f, b.act, f, block.down_proj().data(), f, b.dnormed, d);
        traits::copy(ctx, u.data(), out.data(), static_cast<std::size_t>(u.size()));
        block_kernel<Backend>::add(ctx, static_cast<std::size_t>(u.size()), b.dnormed, out.data());
    }

    static void backward(const block_type& block, tensor_view<const T, 3> u, const activations& saved,
                         tensor_view<const T, 3> dout, tensor_view<T, 3> du, grads_type& grads, workspace_span ws,
                         const context& ctx = {}) {
        const index_t batch = u.extent(0), L = u.extent(1), rows = batch * L, d = block.d_model(), f = block.d_ff();
        check(block, u, du, ws, "du");
        expect_shape(dout, "dout", {batch, L, d});
        expect_contiguous(dout, "dout");
        require(saved.gate_up.size() == static_cast<std::size_t>(rows * 2 * f), "the saved MLP activations are not of a pass over (batch ",
                batch, ", L ", L, ")");
        require(grads.d_model == d && grads.d_ff == f, "mlp_block_grads were made for another configuration than the block's");
        workspace_arena arena(ws);
        const auto b = layout(arena, block, batch, L);
        const T* gu = saved.gate_up.data();
        block_kernel<Backend>::rmsnorm(ctx, rows, d, u.data(), block.norm_weight().data(), block.norm_eps(), b.normed);
        block_kernel<Backend>::swiglu(ctx, rows, f, gu, b.act);
        traits::gemm_tn(ctx, rows, d, f, dout.data(), d, b.act, f, grads.down_proj.data(), f);
        traits::gemm_nn(ctx, rows, d, f, dout.data(), d, block.down_proj().data(), f, b.act, f);  // act -> da
        block_backward_kernel<Backend>::swiglu_backward(ctx, rows, f, gu, b.act, b.dgate_up);
        traits::gemm_tn(ctx, rows, f, d, b.dgate_up, 2 * f, b.normed, d, grads.gate_proj.data(), d);
        traits::gemm_tn(ctx, rows, f, d, b.dgate_up + f, 2 * f, b.normed, d, grads.up_proj.data(), d);
        traits::gemm_nn(ctx, rows, f, d, b.dgate_up, 2 * f, block.gate_proj().data(), d, b.dnormed, d);
        traits::gemm_nn(ctx, rows, f, d, b.dgate_up + f, 2 * f, block.up_proj().data(), d, b.normed, d);  // normed -> dh_up
        block_kernel<Backend>::add(ctx, static_cast<std::size_t>(rows * d), b.normed, b.dnormed);
        traits::copy(ctx, dout.data(), du.data(), static_cast<std::size_t>(du.size()));
        block_backward_kernel<Backend>::rmsnorm_backward(ctx, rows, d, u.data(), block.norm_weight().data(),
                                                         block.norm_eps(), b.dnormed, du.data(),
                                                         grads.norm_weight.data(), b.inv);
    }

private:
    struct buffers {
        T* normed;    // (rows, d): h; in backward later the up branch's share of dh
        T* dnormed;   // (rows, d): the MLP's output in forward, dL/dh in backward
        T* act;       // (rows, d_ff): a = silu(g) v; in backward da
        T* dgate_up;  // (rows, 2 d_ff)
        A* inv;       // (rows)
    };
    static buffers layout(workspace_arena& arena, const block_type& block, index_t batch, index_t L) {
        const auto rows = static_cast<std::size_t>(batch * L), d = static_cast<std::size_t>(block.d_model()),
                   f = static_cast<std::size_t>(block.d_ff());
        return {arena.take<T>(rows * d), arena.take<T>(rows * d), arena.take<T>(rows * f), arena.take<T>(rows * 2 * f),
                arena.take<A>(rows)};
    }
    static void check(const block_type& block, tensor_view<const T, 3> u, tensor_view<T, 3> out, workspace_span ws,
                      const char* out_name) {
        const index_t batch = u.extent(0), L = u.extent(1), d = block.d_model();
        require(batch > 0 && L > 0, "tensor 'u' is empty: shape ", shape_string(u.shape()));
        expect_shape(u, "u", {batch, L, d});
        expect_contiguous(u, "u");
        expect_shape(out, out_name, {batch, L, d});
        expect_contiguous(out, out_name);
        require(ws.bytes >= workspace_bytes(block, batch, L), "training workspace too small for the MLP block: has ",
                ws.bytes, " bytes, needs ", workspace_bytes(block, batch, L));
    }
};

}  // namespace transmamba
