#pragma once
// An inference session: one sequence of a language model, decoded token by token (SPEC.md section
// 5). prefill() runs one forward pass over the prompt and keeps each layer's decoding state; step()
// then feeds one token at a time. Below a layer's TransPoint the layer appends to its KV cache and
// attends; at the TransPoint the Memory Converter turns the cache into the SSM state and the cache
// is freed; from there on each step costs O(1) time and memory. Several sessions may share one
// model (a batch of sequences of different lengths is several sessions).
//
// The bound max_tokens (prompt plus generated tokens):
//   - the TransPoints are resolved once, with the sequence length taken as max_tokens, so a
//     fraction-of-length policy is a fraction of max_tokens; any other P does not depend on it.
//     A P at or above max_tokens means attention for the whole session: it is never converted,
//     since no position reaches it;
//   - step() at position max_tokens is an error naming both numbers (the logits would otherwise be
//     those of another schedule);
//   - memory is sized by what each layer caches, min(P, max_tokens) tokens of keys, values and dt,
//     never by max_tokens itself: a pure-SSM session (every P = 0) of 3e9 tokens holds its states,
//     its conv windows and a workspace for one token.
// Up to max_tokens, prefill + steps give the logits of one forward pass over the same tokens.
#include <cstdint>
#include <span>
#include <vector>

#include "transmamba/backend/traits.hpp"
#include "transmamba/block/mixer.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/transpoint.hpp"

namespace transmamba {

template <class Model>
class inference_session {
public:
    using T = typename Model::value_type;
    using Backend = typename Model::backend;
    using logits_type = typename Model::logits_type;
    using traits = backend_traits<Backend>;
    using context = typename traits::context;

    // `max_tokens` bounds prompt plus generated tokens (the rules are at the top of this file).
    template <transpoint_policy Policy>
    inference_session(const Model& model, const Policy& policy, index_t max_tokens, const context& ctx = {})
        : model_(model), max_tokens_(max_tokens), ctx_(ctx) {
        require(max_tokens > 0, "inference_session: max_tokens must be positive, got ", max_tokens);
        points_.resize(static_cast<std::size_t>(model.num_transpoint_layers()));
        for (index_t i = 0; i < model.num_transpoint_layers(); ++i)
            points_[std::size_t(i)] = resolve_transpoint(policy, i, max_tokens);
        cache_tokens_ = model.backbone().cache_capacity(per_layer_transpoints(points_), max_tokens);
        logits_host_.resize(static_cast<std::size_t>(model.vocab_size()));
    }

    index_t position() const { return position_; }
    index_t max_tokens() const { return max_tokens_; }
    // The TransPoint each TransMamba layer runs at in this session: the policy's P at sequence
    // length max_tokens, capped at max_tokens (which means attention for the whole session).
    const std::vector<index_t>& transpoints() const { return points_; }
    // The most tokens a layer's KV cache holds in this session: max over layers of min(P, max_tokens).
    index_t cache_tokens() const { return cache_tokens_; }
    // Bytes of the session's scratch memory (its workspace, grown by the calls so far).
    std::size_t workspace_bytes() const { return ws_.capacity(); }
    // Bytes held by the layers' decoding states (conv windows, KV caches, SSM states).
    std::size_t state_bytes() const {
        std::size_t n = 0;
        for (const auto& s : state_.layers)
            n += s.window.size() * sizeof(s.window.data()[0]) + s.keys.size() * sizeof(T) + s.values.size() * sizeof(T) +
                 s.dts.size() * sizeof(s.dts.data()[0]) + s.state.size() * sizeof(s.state.data()[0]);
        for (const auto& c : state_.attention) n += (c.keys.size() + c.values.size()) * sizeof(T);  // hybrids' attention layers
        return n;
    }
    // The part of state_bytes() in the KV caches (keys, values, dt of the layers below their TransPoint).
    std::size_t kv_cache_bytes() const {
        std::size_t n = 0;
        for (const auto& s : state_.layers)
            n += s.keys.size() * sizeof(T) + s.values.size() * sizeof(T) + s.dts.size() * sizeof(s.dts.data()[0]);
        return n;
    }
    // The SSM state of TransMamba layer `layer`, (nheads, headdim, d_state) in the backend's memory:
    // after prefill, the state after the last prompt token (the converter's state if the prompt
    // ends before the layer's TransPoint).
    const auto& layer_state(index_t layer) const { return state_.layers.at(static_cast<std::size_t>(layer)).state; }

    // Runs the prompt; returns the logits of its last token (host memory, valid until the next
    // call). With all_logits, every prompt position's logits are copied to `all` (L x vocab).
    std::span<const logits_type> prefill(std::span<const std::int64_t> prompt, std::vector<logits_type>* all = nullptr) {
        const auto L = static_cast<index_t>(prompt.size());
        require(L > 0, "inference_session: the prompt is empty");
        require(L <= max_tokens_, "inference_session: prompt of ", L, " tokens exceeds max_tokens = ", max_tokens_);
        model_.check_token_ids(tensor_view<const std::int64_t, 2>(prompt.data(), {1, L}));
        const index_t d = model_.d_model(), V = model_.vocab_size();
        const auto& stack = model_.backbone();
        workspace_arena measure;
        layout(measure, L);
        workspace_arena arena(ws_.reserve(measure.used()));
        const auto b = layout(arena, L);
        traits::copy_from_host(prompt.data(), b.ids, prompt.size(), ctx_);
        model_.embed(ctx_, L, b.ids, b.embedded);
        stack.prefill(tensor_view<const T, 3>(b.embedded, {1, L, d}), tensor_view<T, 3>(b.hidden, {1, L, d}),
                      per_layer_transpoints(points_), max_tokens_, b.inner, state_, ctx_);
        const index_t rows = all ? L : 1;
        model_.project(ctx_, rows, b.hidden + (L - rows) * d, b.logits);
        if (all) {
            all->resize(static_cast<std::size_t>(L * V));
            traits::copy_to_host(b.logits, all->data(), all->size(), ctx_);
        }
        traits::copy_to_host(b.logits + (rows - 1) * V, logits_host_.data(), logits_host_.size(), ctx_);
        traits::synchronize(ctx_);
        position_ = L;
        return logits_host_;
    }

    // Feeds one token; returns its logits (host memory, valid until the next call).
    std::span<const logits_type> step(std::int64_t token) {
        require(position_ > 0, "inference_session: step() before prefill()");
        require(position_ < max_tokens_, "inference_session: step() at position ", position_, " exceeds max_tokens = ",
                max_tokens_, " (the session holds at most max_tokens tokens; start one with a larger bound)");
        model_.check_token_ids(tensor_view<const std::int64_t, 2>(&token, {1, 1}));
        const index_t d = model_.d_model();
        workspace_arena measure;
        layout(measure, 1);
        workspace_arena arena(ws_.reserve(measure.used()));
        const auto b = layout(arena, 1);
        traits::copy_from_host(&token, b.ids, 1, ctx_);
        model_.embed(ctx_, 1, b.ids, b.hidden);
        model_.backbone().step(tensor_view<T, 1>(b.hidden, {d}), b.inner, state_, ctx_);
        model_.project(ctx_, 1, b.hidden, b.logits);
        traits::copy_to_host(b.logits, logits_host_.data(), logits_host_.size(), ctx_);
        traits::synchronize(ctx_);
        ++position_;
        return logits_host_;
    }

private:
    struct buffers {
        std::int64_t* ids;
        T* embedded;
        T* hidden;
        logits_type* logits;
        workspace_span inner;
    };
    // The stack's decode workspace is sized for this call's rows and the KV caches' capacity (not
    // max_tokens), so a workspace reserved at prefill serves every later step.
    buffers layout(workspace_arena& arena, index_t rows) const {
        const auto d = static_cast<std::size_t>(model_.d_model()), n = static_cast<std::size_t>(rows);
        buffers b{arena.take<std::int64_t>(n), arena.take<T>(n * d), arena.take<T>(n * d),
                  arena.take<logits_type>(n * static_cast<std::size_t>(model_.vocab_size())), {}};
        const std::size_t inner = model_.backbone().decode_workspace_bytes(rows, cache_tokens_);
        b.inner = {arena.take<std::byte>(inner), arena.measuring() ? 0 : inner};
        return b;
    }

    const Model& model_;
    index_t max_tokens_;
    index_t cache_tokens_ = 0;
    context ctx_;
    std::vector<index_t> points_;
    typename Model::stack_type::decode_state state_;
    workspace<Backend> ws_;
    std::vector<logits_type> logits_host_;
    index_t position_ = 0;
};

}  // namespace transmamba
