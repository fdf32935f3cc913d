#pragma once
// A stack of blocks whose types are chosen at compile time (SPEC.md section 7): a layer pattern is
// repeated num_layers times and followed by the final RMSNorm (norm_f). Mamba2 checkpoints are the
// pattern <transmamba_layer>; the paper's models <transmamba_layer, mlp_layer> (1:1). Layer-level
// hybrid checkpoints (Nemotron-H, Bamba, Granite) are the pattern <hybrid_layer>, whose layers take
// their kinds from model_config::hybrid at run time (block/hybrid_block.hpp).
#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "transmamba/block/block.hpp"
#include "transmamba/block/hybrid_block.hpp"
#include "transmamba/policy/transpoint.hpp"

namespace transmamba {

// Layer kinds: a kind binds the value type and backend of the stack to a block type.
template <class Policies = paper_policies>
struct transmamba_layer {
    template <class T, class Backend>
    using block = mixer_block<T, Backend, Policies>;
};
struct mlp_layer {
    template <class T, class Backend>
    using block = mlp_block<T, Backend>;
};

// One layer of a layer-level hybrid: a Mamba2 mixer, self-attention or neither, and an MLP or
// not, as model_config::hybrid says for its index.
template <class Policies = paper_policies>
struct hybrid_layer {
    template <class T, class Backend>
    using block = hybrid_block<T, Backend, Policies>;
};

template <class... Kinds>
struct layer_pattern {};

using mamba2_pattern = layer_pattern<transmamba_layer<>>;
using paper_pattern = layer_pattern<transmamba_layer<>, mlp_layer>;
using hybrid_pattern = layer_pattern<hybrid_layer<>>;

// Blocks whose kind is chosen per layer at run time (hybrid_block).
template <class Block>
concept per_layer_block = requires { Block::kind_per_layer; };

template <class T, class Backend, class Pattern>
class stack;

template <class T, class Backend, class... Kinds>
class stack<T, Backend, layer_pattern<Kinds...>> {
public:
    using value_type = T;
    using backend = Backend;
    using group = std::tuple<typename Kinds::template block<T, Backend>...>;
    using context = typename backend_traits<Backend>::context;
    // Blocks that take a TransPoint ("TransMamba layers") per repeat of the pattern.
    static constexpr index_t transpoint_layers_per_group =
        (index_t(0) + ... + index_t(Kinds::template block<T, Backend>::has_transpoint));
    // A hybrid stack is the one-kind pattern <hybrid_layer>: layer i is block i.
    static constexpr bool is_hybrid = (per_layer_block<typename Kinds::template block<T, Backend>> || ...);
    static_assert(!is_hybrid || sizeof...(Kinds) == 1, "a hybrid_layer pattern holds hybrid_layer alone");

    explicit stack(const model_config& cfg) : config_(cfg) {
        cfg.validate();
        if constexpr (is_hybrid) {
            require(cfg.hybrid.enabled(), "a hybrid_layer stack needs model_config::hybrid (one entry per layer)");
        } else {
            require(!cfg.hybrid.enabled(), "model_config::hybrid describes a layer-level hybrid: build it with hybrid_pattern");
        }
        groups_.reserve(static_cast<std::size_t>(cfg.num_layers));
        for (index_t i = 0; i < cfg.num_layers; ++i) {
            if constexpr (is_hybrid)
                groups_.emplace_back(typename Kinds::template block<T, Backend>(cfg, i)...);
            else
                groups_.emplace_back(typename Kinds::template block<T, Backend>(cfg)...);
        }
        if constexpr (is_hybrid) {
            transpoint_layers_ = cfg.hybrid.mamba2_layers();
            attention_layers_ = cfg.hybrid.attention_layers();
        } else {
            transpoint_layers_ = cfg.num_layers * transpoint_layers_per_group;
        }
        norm_f_.resize(cfg.mixer.d_model);
    }

    const model_config& config() const { return config_; }
    index_t num_blocks() const { return config_.num_layers * index_t(sizeof...(Kinds)); }
    // How many blocks take a TransPoint: the layer indices a TransPoint policy is asked about.
    index_t num_transpoint_layers() const { return transpoint_layers_; }
    // How many layers are self-attention layers with their own Q/K/V (hybrid stacks only).
    index_t num_attention_layers() const { return attention_layers_; }
    group& layer_group(index_t i) { return groups_.at(static_cast<std::size_t>(i)); }
    const group& layer_group(index_t i) const { return groups_.at(static_cast<std::size_t>(i)); }
    // (d_model): the final RMSNorm's weight.
    const typename backend_traits<Backend>::template buffer<T>& norm_f() const { return norm_f_; }

    // Every parameter with its checkpoint name ("layers.{i}.mixer.in_proj.weight", ...,
    // "norm_f.weight"); block i counts blocks of every kind in order.
    template <class F>
    void for_each_parameter(F&& f) {
        index_t block_index = 0;
        auto visit = [&](auto& block) {
            const std::string prefix = "layers." + std::to_string(block_index++) + ".";
            block.for_each_parameter([&](std::string_view name, auto& buf, const std::vector<index_t>& shape) {
                f(prefix + std::string(name), buf, shape);
            });
        };
        for (auto& g : groups_) std::apply([&](auto&... blocks) { (visit(blocks), ...); }, g);
        f(std::string("norm_f.weight"), norm_f_, std::vector<index_t>{config_.mixer.d_model});
    }

    std::size_t workspace_bytes(index_t batch, index_t L) const {
        std::size_t most = 0;
        // A hybrid's layers differ; every other pattern repeats the first group.
        const std::size_t groups = is_hybrid ? groups_.size() : 1;
        for (std::size_t i = 0; i < groups; ++i)
            std::apply([&](const auto&... blocks) { ((most = std::max(most, blocks.workspace_bytes(batch, L))), ...); },
                       groups_[i]);
        return most;
    }

    // out = norm_f(blocks(u)); the TransMamba layer with index i (counting only blocks that take a
    // TransPoint) runs at P = resolve_transpoint(policy, i, L).
    template <transpoint_policy Policy>
    void forward(tensor_view<const T, 3> u, tensor_view<T, 3> out, const Policy& policy, workspace_span ws,
                 const context& ctx = {}) const {
        const index_t batch = u.extent(0), L = u.extent(1), d = config_.mixer.d_model;
        expect_shape(u, "u", {batch, L, d});
        expect_shape(out, "out", {batch, L, d});
        expect_contiguous(u, "u");
        expect_contiguous(out, "out");
        require(ws.bytes >= workspace_bytes(batch, L), "workspace too small for the stack: has ", ws.bytes,
                " bytes, needs ", workspace_bytes(batch, L));
        // Resolve every layer's P first, so that a bad policy fails before anything is written.
        std::vector<index_t> points(static_cast<std::size_t>(num_transpoint_layers()));
        for (index_t i = 0; i < num_transpoint_layers(); ++i) points[std::size_t(i)] = resolve_transpoint(policy, i, L);

        using traits = backend_traits<Backend>;
        traits::copy(ctx, u.data(), out.data(), static_cast<std::size_t>(u.size()));
        index_t layer = 0;
        for (const auto& g : groups_) {
            std::apply([&](const auto&... blocks) {
                (run_block(blocks, out, points, layer, ws, ctx), ...);
            }, g);
        }
        (void)layer;
        block_kernel<Backend>::rmsnorm(ctx, batch * L, d, out.data(), norm_f_.data(), config_.mixer.norm_eps, out.data());
    }

    template <transpoint_policy Policy>
    void forward(tensor_view<const T, 3> u, tensor_view<T, 3> out, const Policy& policy, workspace<Backend>& ws,
                 const context& ctx = {}) const {
        forward(u, out, policy, ws.reserve(workspace_bytes(u.extent(0), u.extent(1))), ctx);
    }

    std::size_t workspace_bytes(const sequence_layout& seqs) const {
        std::size_t most = 0;
        std::apply([&](const auto&... blocks) { ((most = std::max(most, blocks.workspace_bytes(seqs))), ...); },
                   groups_.front());
        return most;
    }

    // A packed batch (core/sequence_layout.hpp): u (1, total, d_model) holds the sequences back to
    // back, sequence s at rows [cu_seqlens[s], cu_seqlens[s+1]). TransMamba layer i runs sequence s
    // at P = resolve_transpoint(policy, i, length of s), counted from the sequence's start, so every
    // sequence's rows of `out` are those of forward() over that sequence alone.
    template <transpoint_policy Policy>
    void forward(tensor_view<const T, 3> u, tensor_view<T, 3> out, std::span<const index_t> cu_seqlens,
                 const Policy& policy, workspace_span ws, const context& ctx = {}) const {
        const auto seqs = sequence_layout::packed(cu_seqlens);
        const index_t total = seqs.rows(), d = config_.mixer.d_model, count = seqs.count();
        expect_shape(u, "u", {1, total, d});
        expect_shape(out, "out", {1, total, d});
        expect_contiguous(u, "u");
        expect_contiguous(out, "out");
        require(ws.bytes >= workspace_bytes(seqs), "workspace too small for the stack: has ", ws.bytes,
                " bytes, needs ", workspace_bytes(seqs));
        std::vector<index_t> points(static_cast<std::size_t>(num_transpoint_layers() * count));
        for (index_t i = 0; i < num_transpoint_layers(); ++i)
            for (index_t q = 0; q < count; ++q) points[std::size_t(i * count + q)] = resolve_transpoint(policy, i, seqs.length(q));
        backend_traits<Backend>::copy(ctx, u.data(), out.data(), static_cast<std::size_t>(u.size()));
        index_t layer = 0;
        for (const auto& g : groups_) {
            std::apply([&](const auto&... blocks) {
                (run_block_packed(blocks, out, seqs, points, layer, ws, ctx), ...);
            }, g);
        }
        block_kernel<Backend>::rmsnorm(ctx, total, d, out.data(), norm_f_.data(), config_.mixer.norm_eps, out.data());
    }
    template <transpoint_policy Policy>
    void forward(tensor_view<const T, 3> u, tensor_view<T, 3> out, std::span<const index_t> cu_seqlens,
                 const Policy& policy, workspace<Backend>& ws, const context& ctx = {}) const {
        forward(u, out, cu_seqlens, policy, ws.reserve(workspace_bytes(sequence_layout::packed(cu_seqlens))), ctx);
    }

    // ---- Decoding one sequence -------------------------------------------------------------------
    // Each TransMamba layer keeps its mixer's decode state; the TransPoints are resolved once, with
    // the sequence length taken as max_tokens: a fraction-of-length policy means a fraction of the
    // whole generation, and a P at or above max_tokens means attention for the whole sequence (it
    // is read as max_tokens, and no position reaches it: step() refuses to go past max_tokens). So
    // prefill + steps equal one forward pass over the same tokens with the same policy, up to
    // max_tokens tokens, and no layer ever changes mechanism because of the bound.
    struct decode_state {
        std::vector<mixer_decode_state<T, Backend>> layers;  // one per TransMamba (Mamba2) layer
        std::vector<self_attention_cache<T, Backend>> attention;  // one per attention layer (hybrids)
        index_t position = 0;    // tokens consumed so far
        index_t max_tokens = 0;  // the bound prefill() was given
    };

    // The most tokens any layer's KV cache holds in a sequence of at most max_tokens tokens:
    // max over layers of min(P, max_tokens). 0 when every layer is an SSM layer from the start.
    template <transpoint_policy Policy>
    index_t cache_capacity(const Policy& policy, index_t max_tokens) const {
        index_t most = attention_layers_ > 0 ? max_tokens : 0;  // an attention layer caches every token
        for (index_t i = 0; i < num_transpoint_layers(); ++i) most = std::max(most, resolve_transpoint(policy, i, max_tokens));
        return std::min(most, max_tokens);
    }

    // Workspace for prefill() over `prompt_len` tokens and every later step(), when no layer's KV
    // cache holds more than `cache_tokens` tokens (cache_capacity(); max_tokens is always enough).
    // It does not grow with max_tokens itself: a pure-SSM session of any length needs the same.
    std::size_t decode_workspace_bytes(index_t prompt_len, index_t cache_tokens) const {
        std::size_t most = workspace_arena::alignment;
        const std::size_t groups = is_hybrid ? groups_.size() : 1;
        for (std::size_t i = 0; i < groups; ++i)
            std::apply([&](const auto&... blocks) {
                ((most = std::max(most, block_decode_bytes(blocks, prompt_len, cache_tokens))), ...);
            }, groups_[i]);
        return most;
    }

    template <transpoint_policy Policy>
    void prefill(tensor_view<const T, 3> u, tensor_view<T, 3> out, const Policy& policy, index_t max_tokens,
                 workspace_span ws, decode_state& st, const context& ctx = {}) const {
        const index_t L = u.extent(1), d = config_.mixer.d_model;
        expect_shape(u, "u", {1, L, d});
        expect_shape(out, "out", {1, L, d});
        require(L >= 1 && L <= max_tokens, "prompt of ", L, " tokens must be in [1, max_tokens = ", max_tokens, "]");
        std::vector<index_t> points(static_cast<std::size_t>(num_transpoint_layers()));
        for (index_t i = 0; i < num_transpoint_layers(); ++i)
            points[std::size_t(i)] = resolve_transpoint(policy, i, max_tokens);
        st.layers.resize(points.size());
        st.attention.clear();
        st.attention.resize(static_cast<std::size_t>(attention_layers_));
        st.position = 0;
        st.max_tokens = max_tokens;
        backend_traits<Backend>::copy(ctx, u.data(), out.data(), static_cast<std::size_t>(u.size()));
        layer_counters at;
        for (const auto& g : groups_)
            std::apply([&](const auto&... blocks) {
                (prefill_block(blocks, out, points, max_tokens, at, ws, st, ctx), ...);
            }, g);
        block_kernel<Backend>::rmsnorm(ctx, L, d, out.data(), norm_f_.data(), config_.mixer.norm_eps, out.data());
        st.position = L;
    }

    // hidden (d_model) of the next token -> the normalised output (d_model), in place. A step past
    // max_tokens is an error: the TransPoints were resolved for at most max_tokens tokens.
    void step(tensor_view<T, 1> hidden, workspace_span ws, decode_state& st, const context& ctx = {}) const {
        const index_t d = config_.mixer.d_model;
        expect_shape(hidden, "hidden", {d});
        require(static_cast<index_t>(st.layers.size()) == num_transpoint_layers() &&
                    static_cast<index_t>(st.attention.size()) == attention_layers_ && st.position > 0,
                "decode_state was not prepared by prefill() for this stack");
        require(st.position < st.max_tokens, "decoding step at position ", st.position, " would exceed max_tokens = ",
                st.max_tokens, " (the bound the TransPoints were resolved for); start a session with a larger max_tokens");
        layer_counters at;
        for (const auto& g : groups_)
            std::apply([&](const auto&... blocks) { (step_block(blocks, hidden, at, ws, st, ctx), ...); }, g);
        block_kernel<Backend>::rmsnorm(ctx, 1, d, hidden.data(), norm_f_.data(), config_.mixer.norm_eps, hidden.data());
        ++st.position;
    }

    // ---- Batched decoding: one token for each of n sequences ---------------------------------------
    // hidden (n, d_model): row r the next token of the sequence whose state is *states[r] (each
    // prepared by prefill(), each at its own position and TransPoints, KV caches paged: see
    // mixer::step_batch) -> the normalised outputs, in place. `cache_tokens` bounds every row's
    // cached tokens after this step (the workspace's attention scratch is sized by it).
    std::size_t batch_step_workspace_bytes(index_t n, index_t cache_tokens) const {
        std::size_t most = workspace_arena::alignment;
        std::apply([&](const auto&... blocks) {
            ((most = std::max(most, block_batch_bytes(blocks, n, cache_tokens))), ...);
        }, groups_.front());
        return most;
    }
    void step_batch(tensor_view<T, 2> hidden, workspace_span ws, std::span<decode_state* const> states,
                    index_t cache_tokens, const context& ctx = {}) const {
        const index_t n = hidden.extent(0), d = config_.mixer.d_model;
        expect_shape(hidden, "hidden", {n, d});
        require(static_cast<index_t>(states.size()) == n, "batched step: ", n, " rows for ", states.size(), " states");
        for (index_t r = 0; r < n; ++r) {
            const decode_state& st = *states[std::size_t(r)];
            require(static_cast<index_t>(st.layers.size()) == num_transpoint_layers() && st.position > 0,
                    "decode_state of row ", r, " was not prepared by prefill() for this stack");
            require(st.position < st.max_tokens, "decoding step of row ", r, " at position ", st.position,
                    " would exceed its max_tokens = ", st.max_tokens);
        }
        std::vector<mixer_decode_state<T, Backend>*> layer_states(static_cast<std::size_t>(n));
        index_t layer = 0;
        auto run = [&](const auto& block) {
            using Block = std::decay_t<decltype(block)>;
            if constexpr (Block::has_transpoint) {
                for (index_t r = 0; r < n; ++r)
                    layer_states[std::size_t(r)] = &states[std::size_t(r)]->layers[std::size_t(layer)];
                ++layer;
                block.step_batch(hidden, ws, std::span<mixer_decode_state<T, Backend>* const>(layer_states), cache_tokens,
                                 ctx);
            } else {
                block.forward(tensor_view<T, 3>(hidden.data(), {1, n, d}), 0, ws, ctx);
            }
        };
        for (const auto& g : groups_) std::apply([&](const auto&... blocks) { (run(blocks), ...); }, g);
        block_kernel<Backend>::rmsnorm(ctx, n, d, hidden.data(), norm_f_.data(), config_.mixer.norm_eps, hidden.data());
        for (auto* st : states) ++st->position;
    }

private:
    // The next TransMamba layer's and the next attention layer's index while walking the blocks.
    struct layer_counters {
        index_t transpoint = 0;
        index_t attention = 0;
    };
    // A hybrid layer's decode states: its Mamba2 state or its KV cache (null when it has none).
    template <class Block>
    static void with_hybrid_states(const Block& block, layer_counters& at, decode_state& st, auto&& body) {
        auto* m = block.takes_transpoint() ? &st.layers[static_cast<std::size_t>(at.transpoint)] : nullptr;
        auto* a = block.has_attention() ? &st.attention[static_cast<std::size_t>(at.attention)] : nullptr;
        body(m, a, at.transpoint);
        at.transpoint += block.takes_transpoint();
        at.attention += block.has_attention();
    }

    template <class Block>
    static std::size_t block_decode_bytes(const Block& block, index_t prompt_len, index_t cache_tokens) {
        if constexpr (Block::has_transpoint) return block.decode_workspace_bytes(prompt_len, cache_tokens);
        else return block.workspace_bytes(1, prompt_len);
    }
    template <class Block>
    static std::size_t block_batch_bytes(const Block& block, index_t n, index_t cache_tokens) {
        if constexpr (Block::has_transpoint) return block.batch_step_workspace_bytes(n, cache_tokens);
        else return block.workspace_bytes(1, n);
    }
    template <class Block>
    static void prefill_block(const Block& block, tensor_view<T, 3> hidden, const std::vector<index_t>& points,
                              index_t max_tokens, layer_counters& at, workspace_span ws, decode_state& st,
                              const context& ctx) {
        if constexpr (per_layer_block<Block>) {
            with_hybrid_states(block, at, st, [&](auto* m, auto* a, index_t i) {
                const index_t P = block.takes_transpoint() ? points[static_cast<std::size_t>(i)] : 0;
                block.prefill(hidden, P, max_tokens, ws, m, a, ctx);
            });
        } else if constexpr (Block::has_transpoint) {
            const auto i = static_cast<std::size_t>(at.transpoint++);
            block.prefill(hidden, points[i], max_tokens, ws, st.layers[i], ctx);
        } else {
            block.forward(hidden, 0, ws, ctx);
        }
    }
    template <class Block>
    static void step_block(const Block& block, tensor_view<T, 1> hidden, layer_counters& at, workspace_span ws,
                           decode_state& st, const context& ctx) {
        if constexpr (per_layer_block<Block>) {
            with_hybrid_states(block, at, st, [&](auto* m, auto* a, index_t) { block.step(hidden, ws, m, a, ctx); });
        } else if constexpr (Block::has_transpoint) {
            block.step(hidden, ws, st.layers[static_cast<std::size_t>(at.transpoint++)], ctx);
        } else {
            block.forward(tensor_view<T, 3>(hidden.data(), {1, 1, hidden.extent(0)}), 0, ws, ctx);
        }
    }

    template <class Block>
    static void run_block_packed(const Block& block, tensor_view<T, 3> hidden, const sequence_layout& seqs,
                                 const std::vector<index_t>& points, index_t& layer, workspace_span ws,
                                 const context& ctx) {
        if constexpr (Block::has_transpoint) {
            const auto first = static_cast<std::size_t>(layer++ * seqs.count());
            block.forward(hidden, seqs.split_at(std::span<const index_t>(points.data() + first,
                                                                         static_cast<std::size_t>(seqs.count()))),
                          ws, {}, ctx);
        } else {
            block.forward(hidden, 0, ws, ctx);
        }
    }
    template <class Block>
    static void run_block(const Block& block, tensor_view<T, 3> hidden, const std::vector<index_t>& points,
                          index_t& layer, workspace_span ws, const context& ctx) {
        if constexpr (per_layer_block<Block>) {
            const index_t P = block.takes_transpoint() ? points[static_cast<std::size_t>(layer++)] : 0;
            block.forward(hidden, P, ws, ctx);
        } else if constexpr (Block::has_transpoint) {
            block.forward(hidden, points[static_cast<std::size_t>(layer++)], ws, {}, ctx);
        } else {
            block.forward(hidden, 0, ws, ctx);
        }
    }

    model_config config_;
    std::vector<group> groups_;
    index_t transpoint_layers_ = 0;
    index_t attention_layers_ = 0;
    typename backend_traits<Backend>::template buffer<T> norm_f_;
};

}  // namespace transmamba
