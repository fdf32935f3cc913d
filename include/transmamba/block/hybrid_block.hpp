#pragma once
// One layer of a layer-level hybrid stack (Nemotron-H, Bamba, Granite 4.0 hybrid, Falcon-H1), its kind read
// from the model's config at run time (model_config::hybrid, block/hybrid_config.hpp):
//
//   u += m * mixer(rmsnorm(u) * norm.weight)          mixer: the Mamba2/TransMamba mixer, or
//                                                      self-attention with its own Q/K/V, or both
//                                                      on the same input, summed (Falcon-H1), or none
//   u += m * mlp(rmsnorm(u) * mlp_norm.weight)        mlp: SwiGLU, relu^2, or none
//
// m is the residual multiplier (1 but for Granite). A Mamba2 layer is the same `mixer` as in a
// Mamba2 stack, so it takes a TransPoint (P = 0: the model as trained); the attention and MLP
// layers take none. The stack asks takes_transpoint() which layers count as TransMamba layers.
//
// Parameter names, relative to the layer: "norm.weight", "mixer.<Mamba2 names>" or
// "attention.{q,k,v,o}_proj.weight", "mlp_norm.weight", "mlp.{gate,up,down}_proj.weight" (no
// gate_proj for relu^2); io/hf_hybrid.hpp maps them to each architecture's checkpoint names.
//
// Every piece runs on the layer's backend (block_kernel<Backend>) but the attention, whose kernels
// are the CPU's only: a layer with attention is refused on the CUDA backend at construction.
#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "transmamba/backend/cpu/self_attention.hpp"
#include "transmamba/backend/traits.hpp"
#include "transmamba/block/block.hpp"
#include "transmamba/block/hybrid_config.hpp"
#include "transmamba/block/mixer.hpp"
#include "transmamba/block/self_attention.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/workspace.hpp"

namespace transmamba {

template <class T, class Backend, class Policies = paper_policies>
class hybrid_block {
public:
    using value_type = T;
    using backend = Backend;
    using traits = backend_traits<Backend>;
    using context = typename traits::context;
    using buffer = typename traits::template buffer<T>;
    using mixer_type = transmamba::mixer<T, Backend, Policies>;
    using attention_type = self_attention<T, Backend>;
    using mixer_state = mixer_decode_state<T, Backend>;
    using attention_cache = typename attention_type::cache_type;
    // The stack builds each layer from (config, layer index) and hands it its own decode states.
    static constexpr bool has_transpoint = true;
    static constexpr bool kind_per_layer = true;

    hybrid_block(const model_config& cfg, index_t layer)
        : spec_(cfg.hybrid.layers.at(static_cast<std::size_t>(layer))),
          d_model_(cfg.mixer.d_model),
          d_ff_(cfg.d_ff),
          eps_(cfg.mixer.norm_eps),
          residual_(cfg.hybrid.residual_multiplier) {
        require(traits::host_accessible || !transmamba::has_attention(spec_.mixer), "hybrid layer ", layer,
                ": self-attention layers with their own Q/K/V run on the CPU backend only; the CUDA backend has no "
                "kernel for them yet (its Mamba2 and MLP layers, norms and multipliers run on CUDA)");
        if (spec_.mixer != hybrid_mixer::none) norm_.resize(static_cast<std::size_t>(d_model_));
        if (transmamba::has_mamba2(spec_.mixer)) mamba_.emplace(cfg.mixer);
        if (transmamba::has_attention(spec_.mixer)) attention_.emplace(cfg.hybrid.attention, d_model_);
        if (spec_.mlp != hybrid_mlp::none) {
            require(d_ff_ > 0, "hybrid layer ", layer, " has an MLP but model_config.d_ff = ", d_ff_);
            const auto mat = static_cast<std::size_t>(d_ff_ * d_model_);
            mlp_norm_.resize(static_cast<std::size_t>(d_model_));
            if (spec_.mlp == hybrid_mlp::swiglu) gate_proj_.resize(mat);
            up_proj_.resize(mat);
            down_proj_.resize(mat);
        }
    }

    const hybrid_layer_spec& spec() const { return spec_; }
    bool takes_transpoint() const { return mamba_.has_value(); }
    bool has_attention() const { return attention_.has_value(); }
    const mixer_type& mixer_layer() const { return mamba_.value(); }
    mixer_type& mixer_layer() { return mamba_.value(); }

    template <class F>
    void for_each_parameter(F&& f) {
        const index_t d = d_model_;
        if (spec_.mixer != hybrid_mixer::none) f(std::string_view("norm.weight"), norm_, std::vector<index_t>{d});
        if (mamba_)
            mamba_->params().for_each([&](std::string_view name, auto& buf, const std::vector<index_t>& shape) {
                f(std::string("mixer.") + std::string(name), buf, shape);
            });
        if (attention_)
            attention_->for_each_parameter([&](std::string_view name, auto& buf, const std::vector<index_t>& shape) {
                f(std::string("attention.") + std::string(name), buf, shape);
            });
        if (spec_.mlp != hybrid_mlp::none) {
            f(std::string_view("mlp_norm.weight"), mlp_norm_, std::vector<index_t>{d});
            if (spec_.mlp == hybrid_mlp::swiglu)
                f(std::string_view("mlp.gate_proj.weight"), gate_proj_, std::vector<index_t>{d_ff_, d});
            f(std::string_view("mlp.up_proj.weight"), up_proj_, std::vector<index_t>{d_ff_, d});
            f(std::string_view("mlp.down_proj.weight"), down_proj_, std::vector<index_t>{d, d_ff_});
        }
    }

    std::size_t workspace_bytes(index_t batch, index_t L) const {
        workspace_arena measure;
        layout(measure, batch, L, inner_bytes(batch, L, -1));
        return measure.used();
    }
    // prefill() over prompt_len tokens and step() when the Mamba2 layer's KV cache holds at most
    // cache_tokens (the attention layer's cache is in its state, not in the workspace).
    std::size_t decode_workspace_bytes(index_t prompt_len, index_t cache_tokens) const {
        workspace_arena measure;
        layout(measure, 1, prompt_len, inner_bytes(1, prompt_len, cache_tokens));
        return measure.used();
    }

    // The layer over hidden (batch, L, d_model), in place; `transpoint` is the Mamba2 layer's P.
    void forward(tensor_view<T, 3> hidden, index_t transpoint, workspace_span ws, const context& ctx = {}) const {
        const index_t batch = hidden.extent(0), L = hidden.extent(1);
        expect_shape(hidden, "hidden", {batch, L, d_model_});
        require(ws.bytes >= workspace_bytes(batch, L), "workspace too small for the hybrid layer: has ", ws.bytes,
                " bytes, needs ", workspace_bytes(batch, L));
        check_hidden(hidden.data(), hidden.size(), ctx);
        workspace_arena arena(ws);
        const auto b = layout(arena, batch, L, inner_bytes(batch, L, -1));
        const index_t rows = batch * L;
        if (spec_.mixer != hybrid_mixer::none) {
            block_kernel<Backend>::rmsnorm(ctx, rows, d_model_, hidden.data(), norm_.data(), eps_, b.normed);
            if (mamba_)
                mamba_->forward(tensor_view<const T, 3>(b.normed, {batch, L, d_model_}),
                                tensor_view<T, 3>(b.mixed, {batch, L, d_model_}), transpoint, b.inner, {}, ctx);
            if (attention_) attention_->forward(ctx, batch, L, b.normed, b.attended, b.inner);
            residual_add(ctx, rows, b, hidden.data());
        }
        mlp_branch(ctx, rows, hidden.data(), b);
    }

    // Decoding one sequence: the Mamba2 layer keeps `mixer_st`, the attention layer `attn_cache`
    // (each may be null in a layer that has no such mixer).
    void prefill(tensor_view<T, 3> hidden, index_t transpoint, index_t max_tokens, workspace_span ws, mixer_state* mixer_st,
                 attention_cache* attn_cache, const context& ctx = {}) const {
        const index_t L = hidden.extent(1);
        expect_shape(hidden, "hidden", {1, L, d_model_});
        const index_t cache = attention_ ? max_tokens : std::clamp<index_t>(transpoint, 0, max_tokens);
        require(ws.bytes >= decode_workspace_bytes(L, cache), "workspace too small for prefill: has ", ws.bytes,
                " bytes, needs ", decode_workspace_bytes(L, cache));
        check_hidden(hidden.data(), hidden.size(), ctx);
        require_states(mixer_st, attn_cache);
        workspace_arena arena(ws);
        const auto b = layout(arena, 1, L, inner_bytes(1, L, cache));
        if (spec_.mixer != hybrid_mixer::none) {
            block_kernel<Backend>::rmsnorm(ctx, L, d_model_, hidden.data(), norm_.data(), eps_, b.normed);
            if (mamba_)
                mamba_->prefill(tensor_view<const T, 3>(b.normed, {1, L, d_model_}), tensor_view<T, 3>(b.mixed, {1, L, d_model_}),
                                transpoint, max_tokens, b.inner, *mixer_st, ctx);
            if (attention_) attention_->prefill(ctx, L, max_tokens, b.normed, b.attended, b.inner, *attn_cache);
            residual_add(ctx, L, b, hidden.data());
        }
        mlp_branch(ctx, L, hidden.data(), b);
    }

    void step(tensor_view<T, 1> hidden, workspace_span ws, mixer_state* mixer_st, attention_cache* attn_cache,
              const context& ctx = {}) const {
        expect_shape(hidden, "hidden", {d_model_});
        require_states(mixer_st, attn_cache);
        const index_t cap = std::max(mamba_ ? mixer_st->capacity(mamba_->config()) : index_t(0),
                                     attention_ ? attn_cache->capacity : index_t(0));
        require(ws.bytes >= decode_workspace_bytes(1, cap), "workspace too small for a decoding step: has ", ws.bytes,
                " bytes, needs ", decode_workspace_bytes(1, cap));
        workspace_arena arena(ws);
        const auto b = layout(arena, 1, 1, inner_bytes(1, 1, cap));
        if (spec_.mixer != hybrid_mixer::none) {
            block_kernel<Backend>::rmsnorm(ctx, 1, d_model_, hidden.data(), norm_.data(), eps_, b.normed);
            if (mamba_)
                mamba_->step(tensor_view<const T, 1>(b.normed, {d_model_}), tensor_view<T, 1>(b.mixed, {d_model_}), b.inner,
                             *mixer_st, ctx);
            if (attention_) attention_->step(ctx, b.normed, b.attended, b.inner, *attn_cache);
            residual_add(ctx, 1, b, hidden.data());
        }
        mlp_branch(ctx, 1, hidden.data(), b);
    }

private:
    struct buffers {
        T* normed;  // (rows, d_model)
        T* mixed;   // (rows, d_model): a branch's output (the Mamba2 mixer's in a parallel layer)
        T* attended;  // (rows, d_model): the attention's output; = mixed but in a parallel layer
        T* gate_up; // (rows, 2 d_ff): the MLP's first products
        T* act;     // (rows, d_ff)
        workspace_span inner;
    };
    // cache_tokens < 0: a forward pass; else decoding (prefill of L tokens, or a step) with a KV
    // cache of up to cache_tokens tokens.
    std::size_t inner_bytes(index_t batch, index_t L, index_t cache_tokens) const {
        // A parallel layer runs its two mixers one after the other over the same scratch.
        std::size_t most = 0;
        if (mamba_)
            most = cache_tokens < 0 ? mamba_->workspace_bytes(batch, L) : mamba_->decode_workspace_bytes(L, cache_tokens);
        if (attention_)
            most = std::max({most, attention_->workspace_bytes(batch, L),
                             cache_tokens < 0 ? std::size_t(0) : attention_->step_workspace_bytes(cache_tokens)});
        return most;
    }
    buffers layout(workspace_arena& arena, index_t batch, index_t L, std::size_t inner) const {
        const auto rows = static_cast<std::size_t>(batch * L), d = static_cast<std::size_t>(d_model_);
        const auto ff = spec_.mlp == hybrid_mlp::none ? 0 : static_cast<std::size_t>(d_ff_);
        buffers b{arena.take<T>(rows * d), arena.take<T>(rows * d), nullptr, arena.take<T>(rows * 2 * ff),
                  arena.take<T>(rows * ff), {}};
        b.attended = mamba_ && attention_ ? arena.take<T>(rows * d) : b.mixed;
        b.inner = {arena.take<std::byte>(inner), arena.measuring() ? 0 : inner};
        return b;
    }

    void require_states(const mixer_state* mixer_st, const attention_cache* attn_cache) const {
        require(!mamba_ || mixer_st, "hybrid_block: a Mamba2 layer decodes with a mixer_decode_state");
        require(!attention_ || attn_cache, "hybrid_block: an attention layer decodes with a KV cache");
    }

    void check_hidden(const T* hidden, index_t n, const context& ctx) const {
        if constexpr (Policies::input_check::per_call) {
            const index_t bad = traits::first_non_finite(ctx, hidden, static_cast<std::size_t>(n));
            require(bad < 0, "tensor 'hidden' holds a non-finite value at flat index ", bad);
        }
    }

    void residual_add(const context& ctx, index_t rows, const T* branch, T* hidden) const {
        block_kernel<Backend>::add_scaled(ctx, static_cast<std::size_t>(rows * d_model_), branch, residual_, hidden);
    }
    // The mixer branch: one output, or a parallel layer's two (each multiplier of Falcon-H1's is
    // folded into its out_proj / o_proj at load).
    void residual_add(const context& ctx, index_t rows, const buffers& b, T* hidden) const {
        residual_add(ctx, rows, b.mixed, hidden);
        if (b.attended != b.mixed) residual_add(ctx, rows, b.attended, hidden);
    }

    void mlp_branch(const context& ctx, index_t rows, T* hidden, const buffers& b) const {
        if (spec_.mlp == hybrid_mlp::none) return;
        block_kernel<Backend>::rmsnorm(ctx, rows, d_model_, hidden, mlp_norm_.data(), eps_, b.normed);
        if (spec_.mlp == hybrid_mlp::swiglu) {
            traits::gemm_nt(ctx, rows, d_ff_, d_model_, b.normed, d_model_, gate_proj_.data(), d_model_, b.gate_up, 2 * d_ff_);
            traits::gemm_nt(ctx, rows, d_ff_, d_model_, b.normed, d_model_, up_proj_.data(), d_model_, b.gate_up + d_ff_,
                            2 * d_ff_);
            block_kernel<Backend>::swiglu(ctx, rows, d_ff_, b.gate_up, b.act);
        } else {
            traits::gemm_nt(ctx, rows, d_ff_, d_model_, b.normed, d_model_, up_proj_.data(), d_model_, b.gate_up, d_ff_);
            block_kernel<Backend>::relu_squared(ctx, static_cast<std::size_t>(rows * d_ff_), b.gate_up, b.act);
        }
        traits::gemm_nt(ctx, rows, d_model_, d_ff_, b.act, d_ff_, down_proj_.data(), d_ff_, b.mixed, d_model_);
        residual_add(ctx, rows, b.mixed, hidden);
    }

    hybrid_layer_spec spec_;
    index_t d_model_, d_ff_;
    double eps_;
    double residual_;
    std::optional<mixer_type> mamba_;
    std::optional<attention_type> attention_;
    buffer norm_, mlp_norm_, gate_proj_, up_proj_, down_proj_;
};

}  // namespace transmamba
