#pragma once
// Batched decoding with continuous batching: many sequences of one language model decoded at once,
// each at its own length and TransPoint stage, joining and leaving between steps.
//
//   inference_batch batch(model, policy, {/*page_tokens=*/16});
//   auto a = batch.join(prompt_a, /*max_tokens=*/256);   // its prefill; batch.logits(a) = last prompt token's
//   auto b = batch.join(prompt_b, 64);
//   auto rows = batch.step(ids{a, b}, tokens{ta, tb});   // one token each: rows (2, vocab), in that order
//   batch.leave(a);                                       // its KV pages go back to the pool
//
// Every sequence follows the rules of inference_session (decode/session.hpp): its TransPoints are
// resolved at its own max_tokens, a step past max_tokens is an error, and its logits equal, token by
// token, those of a session decoding it alone (tests/decode/test_batch.cpp). What differs is how:
//   - a step runs the projections, the norms, the MLPs and the LM head as GEMMs over all the
//     sequences' rows, and the attention or SSM step per sequence (mixer::step_batch);
//   - the KV caches are pages of `page_tokens` tokens from one pool (decode/kv_page_pool.hpp): a
//     sequence takes a page when its cache crosses a page boundary and gives its pages back when a
//     layer passes its TransPoint or when it leaves, and the pool reuses released pages, so the
//     memory in use follows the tokens cached, not max_tokens;
//   - join() runs the prompt through stack::prefill (one forward pass, as a session does), whose
//     contiguous cache of the prompt's tokens is copied into pages and freed before join() returns.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <vector>

#include "transmamba/backend/traits.hpp"
#include "transmamba/block/mixer.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/decode/kv_page_pool.hpp"
#include "transmamba/policy/transpoint.hpp"

namespace transmamba {

struct batch_options {
    index_t page_tokens = 16;  // tokens per KV page
    index_t max_pages = 0;     // pages the pool may hold in use at once; 0: no limit
};

template <class Model>
class inference_batch {
public:
    using T = typename Model::value_type;
    using Backend = typename Model::backend;
    using logits_type = typename Model::logits_type;
    using traits = backend_traits<Backend>;
    using context = typename traits::context;
    using sequence_id = index_t;
    using pool_type = kv_page_pool<T, Backend>;

    template <transpoint_policy Policy>
    inference_batch(const Model& model, const Policy& policy, batch_options options = {}, const context& ctx = {})
        : model_(model),
          policy_([policy](index_t layer, index_t seqlen) { return resolve_transpoint(policy, layer, seqlen); }),
          pool_(model.backbone().config().mixer, options.page_tokens, options.max_pages),
          ctx_(ctx) {}

    // Adds a sequence and runs its prompt (1 <= prompt length <= max_tokens); returns its id. Its
    // logits after the last prompt token are logits(id).
    sequence_id join(std::span<const std::int64_t> prompt, index_t max_tokens) {
        const auto L = static_cast<index_t>(prompt.size());
        require(max_tokens > 0, "inference_batch: max_tokens must be positive, got ", max_tokens);
        require(L > 0, "inference_batch: the prompt is empty");
        require(L <= max_tokens, "inference_batch: prompt of ", L, " tokens exceeds max_tokens = ", max_tokens);
        model_.check_token_ids(tensor_view<const std::int64_t, 2>(prompt.data(), {1, L}));
        const auto& stack = model_.backbone();
        std::vector<index_t> points(static_cast<std::size_t>(model_.num_transpoint_layers()));
        for (index_t i = 0; i < model_.num_transpoint_layers(); ++i) points[std::size_t(i)] = policy_(i, max_tokens);
        const per_layer_transpoints schedule(points);
        // Pages for the prompt's cached tokens, checked before anything runs.
        index_t pages = 0;
        for (index_t P : points)
            if (L < P) pages += (L + pool_.page_tokens() - 1) / pool_.page_tokens();
        require(pool_.can_take(pages), "KV page pool exhausted: the prompt needs ", pages, " pages, ",
                pool_.pages_in_use(), " of ", pool_.max_pages(), " are in use");

        const index_t d = model_.d_model(), V = model_.vocab_size();
        const index_t cache = stack.cache_capacity(schedule, max_tokens);
        workspace_arena measure;
        io_layout(measure, L, stack.decode_workspace_bytes(L, cache));
        workspace_arena arena(ws_.reserve(measure.used()));
        const auto b = io_layout(arena, L, stack.decode_workspace_bytes(L, cache));
        sequence seq;
        traits::copy_from_host(prompt.data(), b.ids, prompt.size(), ctx_);
        model_.embed(ctx_, L, b.ids, b.embedded);
        stack.prefill(tensor_view<const T, 3>(b.embedded, {1, L, d}), tensor_view<T, 3>(b.hidden, {1, L, d}), schedule,
                      max_tokens, b.inner, seq.state, ctx_);
        model_.project(ctx_, 1, b.hidden + (L - 1) * d, b.logits);
        seq.logits.resize(static_cast<std::size_t>(V));
        traits::copy_to_host(b.logits, seq.logits.data(), seq.logits.size(), ctx_);
        // The prompt's cache into pages; the contiguous cache is freed.
        const auto& c = stack.config().mixer;
        const index_t gn = c.ngroups * c.d_state, hp = c.d_inner(), h = c.nheads();
        for (auto& st : seq.state.layers) {
            if (!st.converted) {
                for (index_t first = 0; first < L; first += pool_.page_tokens()) {
                    pool_.extend(st.paged);
                    const index_t rows = std::min(pool_.page_tokens(), L - first);
                    traits::copy(ctx_, st.keys.data() + first * gn, st.paged.keys.back(), static_cast<std::size_t>(rows * gn));
                    traits::copy(ctx_, st.values.data() + first * hp, st.paged.values.back(),
                                 static_cast<std::size_t>(rows * hp));
                    traits::copy(ctx_, st.dts.data() + first * h, st.paged.dts.back(), static_cast<std::size_t>(rows * h));
                }
            }
            st.release_cache();
        }
        traits::synchronize(ctx_);
        const sequence_id id = next_id_++;
        sequences_.emplace(id, std::move(seq));
        return id;
    }

    // Removes a sequence; its pages go back to the pool.
    void leave(sequence_id id) {
        auto& seq = find(id);
        for (auto& st : seq.state.layers) pool_.release(st.paged);
        sequences_.erase(id);
    }

    // One token for each listed sequence (each at most once, in any order); returns their logits,
    // (ids.size(), vocab) in host memory, row r for ids[r], valid until the next call. Everything is
    // checked before any sequence advances.
    std::span<const logits_type> step(std::span<const sequence_id> ids, std::span<const std::int64_t> tokens) {
        const auto n = static_cast<index_t>(ids.size());
        require(n > 0, "inference_batch: step() needs at least one sequence");
        require(tokens.size() == ids.size(), "inference_batch: step() got ", ids.size(), " sequence ids and ",
                tokens.size(), " tokens");
        model_.check_token_ids(tensor_view<const std::int64_t, 2>(tokens.data(), {1, n}));
        std::vector<decode_state*> states(static_cast<std::size_t>(n));
        std::vector<sequence*> listed(static_cast<std::size_t>(n));
        for (index_t r = 0; r < n; ++r) {
            sequence& seq = find(ids[std::size_t(r)]);
            for (index_t q = 0; q < r; ++q)
                require(listed[std::size_t(q)] != &seq, "inference_batch: sequence ", ids[std::size_t(r)],
                        " is listed twice in one step");
            require(seq.state.position < seq.state.max_tokens, "inference_batch: step of sequence ", ids[std::size_t(r)],
                    " at position ", seq.state.position, " exceeds its max_tokens = ", seq.state.max_tokens,
                    " (join it with a larger bound)");
            listed[std::size_t(r)] = &seq;
            states[std::size_t(r)] = &seq.state;
        }
        // A page for each cache that crosses a page boundary with this token, all or none.
        index_t pages = 0, cache_tokens = 1;
        for (auto* st : states)
            for (const auto& layer : st->layers)
                if (st->position < layer.transpoint) {
                    pages += needs_page(layer, st->position) ? 1 : 0;
                    cache_tokens = std::max(cache_tokens, st->position + 1);
                }
        require(pool_.can_take(pages), "KV page pool exhausted: this step needs ", pages, " more pages, ",
                pool_.pages_in_use(), " of ", pool_.max_pages(), " are in use (let sequences leave or raise max_pages)");
        for (auto* st : states)
            for (auto& layer : st->layers)
                if (st->position < layer.transpoint && needs_page(layer, st->position)) pool_.extend(layer.paged);

        const auto& stack = model_.backbone();
        const index_t d = model_.d_model(), V = model_.vocab_size();
        const std::size_t inner = stack.batch_step_workspace_bytes(n, cache_tokens);
        workspace_arena measure;
        io_layout(measure, n, inner);
        workspace_arena arena(ws_.reserve(measure.used()));
        const auto b = io_layout(arena, n, inner);
        traits::copy_from_host(tokens.data(), b.ids, tokens.size(), ctx_);
        model_.embed(ctx_, n, b.ids, b.hidden);
        stack.step_batch(tensor_view<T, 2>(b.hidden, {n, d}), b.inner, std::span<decode_state* const>(states),
                         cache_tokens, ctx_);
        model_.project(ctx_, n, b.hidden, b.logits);
        rows_.resize(static_cast<std::size_t>(n * V));
        traits::copy_to_host(b.logits, rows_.data(), rows_.size(), ctx_);
        traits::synchronize(ctx_);
        for (index_t r = 0; r < n; ++r) {
            sequence& seq = *listed[std::size_t(r)];
            std::copy_n(rows_.data() + r * V, V, seq.logits.data());
            for (auto& layer : seq.state.layers)  // past the TransPoint: the cache's pages go back
                if (layer.converted && layer.paged.pages() > 0) pool_.release(layer.paged);
        }
        return rows_;
    }

    // The latest logits of a sequence (after its prompt or its last step), host memory.
    std::span<const logits_type> logits(sequence_id id) const { return find(id).logits; }
    bool contains(sequence_id id) const { return sequences_.count(id) > 0; }
    index_t size() const { return static_cast<index_t>(sequences_.size()); }
    index_t position(sequence_id id) const { return find(id).state.position; }
    index_t max_tokens(sequence_id id) const { return find(id).state.max_tokens; }
    // The ids of the sequences in the batch, ascending.
    std::vector<sequence_id> ids() const {
        std::vector<sequence_id> out;
        for (const auto& [id, seq] : sequences_) out.push_back(id);
        return out;
    }
    const pool_type& pool() const { return pool_; }
    // Bytes of the sequences' own states (conv windows and SSM states) and of the pages in use.
    std::size_t state_bytes() const {
        std::size_t total = static_cast<std::size_t>(pool_.pages_in_use()) * pool_.page_bytes();
        for (const auto& [id, seq] : sequences_)
            for (const auto& s : seq.state.layers)
                total += s.window.size() * sizeof(s.window.data()[0]) + s.state.size() * sizeof(s.state.data()[0]);
        return total;
    }
    std::size_t workspace_bytes() const { return ws_.capacity(); }

private:
    using decode_state = typename Model::stack_type::decode_state;
    struct sequence {
        decode_state state;
        std::vector<logits_type> logits;
    };
    struct buffers {
        std::int64_t* ids;
        T* embedded;
        T* hidden;
        logits_type* logits;
        workspace_span inner;
    };
    buffers io_layout(workspace_arena& arena, index_t rows, std::size_t inner) const {
        const auto d = static_cast<std::size_t>(model_.d_model()), n = static_cast<std::size_t>(rows);
        buffers b{arena.take<std::int64_t>(n), arena.take<T>(n * d), arena.take<T>(n * d),
                  arena.take<logits_type>(n * static_cast<std::size_t>(model_.vocab_size())), {}};
        b.inner = {arena.take<std::byte>(inner), arena.measuring() ? 0 : inner};
        return b;
    }
    template <class Layer>
    bool needs_page(const Layer& layer, index_t position) const {
        return layer.paged.pages() * pool_.page_tokens() <= position;
    }
    sequence& find(sequence_id id) {
        auto it = sequences_.find(id);
        require(it != sequences_.end(), "inference_batch: unknown sequence id ", id,
                " (never joined, or it has left)");
        return it->second;
    }
    const sequence& find(sequence_id id) const { return const_cast<inference_batch*>(this)->find(id); }

    const Model& model_;
    std::function<index_t(index_t, index_t)> policy_;
    pool_type pool_;
    context ctx_;
    std::map<sequence_id, sequence> sequences_;
    sequence_id next_id_ = 0;
    workspace<Backend> ws_;
    std::vector<logits_type> rows_;
};

}  // namespace transmamba
