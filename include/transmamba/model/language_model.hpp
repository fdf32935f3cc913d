#pragma once
// A causal language model (SPEC.md section 7): token embeddings, the stack of blocks of
// block/stack.hpp (which ends with the final RMSNorm norm_f), and an LM head, tied to the embeddings
// when the config says so.
//
//   hidden = embeddings[input_ids]                         embedding_kernel<B>::gather
//   hidden = norm_f(blocks(hidden))                        stack<T, B, Pattern>::forward
//   logits = hidden * W^T, W = lm_head or the embeddings   backend_traits<B>::gemm_nt
//
// Parameters carry the names transformers gives Mamba2ForCausalLM ("backbone.embeddings.weight",
// "backbone.layers.{i}.mixer.in_proj.weight", ..., "backbone.norm_f.weight", "lm_head.weight"), so
// io/checkpoint.hpp loads and saves them by walking for_each_parameter.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "transmamba/backend/embedding.hpp"
#include "transmamba/backend/traits.hpp"
#include "transmamba/block/block.hpp"
#include "transmamba/block/random_init.hpp"
#include "transmamba/block/stack.hpp"
#include "transmamba/core/check_flag.hpp"
#include "transmamba/core/checked_size.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/tensor_view.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/transpoint.hpp"

namespace transmamba {

struct language_model_config {
    model_config backbone;          // mixer sizes, num_layers (repeats of the layer pattern), d_ff
    index_t vocab_size = 0;
    bool tie_word_embeddings = true;  // the LM head reuses the embedding matrix
    // Granite's scalings: hidden = embeddings[ids] * embedding_multiplier, logits = (h W^T) / logits_divisor.
    double embedding_multiplier = 1.0;
    double logits_divisor = 1.0;

    // Elements of the embeddings (and of the LM head: as many).
    index_t embedding_count() const {
        return checked_mul(vocab_size, backbone.mixer.d_model, "language_model_config: embedding elements vocab_size * d_model");
    }
    // Elements of all parameters: the embeddings, the stack, the LM head when it is not tied.
    index_t parameter_count() const {
        const index_t tables = checked_mul(embedding_count(), tie_word_embeddings ? 1 : 2,
                                           "language_model_config: embedding and LM head elements");
        return checked_add(tables, backbone.parameter_count(), "language_model_config: parameter count");
    }

    void validate() const {
        backbone.validate();
        require(vocab_size > 0, "language_model_config.vocab_size must be positive, got ", vocab_size);
        require(vocab_size <= size_limits::vocab, "language_model_config.vocab_size = ", vocab_size, " exceeds the limit ",
                size_limits::vocab);
        require(std::isfinite(embedding_multiplier) && embedding_multiplier > 0.0,
                "language_model_config.embedding_multiplier must be a finite positive number, got ", embedding_multiplier);
        require(std::isfinite(logits_divisor) && logits_divisor > 0.0,
                "language_model_config.logits_divisor must be a finite positive number, got ", logits_divisor);
        (void)parameter_count();
    }
};

template <class T, class Backend, class Pattern = mamba2_pattern>
class language_model {
public:
    using value_type = T;
    using backend = Backend;
    using pattern = Pattern;
    using stack_type = stack<T, Backend, Pattern>;
    using logits_type = compute_t<T>;  // float for float and the 16-bit types, double for double
    using traits = backend_traits<Backend>;
    using context = typename traits::context;
    using buffer = typename traits::template buffer<T>;

    explicit language_model(const language_model_config& cfg) : config_(validated(cfg)), backbone_(cfg.backbone) {
        const auto n = static_cast<std::size_t>(config_.embedding_count());
        embeddings_.resize(n);
        if (!cfg.tie_word_embeddings) lm_head_.resize(n);
    }

    const language_model_config& config() const { return config_; }
    index_t vocab_size() const { return config_.vocab_size; }
    index_t d_model() const { return config_.backbone.mixer.d_model; }
    bool tied() const { return config_.tie_word_embeddings; }
    // How many layers take a TransPoint: the layer indices a TransPoint policy is asked about.
    index_t num_transpoint_layers() const { return backbone_.num_transpoint_layers(); }

    const stack_type& backbone() const { return backbone_; }
    stack_type& backbone() {
        checked_.clear();
        return backbone_;
    }
    // (vocab_size, d_model)
    const buffer& embeddings() const { return embeddings_; }
    buffer& embeddings() {
        checked_.clear();
        return embeddings_;
    }
    // (vocab_size, d_model): the embeddings when tied.
    const buffer& lm_head() const { return tied() ? embeddings_ : lm_head_; }
    buffer& lm_head() {
        checked_.clear();
        return tied() ? embeddings_ : lm_head_;
    }

    // Every parameter as (checkpoint name, buffer, shape), in the order transformers lists them; the
    // LM head only when it is not tied.
    template <class F>
    void for_each_parameter(F&& f) {
        checked_.clear();
        const index_t V = vocab_size(), d = d_model();
        f(std::string("backbone.embeddings.weight"), embeddings_, std::vector<index_t>{V, d});
        backbone_.for_each_parameter([&](std::string_view name, auto& buf, const std::vector<index_t>& shape) {
            f("backbone." + std::string(name), buf, shape);
        });
        if (!tied()) f(std::string("lm_head.weight"), lm_head_, std::vector<index_t>{V, d});
    }
    // The same walk, read-only. (stack offers a mutable walk only; visiting changes nothing but the
    // mixers' "check the weights again" flags.)
    template <class F>
    void for_each_parameter(F&& f) const {
        auto& self = const_cast<language_model&>(*this);
        const bool was_checked = checked_.done();
        self.for_each_parameter([&](const std::string& name, auto& buf, const std::vector<index_t>& shape) {
            f(name, std::as_const(buf), shape);
        });
        checked_.set(was_checked);
    }

    std::size_t workspace_bytes(index_t batch, index_t L) const {
        workspace_arena measure;
        layout(measure, batch, L);
        return measure.used();
    }

    // Throws naming the first token id outside [0, vocab_size) and its position. input_ids is host
    // memory on every backend.
    void check_token_ids(tensor_view<const std::int64_t, 2> input_ids) const {
        for (index_t b = 0; b < input_ids.extent(0); ++b)
            for (index_t t = 0; t < input_ids.extent(1); ++t) {
                const std::int64_t id = input_ids(b, t);
                require(id >= 0 && id < vocab_size(), "token id ", id, " at position (batch ", b, ", token ", t,
                        ") of 'input_ids' is out of range [0, ", vocab_size(), ")");
            }
    }

    // logits (batch, L, vocab) for input_ids (batch, L), the TransMamba layer i running at
    // P = resolve_transpoint(policy, i, L). input_ids is host memory (token ids come from the host on
    // every backend); logits and the workspace are in the backend's memory. Everything is checked
    // before logits is written.
    template <transpoint_policy Policy>
    void forward(tensor_view<const std::int64_t, 2> input_ids, tensor_view<logits_type, 3> logits, const Policy& policy,
                 workspace_span ws, const context& ctx = {}) const {
        const index_t batch = input_ids.extent(0), L = input_ids.extent(1), rows = batch * L, d = d_model();
        require(batch > 0 && L > 0, "tensor 'input_ids' is empty: shape ", shape_string(input_ids.shape()));
        expect_contiguous(input_ids, "input_ids");
        expect_shape(logits, "logits", {batch, L, vocab_size()});
        expect_contiguous(logits, "logits");
        check_token_ids(input_ids);
        require(ws.bytes >= workspace_bytes(batch, L), "workspace too small for the language model: has ", ws.bytes,
                " bytes, needs ", workspace_bytes(batch, L));
        for (index_t i = 0; i < num_transpoint_layers(); ++i) (void)resolve_transpoint(policy, i, L);
        check_weights(ctx);

        workspace_arena arena(ws);
        const auto b = layout(arena, batch, L);
        traits::copy_from_host(input_ids.data(), b.ids, static_cast<std::size_t>(rows), ctx);
        embed(ctx, rows, b.ids, b.embedded);
        backbone_.forward(tensor_view<const T, 3>(b.embedded, {batch, L, d}), tensor_view<T, 3>(b.hidden, {batch, L, d}),
                          policy, b.inner, ctx);
        project(ctx, rows, b.hidden, logits.data());
    }

    // Convenience: grows `ws` as needed.
    template <transpoint_policy Policy>
    void forward(tensor_view<const std::int64_t, 2> input_ids, tensor_view<logits_type, 3> logits, const Policy& policy,
                 workspace<Backend>& ws, const context& ctx = {}) const {
        forward(input_ids, logits, policy, ws.reserve(workspace_bytes(input_ids.extent(0), input_ids.extent(1))), ctx);
    }

    // A packed batch: input_ids (1, total) holds the sequences back to back, sequence s at positions
    // [cu_seqlens[s], cu_seqlens[s+1]) (core/sequence_layout.hpp), logits (1, total, vocab). No
    // padding is computed; each sequence's logits are those of forward() over it alone, its
    // TransPoints resolved at its own length.
    template <transpoint_policy Policy>
    void forward(tensor_view<const std::int64_t, 2> input_ids, std::span<const index_t> cu_seqlens,
                 tensor_view<logits_type, 3> logits, const Policy& policy, workspace_span ws,
                 const context& ctx = {}) const {
        const auto seqs = sequence_layout::packed(cu_seqlens);
        const index_t total = seqs.rows(), d = d_model();
        expect_shape(input_ids, "input_ids", {1, total});
        expect_contiguous(input_ids, "input_ids");
        expect_shape(logits, "logits", {1, total, vocab_size()});
        expect_contiguous(logits, "logits");
        check_token_ids(input_ids);
        require(ws.bytes >= workspace_bytes(seqs), "workspace too small for the language model: has ", ws.bytes,
                " bytes, needs ", workspace_bytes(seqs));
        for (index_t i = 0; i < num_transpoint_layers(); ++i)
            for (index_t q = 0; q < seqs.count(); ++q) (void)resolve_transpoint(policy, i, seqs.length(q));
        check_weights(ctx);
        workspace_arena arena(ws);
        const auto b = layout(arena, seqs);
        traits::copy_from_host(input_ids.data(), b.ids, static_cast<std::size_t>(total), ctx);
        embed(ctx, total, b.ids, b.embedded);
        backbone_.forward(tensor_view<const T, 3>(b.embedded, {1, total, d}), tensor_view<T, 3>(b.hidden, {1, total, d}),
                          cu_seqlens, policy, b.inner, ctx);
        project(ctx, total, b.hidden, logits.data());
    }
    template <transpoint_policy Policy>
    void forward(tensor_view<const std::int64_t, 2> input_ids, std::span<const index_t> cu_seqlens,
                 tensor_view<logits_type, 3> logits, const Policy& policy, workspace<Backend>& ws,
                 const context& ctx = {}) const {
        forward(input_ids, cu_seqlens, logits, policy, ws.reserve(workspace_bytes(sequence_layout::packed(cu_seqlens))), ctx);
    }
    std::size_t workspace_bytes(const sequence_layout& seqs) const {
        workspace_arena measure;
        layout(measure, seqs);
        return measure.used();
    }

    // The two ends on their own, for callers that run the stack themselves (decoding):
    // hidden (rows, d_model) = embeddings[ids], ids in the backend's memory and already checked;
    void embed(const context& ctx, index_t rows, const std::int64_t* ids, T* hidden) const {
        embedding_kernel<Backend>::gather(ctx, rows, d_model(), ids, embeddings_.data(), hidden);
        if (config_.embedding_multiplier != 1.0)
            block_kernel<Backend>::scale(ctx, static_cast<std::size_t>(rows * d_model()), config_.embedding_multiplier, hidden);
    }
    // logits (rows, vocab) = normed_hidden (rows, d_model) * lm_head^T, normed_hidden after norm_f.
    void project(const context& ctx, index_t rows, const T* normed_hidden, logits_type* logits) const {
        traits::gemm_nt(ctx, rows, vocab_size(), d_model(), normed_hidden, d_model(), lm_head().data(), d_model(), logits,
                        vocab_size());
        if (config_.logits_divisor != 1.0)
            block_kernel<Backend>::scale(ctx, static_cast<std::size_t>(rows * vocab_size()), 1.0 / config_.logits_divisor,
                                         logits);
    }

private:
    static const language_model_config& validated(const language_model_config& cfg) {
        cfg.validate();
        return cfg;
    }

    struct buffers {
        std::int64_t* ids;   // (rows): the token ids in the backend's memory
        T* embedded;         // (rows, d_model)
        T* hidden;           // (rows, d_model): the stack's output
        workspace_span inner;
    };
    buffers layout(workspace_arena& arena, index_t batch, index_t L) const {
        return layout(arena, batch * L, backbone_.workspace_bytes(batch, L));
    }
    buffers layout(workspace_arena& arena, const sequence_layout& seqs) const {
        return layout(arena, seqs.rows(), backbone_.workspace_bytes(seqs));
    }
    buffers layout(workspace_arena& arena, index_t rows_, std::size_t inner) const {
        const auto rows = static_cast<std::size_t>(rows_), d = static_cast<std::size_t>(d_model());
        buffers b{arena.take<std::int64_t>(rows), arena.take<T>(rows * d), arena.take<T>(rows * d), {}};
        b.inner = {arena.take<std::byte>(inner), arena.measuring() ? 0 : inner};
        return b;
    }

    // The embeddings and the LM head, once after each mutable access (the mixers check their own).
    void check_weights(const context& ctx) const {
        if (checked_.done()) return;
        const index_t bad = traits::first_non_finite(ctx, embeddings_.data(), embeddings_.size());
        require(bad < 0, "language model parameter 'backbone.embeddings.weight' holds a non-finite value at flat index ", bad);
        if (!tied()) {
            const index_t bad_head = traits::first_non_finite(ctx, lm_head_.data(), lm_head_.size());
            require(bad_head < 0, "language model parameter 'lm_head.weight' holds a non-finite value at flat index ", bad_head);
        }
        checked_.set();
    }

    language_model_config config_;
    stack_type backbone_;
    buffer embeddings_;
    buffer lm_head_;  // empty when tied
    mutable check_flag checked_;  // forward() is const and may run on several threads at once
};

// randomize(model, seed) is block/random_init.hpp's, as for every module that lists its parameters.

}  // namespace transmamba
