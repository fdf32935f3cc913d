#pragma once
// The attention mixer of layer-level hybrid checkpoints (Nemotron-H, Bamba, Granite 4.0 hybrid):
// causal grouped-query softmax attention with projections of its own, beside the Mamba2 mixer in
// the same stack (block/hybrid_block.hpp).
//
//   q = u Wq^T, k = u Wk^T, v = u Wv^T          (rows, H hd), (rows, KV hd), (rows, KV hd)
//   q, k <- RoPE(theta) on the first rotary_dim channels of each head (rotary_dim 0: none)
//   o = causal GQA softmax(q k^T * scale) v      backend/cpu/self_attention.hpp
//   out = o Wo^T                                 (rows, d_model)
//
// Decoding keeps the rotated keys and the values of every token seen (a KV cache of max_tokens
// rows at most). The kernels run on the host: the CUDA backend has none yet, and a model that
// holds such a layer is refused there at construction (docs/checkpoints.md).
#include <cmath>
#include <string_view>
#include <vector>

#include "transmamba/backend/cpu/self_attention.hpp"
#include "transmamba/backend/traits.hpp"
#include "transmamba/core/checked_size.hpp"
#include "transmamba/block/hybrid_config.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/workspace.hpp"

namespace transmamba {

// One sequence's KV cache of an attention layer: rotated keys and values, oldest first.
template <class T, class Backend>
struct self_attention_cache {
    typename backend_traits<Backend>::template buffer<T> keys;    // (capacity, KV hd)
    typename backend_traits<Backend>::template buffer<T> values;  // (capacity, KV hd)
    index_t length = 0;
    index_t capacity = 0;
};

template <class T, class Backend>
class self_attention {
public:
    using traits = backend_traits<Backend>;
    using context = typename traits::context;
    using buffer = typename traits::template buffer<T>;
    using cache_type = self_attention_cache<T, Backend>;

    self_attention(const self_attention_config& cfg, index_t d_model) : config_(cfg), d_model_(d_model) {
        require(traits::host_accessible,
                "self-attention layers with their own Q/K/V (hybrid checkpoints) run on the CPU backend only: the CUDA "
                "backend has no kernel for them yet; load this model with Backend = cpu");
        cfg.validate(d_model);
        for_each_parameter([](std::string_view, buffer& b, const std::vector<index_t>& shape) {
            b.resize(static_cast<std::size_t>(shape[0] * shape[1]));
        });
    }

    const self_attention_config& config() const { return config_; }

    template <class F>
    void for_each_parameter(F&& f) {
        f(std::string_view("q_proj.weight"), q_proj_, std::vector<index_t>{config_.q_width(), d_model_});
        f(std::string_view("k_proj.weight"), k_proj_, std::vector<index_t>{config_.kv_width(), d_model_});
        f(std::string_view("v_proj.weight"), v_proj_, std::vector<index_t>{config_.kv_width(), d_model_});
        f(std::string_view("o_proj.weight"), o_proj_, std::vector<index_t>{d_model_, config_.q_width()});
    }

    // Scratch of forward() / prefill() over `batch` sequences of L tokens (the whole workspace is
    // sized once; nothing is allocated per call).
    std::size_t workspace_bytes(index_t batch, index_t L) const {
        workspace_arena measure;
        layout(measure, batch * L, batch * config_.num_heads * L);
        return measure.used();
    }
    // Scratch of step() with a cache of up to `cache_tokens` tokens.
    std::size_t step_workspace_bytes(index_t cache_tokens) const {
        workspace_arena measure;
        layout(measure, 1, config_.num_heads * cache_tokens);
        return measure.used();
    }

    // out (batch * L, d_model) for normed (batch * L, d_model), every sequence from position 0.
    void forward(const context& ctx, index_t batch, index_t L, const T* normed, T* out, workspace_span ws) const {
        require(ws.bytes >= workspace_bytes(batch, L), "workspace too small for self-attention: has ", ws.bytes,
                " bytes, needs ", workspace_bytes(batch, L));
        workspace_arena arena(ws);
        const auto b = layout(arena, batch * L, batch * config_.num_heads * L);
        project_qkv(ctx, batch * L, L, 0, normed, b);
        kernels::cpu::causal_gqa_attention(shape(), batch, L, b.q, b.k, b.v, b.o, b.scores);
        traits::gemm_nt(ctx, batch * L, d_model_, config_.q_width(), b.o, config_.q_width(), o_proj_.data(),
                        config_.q_width(), out, d_model_);
    }

    // forward() over a prompt of L tokens that also fills `cache` (sized for max_tokens).
    void prefill(const context& ctx, index_t L, index_t max_tokens, const T* normed, T* out, workspace_span ws,
                 cache_type& cache) const {
        require(L >= 1 && L <= max_tokens, "self_attention::prefill: prompt of ", L, " tokens must be in [1, max_tokens = ",
                max_tokens, "]");
        require(ws.bytes >= workspace_bytes(1, L), "workspace too small for self-attention prefill: has ", ws.bytes,
                " bytes, needs ", workspace_bytes(1, L));
        workspace_arena arena(ws);
        const auto b = layout(arena, L, config_.num_heads * L);
        project_qkv(ctx, L, L, 0, normed, b);
        const auto width = static_cast<std::size_t>(config_.kv_width());
        cache.capacity = max_tokens;
        cache.keys.resize(static_cast<std::size_t>(checked_mul(max_tokens, config_.kv_width(), "self_attention: KV cache elements max_tokens * num_kv_heads * head_dim")));
        cache.values.resize(cache.keys.size());
        traits::copy(ctx, b.k, cache.keys.data(), static_cast<std::size_t>(L) * width);
        traits::copy(ctx, b.v, cache.values.data(), static_cast<std::size_t>(L) * width);
        cache.length = L;
        kernels::cpu::causal_gqa_attention(shape(), 1, L, b.q, b.k, b.v, b.o, b.scores);
        traits::gemm_nt(ctx, L, d_model_, config_.q_width(), b.o, config_.q_width(), o_proj_.data(), config_.q_width(), out,
                        d_model_);
    }

    // One token at position cache.length: appends its key and value, attends over the cache.
    void step(const context& ctx, const T* normed, T* out, workspace_span ws, cache_type& cache) const {
        require(cache.length > 0 && cache.length < cache.capacity, "self_attention::step: the KV cache holds ", cache.length,
                " of ", cache.capacity, " tokens (prefill first; a step past max_tokens is refused)");
        require(ws.bytes >= step_workspace_bytes(cache.capacity), "workspace too small for a self-attention step: has ",
                ws.bytes, " bytes, needs ", step_workspace_bytes(cache.capacity));
        workspace_arena arena(ws);
        const auto b = layout(arena, 1, config_.num_heads * cache.capacity);
        project_qkv(ctx, 1, 1, cache.length, normed, b);
        const auto width = static_cast<std::size_t>(config_.kv_width());
        const auto at = static_cast<std::size_t>(cache.length) * width;
        traits::copy(ctx, b.k, cache.keys.data() + at, width);
        traits::copy(ctx, b.v, cache.values.data() + at, width);
        ++cache.length;
        kernels::cpu::decode_gqa_attention(shape(), cache.length, b.q, cache.keys.data(), cache.values.data(), b.o, b.scores);
        traits::gemm_nt(ctx, 1, d_model_, config_.q_width(), b.o, config_.q_width(), o_proj_.data(), config_.q_width(), out,
                        d_model_);
    }

private:
    struct buffers {
        T* q;  // (rows, H hd)
        T* k;  // (rows, KV hd)
        T* v;  // (rows, KV hd)
        T* o;  // (rows, H hd)
        compute_t<T>* scores;  // one row of softmax weights per (sequence, head)
    };
    buffers layout(workspace_arena& arena, index_t rows, index_t score_entries) const {
        const auto n = static_cast<std::size_t>(rows);
        const auto qw = static_cast<std::size_t>(config_.q_width()), kvw = static_cast<std::size_t>(config_.kv_width());
        return {arena.take<T>(n * qw), arena.take<T>(n * kvw), arena.take<T>(n * kvw), arena.take<T>(n * qw),
                arena.take<compute_t<T>>(static_cast<std::size_t>(score_entries))};
    }
    kernels::cpu::gqa_shape shape() const {
        return {config_.num_heads, config_.num_kv_heads, config_.head_dim, config_.rotary_dim, config_.rope_theta,
                config_.softmax_scale()};
    }
    void project_qkv(const context& ctx, index_t rows, index_t seqlen, index_t first_position, const T* normed,
                     const buffers& b) const {
        const index_t qw = config_.q_width(), kvw = config_.kv_width();
        traits::gemm_nt(ctx, rows, qw, d_model_, normed, d_model_, q_proj_.data(), d_model_, b.q, qw);
        traits::gemm_nt(ctx, rows, kvw, d_model_, normed, d_model_, k_proj_.data(), d_model_, b.k, kvw);
        traits::gemm_nt(ctx, rows, kvw, d_model_, normed, d_model_, v_proj_.data(), d_model_, b.v, kvw);
        kernels::cpu::rope_rows(b.q, rows, seqlen, first_position, config_.num_heads, config_.head_dim, qw,
                                config_.rotary_dim, config_.rope_theta);
        kernels::cpu::rope_rows(b.k, rows, seqlen, first_position, config_.num_kv_heads, config_.head_dim, kvw,
                                config_.rotary_dim, config_.rope_theta);
    }

    self_attention_config config_;
    index_t d_model_;
    buffer q_proj_, k_proj_, v_proj_, o_proj_;
};

}  // namespace transmamba
