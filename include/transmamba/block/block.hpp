#pragma once
// Residual blocks (SPEC.md section 7): the TransMamba block u + mixer(rmsnorm(u) * norm.weight), as
// in Mamba2 checkpoints, and the MLP block the paper alternates with it.
#include <algorithm>
#include <span>
#include <string_view>
#include <vector>

#include "transmamba/backend/traits.hpp"
#include "transmamba/block/hybrid_config.hpp"
#include "transmamba/block/mixer.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/tensor_view.hpp"
#include "transmamba/core/workspace.hpp"

namespace transmamba {

// Sizes of a model built from blocks.
struct model_config {
    mixer_config mixer;
    index_t d_ff = 0;        // hidden size of the MLP blocks (unused by mixer-only stacks)
    index_t num_layers = 1;  // repeats of the stack's layer pattern
    // Which layer is which, for the hybrid pattern (block/hybrid_block.hpp: one entry per layer);
    // empty for every other pattern.
    hybrid_config hybrid = {};

    // Elements of one repeat of a layer pattern holding a mixer block and, when d_ff > 0, an MLP
    // block (an upper bound for patterns with fewer), checked for overflow.
    index_t parameters_per_layer() const {
        const index_t d = mixer.d_model;
        index_t n = checked_add(mixer.parameter_count(), d, "model_config: mixer block parameter count");
        if (d_ff > 0) {
            const index_t mlp = checked_mul(3 * d, d_ff, "model_config: MLP weight elements 3 * d_model * d_ff");
            n = checked_add(n, checked_add(mlp, d, "model_config: MLP block parameter count"),
                            "model_config: parameters per layer");
        }
        return n;
    }
    // Elements of the stack's parameters (the blocks and norm_f).
    index_t parameter_count() const {
        if (hybrid.enabled()) {
            index_t n = mixer.d_model;
            for (std::size_t i = 0; i < hybrid.layers.size(); ++i)
                n = checked_add(n, hybrid.layer_parameter_count(i, mixer, d_ff), "model_config: parameter count");
            return n;
        }
        return checked_add(checked_mul(parameters_per_layer(), num_layers, "model_config: parameters of num_layers = ",
                                       num_layers, " layers"),
                           mixer.d_model, "model_config: parameter count");
    }

    void validate() const {
        mixer.validate();
        require(num_layers > 0, "model_config.num_layers must be positive, got ", num_layers);
        require(num_layers <= size_limits::layers, "model_config.num_layers = ", num_layers, " exceeds the limit ",
                size_limits::layers);
        require(d_ff >= 0, "model_config.d_ff must be non-negative, got ", d_ff);
        require(d_ff <= size_limits::dimension, "model_config.d_ff = ", d_ff, " exceeds the limit ", size_limits::dimension);
        if (hybrid.enabled()) {
            require(static_cast<index_t>(hybrid.layers.size()) == num_layers, "model_config: hybrid.layers names ",
                    hybrid.layers.size(), " layers, but num_layers = ", num_layers);
            hybrid.validate(mixer, d_ff);
        }
        (void)parameter_count();
    }
};

// u + mixer(rmsnorm(u) * norm.weight), in place on the hidden states.
template <class T, class Backend, class Policies = paper_policies>
class mixer_block {
public:
    using value_type = T;
    using backend = Backend;
    using mixer_type = transmamba::mixer<T, Backend, Policies>;
    using compute_type = typename mixer_type::compute_type;
    using context = typename backend_traits<Backend>::context;
    static constexpr bool has_transpoint = true;

    explicit mixer_block(const model_config& cfg) : mixer_(cfg.mixer) { norm_weight_.resize(cfg.mixer.d_model); }

    mixer_type& mixer_layer() { return mixer_; }
    const mixer_type& mixer_layer() const { return mixer_; }
    // (d_model): the pre-norm's weight (block_training reads it).
    const typename backend_traits<Backend>::template buffer<T>& norm_weight() const { return norm_weight_; }

    // Parameters under their checkpoint names relative to the block ("norm.weight",
    // "mixer.in_proj.weight", ...).
    template <class F>
    void for_each_parameter(F&& f) {
        const index_t d = mixer_.config().d_model;
        f(std::string_view("norm.weight"), norm_weight_, std::vector<index_t>{d});
        mixer_.params().for_each([&](std::string_view name, auto& buf, const std::vector<index_t>& shape) {
            f(std::string("mixer.") + std::string(name), buf, shape);
        });
    }

    std::size_t workspace_bytes(index_t batch, index_t L) const { return workspace_bytes(sequence_layout::dense(batch, L)); }
    std::size_t workspace_bytes(const sequence_layout& seqs) const {
        workspace_arena measure;
        layout(measure, seqs);
        return measure.used();
    }

    void forward(tensor_view<T, 3> hidden, index_t transpoint, workspace_span ws,
                 mixer_state_io<compute_type> state = {}, const context& ctx = {}) const {
        const index_t batch = hidden.extent(0), L = hidden.extent(1), d = mixer_.config().d_model;
        expect_shape(hidden, "hidden", {batch, L, d});
        require(batch > 0 && L > 0, "tensor 'hidden' is empty: shape ", shape_string(hidden.shape()));
        require(transpoint >= 0, "TransPoint P = ", transpoint, " is negative (P must be in [0, L])");
        forward(hidden, sequence_layout::dense(batch, L).split_at(transpoint), ws, state, ctx);
    }
    // Over the sequences of a layout (mixer::forward's packed form): hidden (1, total, d_model) when
    // packed; the norm and the residual are per row, so only the mixer sees the layout.
    void forward(tensor_view<T, 3> hidden, const sequence_layout& seqs, workspace_span ws,
                 mixer_state_io<compute_type> state = {}, const context& ctx = {}) const {
        const index_t batch = hidden.extent(0), L = hidden.extent(1), d = mixer_.config().d_model;
        expect_shape(hidden, "hidden", {batch, L, d});
        require(batch * L == seqs.rows(), "tensor 'hidden' has shape ", shape_string(hidden.shape()), " for ",
                seqs.rows(), " tokens of the sequence layout");
        require(ws.bytes >= workspace_bytes(seqs), "workspace too small for the mixer block: has ", ws.bytes,
                " bytes, needs ", workspace_bytes(seqs));
        if constexpr (Policies::input_check::per_call) {  // named here: the mixer only sees the normalised copy
            const index_t bad = backend_traits<Backend>::first_non_finite(ctx, hidden.data(),
                                                                          static_cast<std::size_t>(hidden.size()));
            require(bad < 0, "tensor 'hidden' holds a non-finite value at flat index ", bad);
        }
        workspace_arena arena(ws);
        const auto buf = layout(arena, seqs);
        const auto rows = batch * L;
        block_kernel<Backend>::rmsnorm(ctx, rows, d, hidden.data(), norm_weight_.data(), mixer_.config().norm_eps,
                                       buf.normed);
        mixer_.forward(tensor_view<const T, 3>(buf.normed, {batch, L, d}), tensor_view<T, 3>(buf.mixed, {batch, L, d}),
                       seqs, buf.inner, state, ctx);
        block_kernel<Backend>::add(ctx, static_cast<std::size_t>(rows * d), buf.mixed, hidden.data());
    }

    // ---- Decoding one sequence: the same residual block around mixer::prefill / mixer::step -----
    using decode_state = typename mixer_type::decode_state;

    // As mixer::decode_workspace_bytes: `cache_tokens` is the KV cache's capacity, min(P, max_tokens).
    std::size_t decode_workspace_bytes(index_t prompt_len, index_t cache_tokens) const {
        workspace_arena measure;
        decode_layout(measure, prompt_len, cache_tokens);
        return measure.used();
    }

    void prefill(tensor_view<T, 3> hidden, index_t transpoint, index_t max_tokens, workspace_span ws, decode_state& st,
                 const context& ctx = {}) const {
        const index_t L = hidden.extent(1), d = mixer_.config().d_model;
        expect_shape(hidden, "hidden", {1, L, d});
        const index_t cache = std::clamp<index_t>(transpoint, 0, max_tokens);
        require(ws.bytes >= decode_workspace_bytes(L, cache), "workspace too small for prefill: has ", ws.bytes,
                " bytes, needs ", decode_workspace_bytes(L, cache));
        workspace_arena arena(ws);
        const auto buf = decode_layout(arena, L, cache);
        block_kernel<Backend>::rmsnorm(ctx, L, d, hidden.data(), norm_weight_.data(), mixer_.config().norm_eps, buf.normed);
        mixer_.prefill(tensor_view<const T, 3>(buf.normed, {1, L, d}), tensor_view<T, 3>(buf.mixed, {1, L, d}), transpoint,
                       max_tokens, buf.inner, st, ctx);
        block_kernel<Backend>::add(ctx, static_cast<std::size_t>(L * d), buf.mixed, hidden.data());
    }

    void step(tensor_view<T, 1> hidden, workspace_span ws, decode_state& st, const context& ctx = {}) const {
        const index_t d = mixer_.config().d_model;
        expect_shape(hidden, "hidden", {d});
        const index_t cap = st.capacity(mixer_.config());
        require(ws.bytes >= decode_workspace_bytes(1, cap), "workspace too small for a decoding step: has ", ws.bytes,
                " bytes, needs ", decode_workspace_bytes(1, cap));
        workspace_arena arena(ws);
        const auto buf = decode_layout(arena, 1, cap);
        block_kernel<Backend>::rmsnorm(ctx, 1, d, hidden.data(), norm_weight_.data(), mixer_.config().norm_eps, buf.normed);
        mixer_.step(tensor_view<const T, 1>(buf.normed, {d}), tensor_view<T, 1>(buf.mixed, {d}), buf.inner, st, ctx);
        block_kernel<Backend>::add(ctx, static_cast<std::size_t>(d), buf.mixed, hidden.data());
    }

    // ---- Batched decoding: the residual block around mixer::step_batch, n rows at once ---------
    std::size_t batch_step_workspace_bytes(index_t n, index_t cache_tokens) const {
        workspace_arena measure;
        batch_step_layout(measure, n, cache_tokens);
        return measure.used();
    }
    void step_batch(tensor_view<T, 2> hidden, workspace_span ws, std::span<decode_state* const> states,
                    index_t cache_tokens, const context& ctx = {}) const {
        const index_t n = hidden.extent(0), d = mixer_.config().d_model;
        expect_shape(hidden, "hidden", {n, d});
        require(ws.bytes >= batch_step_workspace_bytes(n, cache_tokens), "workspace too small for a batched step: has ",
                ws.bytes, " bytes, needs ", batch_step_workspace_bytes(n, cache_tokens));
        workspace_arena arena(ws);
        const auto buf = batch_step_layout(arena, n, cache_tokens);
        block_kernel<Backend>::rmsnorm(ctx, n, d, hidden.data(), norm_weight_.data(), mixer_.config().norm_eps, buf.normed);
        mixer_.step_batch(tensor_view<const T, 2>(buf.normed, {n, d}), tensor_view<T, 2>(buf.mixed, {n, d}), buf.inner,
                          states, ctx);
        block_kernel<Backend>::add(ctx, static_cast<std::size_t>(n * d), buf.mixed, hidden.data());
    }

private:
    struct buffers {
        T* normed;
        T* mixed;
        workspace_span inner;
    };
    buffers decode_layout(workspace_arena& arena, index_t L, index_t cache_tokens) const {
        const auto n = static_cast<std::size_t>(L * mixer_.config().d_model);
        buffers b{arena.take<T>(n), arena.take<T>(n), {}};
        const std::size_t inner = mixer_.decode_workspace_bytes(L, cache_tokens);
        b.inner = {arena.take<std::byte>(inner), arena.measuring() ? 0 : inner};
        return b;
    }
    buffers batch_step_layout(workspace_arena& arena, index_t n, index_t cache_tokens) const {
        const auto rows = static_cast<std::size_t>(n * mixer_.config().d_model);
        buffers b{arena.take<T>(rows), arena.take<T>(rows), {}};
        const std::size_t inner = mixer_.batch_step_workspace_bytes(n, cache_tokens);
        b.inner = {arena.take<std::byte>(inner), arena.measuring() ? 0 : inner};
        return b;
    }
    buffers layout(workspace_arena& arena, const sequence_layout& seqs) const {
        const auto n = static_cast<std::size_t>(seqs.rows() * mixer_.config().d_model);
        buffers b{arena.take<T>(n), arena.take<T>(n), {}};
        const std::size_t inner = mixer_.workspace_bytes(seqs);
        b.inner = {arena.take<std::byte>(inner), arena.measuring() ? 0 : inner};
        return b;
    }

    mixer_type mixer_;
    typename backend_traits<Backend>::template buffer<T> norm_weight_;
};

// u + down_proj(silu(gate_proj(h)) * up_proj(h)), h = rmsnorm(u) * norm.weight: the SwiGLU MLP of
// LLaMA-style models, which the paper's TransMamba models interleave 1:1 with mixer blocks.
template <class T, class Backend>
class mlp_block {
public:
    using value_type = T;
    using backend = Backend;
    using context = typename backend_traits<Backend>::context;
    using buffer = typename backend_traits<Backend>::template buffer<T>;
    static constexpr bool has_transpoint = false;

    explicit mlp_block(const model_config& cfg) : d_model_(cfg.mixer.d_model), d_ff_(cfg.d_ff), eps_(cfg.mixer.norm_eps) {
        require(d_ff_ > 0, "mlp_block needs model_config.d_ff > 0, got ", d_ff_);
        for_each_parameter([](std::string_view, buffer& b, const std::vector<index_t>& shape) {
            std::size_t n = 1;
            for (auto e : shape) n *= static_cast<std::size_t>(e);
            b.resize(n);
        });
    }

    index_t d_model() const { return d_model_; }
    index_t d_ff() const { return d_ff_; }
    double norm_eps() const { return eps_; }
    // The weights, read-only (block_training reads them): norm (d_model), gate and up (d_ff,
    // d_model), down (d_model, d_ff).
    const buffer& norm_weight() const { return norm_weight_; }
    const buffer& gate_proj() const { return gate_proj_; }
    const buffer& up_proj() const { return up_proj_; }
    const buffer& down_proj() const { return down_proj_; }

    template <class F>
    void for_each_parameter(F&& f) {
        f(std::string_view("norm.weight"), norm_weight_, std::vector<index_t>{d_model_});
        f(std::string_view("mlp.gate_proj.weight"), gate_proj_, std::vector<index_t>{d_ff_, d_model_});
        f(std::string_view("mlp.up_proj.weight"), up_proj_, std::vector<index_t>{d_ff_, d_model_});
        f(std::string_view("mlp.down_proj.weight"), down_proj_, std::vector<index_t>{d_model_, d_ff_});
    }

    std::size_t workspace_bytes(index_t batch, index_t L) const {
        workspace_arena measure;
        layout(measure, batch, L);
        return measure.used();
    }
    // Row by row: a packed batch is just its rows.
    std::size_t workspace_bytes(const sequence_layout& seqs) const { return workspace_bytes(1, seqs.rows()); }

    void forward(tensor_view<T, 3> hidden, index_t /*transpoint*/, workspace_span ws, const context& ctx = {}) const {
        const index_t batch = hidden.extent(0), L = hidden.extent(1), rows = batch * L;
        expect_shape(hidden, "hidden", {batch, L, d_model_});
        require(ws.bytes >= workspace_bytes(batch, L), "workspace too small for the MLP block: has ", ws.bytes,
                " bytes, needs ", workspace_bytes(batch, L));
        workspace_arena arena(ws);
        const auto b = layout(arena, batch, L);
        using traits = backend_traits<Backend>;
        block_kernel<Backend>::rmsnorm(ctx, rows, d_model_, hidden.data(), norm_weight_.data(), eps_, b.normed);
        traits::gemm_nt(ctx, rows, d_ff_, d_model_, b.normed, d_model_, gate_proj_.data(), d_model_, b.gate_up, 2 * d_ff_);
        traits::gemm_nt(ctx, rows, d_ff_, d_model_, b.normed, d_model_, up_proj_.data(), d_model_, b.gate_up + d_ff_,
                        2 * d_ff_);
        block_kernel<Backend>::swiglu(ctx, rows, d_ff_, b.gate_up, b.act);
        traits::gemm_nt(ctx, rows, d_model_, d_ff_, b.act, d_ff_, down_proj_.data(), d_ff_, b.normed, d_model_);
        block_kernel<Backend>::add(ctx, static_cast<std::size_t>(rows * d_model_), b.normed, hidden.data());
    }

private:
    struct buffers {
        T* normed;   // rmsnorm(u), later the MLP's output
        T* gate_up;  // (rows, 2 d_ff)
        T* act;      // (rows, d_ff)
    };
    buffers layout(workspace_arena& arena, index_t batch, index_t L) const {
        const auto rows = static_cast<std::size_t>(batch * L);
        return {arena.take<T>(rows * d_model_), arena.take<T>(rows * 2 * d_ff_), arena.take<T>(rows * d_ff_)};
    }

    index_t d_model_, d_ff_;
    double eps_;
    buffer norm_weight_, gate_proj_, up_proj_, down_proj_;
};

}  // namespace transmamba
