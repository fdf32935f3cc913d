#pragma once
// Training a language model (docs/training.md): model_grads, the gradients of every parameter of a
// language_model under the model's names and shapes; for_each_parameter(model, grads, f), the walk
// an optimizer makes; language_model_training, the mean cross-entropy of next-token targets and its
// gradients, with an activation policy.
//
//   x = E[ids],  h = stack(x),  logits = h W^T  (W = E when tied),
//   loss = (1 / N) sum over counted tokens r of (logsumexp(logits_r) - logits_r[target_r])
//
//   dlogits = (softmax - onehot) / N on counted rows, 0 elsewhere;  dW = dlogits^T h,
//   dh = dlogits W;  dx = stack backward(dh);  dE += scatter-add of dx over ids (tied: dE = dW + that)
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "transmamba/backend/backward.hpp"
#include "transmamba/block/stack_backward.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/model/language_model.hpp"
#include "transmamba/policy/activation_saving.hpp"

namespace transmamba {

// True when two configurations give parameters of the same names and shapes.
inline bool same_parameter_shapes(const language_model_config& a, const language_model_config& b) {
    const auto& x = a.backbone.mixer;
    const auto& y = b.backbone.mixer;
    return a.vocab_size == b.vocab_size && a.tie_word_embeddings == b.tie_word_embeddings &&
           a.backbone.num_layers == b.backbone.num_layers && a.backbone.d_ff == b.backbone.d_ff &&
           x.d_model == y.d_model && x.expand == y.expand && x.headdim == y.headdim && x.d_state == y.d_state &&
           x.ngroups == y.ngroups && x.d_conv == y.d_conv;
}

template <class T, class Backend, class Pattern = mamba2_pattern>
class model_grads {
public:
    using value_type = T;
    using backend = Backend;
    using stack_grads_type = stack_grads<T, Backend, Pattern>;
    using buffer = typename backend_traits<Backend>::template buffer<T>;

    explicit model_grads(const language_model_config& cfg) : config_(validated(cfg)), backbone_(cfg.backbone) {
        const auto n = static_cast<std::size_t>(cfg.embedding_count());
        embeddings_.resize(n);
        if (!cfg.tie_word_embeddings) lm_head_.resize(n);
    }

    const language_model_config& config() const { return config_; }
    bool tied() const { return config_.tie_word_embeddings; }
    buffer& embeddings() { return embeddings_; }
    const buffer& embeddings() const { return embeddings_; }
    // The LM head's gradient: the embeddings' when tied (both uses summed there).
    buffer& lm_head() { return tied() ? embeddings_ : lm_head_; }
    const buffer& lm_head() const { return tied() ? embeddings_ : lm_head_; }
    stack_grads_type& backbone() { return backbone_; }
    const stack_grads_type& backbone() const { return backbone_; }

    // The model's names, shapes and order: "backbone.embeddings.weight", "backbone.layers.{i}....",
    // "backbone.norm_f.weight", "lm_head.weight" when untied.
    template <class F>
    void for_each_parameter(F&& f) {
        visit(*this, f);
    }
    template <class F>
    void for_each_parameter(F&& f) const {
        visit(*this, f);
    }

    void zero() {
        for_each_parameter([](const std::string&, buffer& b, const std::vector<index_t>&) {
            backend_traits<Backend>::fill({}, b.data(), b.size(), T(0));
        });
    }

private:
    static const language_model_config& validated(const language_model_config& cfg) {
        cfg.validate();
        return cfg;
    }
    template <class Self, class F>
    static void visit(Self& self, F& f) {
        const index_t V = self.config_.vocab_size, d = self.config_.backbone.mixer.d_model;
        f(std::string("backbone.embeddings.weight"), self.embeddings_, std::vector<index_t>{V, d});
        self.backbone_.for_each_parameter([&](std::string_view name, auto& buf, const std::vector<index_t>& shape) {
            f("backbone." + std::string(name), buf, shape);
        });
        if (!self.tied()) f(std::string("lm_head.weight"), self.lm_head_, std::vector<index_t>{V, d});
    }

    language_model_config config_;
    stack_grads_type backbone_;
    buffer embeddings_;
    buffer lm_head_;  // empty when tied
};

// Visits every parameter of `model` with its gradient in `grads`, in the model's order:
// f(name, std::span<T> param, std::span<T> grad), flat and of the same size. The model's weights
// may be changed through `param` (its non-finite check runs again on the next forward).
template <class T, class Backend, class Pattern, class F>
void for_each_parameter(language_model<T, Backend, Pattern>& model, model_grads<T, Backend, Pattern>& grads, F&& f) {
    require(same_parameter_shapes(model.config(), grads.config()),
            "model_grads were made for another configuration than the model's");
    struct entry {
        std::string name;
        std::span<T> grad;
    };
    std::vector<entry> entries;
    grads.for_each_parameter([&](const std::string& name, auto& buf, const std::vector<index_t>&) {
        entries.push_back({name, std::span<T>(buf.data(), buf.size())});
    });
    std::size_t i = 0;
    model.for_each_parameter([&](const std::string& name, auto& buf, const std::vector<index_t>&) {
        require(i < entries.size() && entries[i].name == name && entries[i].grad.size() == buf.size(),
                "model_grads do not list the model's parameter '", name, "' in its place");
        f(name, std::span<T>(buf.data(), buf.size()), entries[i].grad);
        ++i;
    });
    require(i == entries.size(), "model_grads list more parameters than the model");
}

// The loss's settings.
struct loss_options {
    std::int64_t ignore_index = -100;  // a target with this value is not in the loss (PyTorch's default)
};

// What one pass measured over the counted tokens.
struct loss_stats {
    double loss = 0;       // mean cross-entropy (nats per counted token)
    index_t counted = 0;   // tokens whose target is not ignore_index
    index_t correct = 0;   // counted tokens whose largest logit is the target's (the first, on ties)
    operator double() const { return loss; }
};

template <class T, class Backend, class Pattern = mamba2_pattern, activation_saving Saving = keep_activations>
class language_model_training {
public:
    using model_type = language_model<T, Backend, Pattern>;
    using grads_type = model_grads<T, Backend, Pattern>;
    using stack_trainer = stack_training<T, Backend, Pattern, Saving>;
    using A = compute_t<T>;
    using traits = backend_traits<Backend>;
    using context = typename traits::context;
    template <class E>
    using buffer = typename traits::template buffer<E>;
    static_assert(std::is_same_v<T, A>, "language_model_training: the LM head's GEMMs need the logits in T (float or double)");

    explicit language_model_training(loss_options options = {}) : options_(options) {}
    const loss_options& options() const { return options_; }

    // The loss of `model` on (ids, targets), both host (batch, L); no gradients.
    template <transpoint_policy Policy>
    loss_stats forward_loss(const model_type& model, tensor_view<const std::int64_t, 2> ids,
                            tensor_view<const std::int64_t, 2> targets, const Policy& policy, const context& ctx = {}) {
        const index_t counted = check(model, ids, targets);
        const index_t batch = ids.extent(0), L = ids.extent(1), rows = batch * L, V = model.vocab_size();
        logits_.resize(static_cast<std::size_t>(rows * V));
        model.forward(ids, tensor_view<A, 3>(logits_.data(), {batch, L, V}), policy, model_ws_, ctx);
        return loss(ctx, rows, V, targets, counted, /*gradient=*/false);
    }

    // The loss and its gradient with respect to every parameter (grads: overwritten).
    template <transpoint_policy Policy>
    loss_stats forward_backward(const model_type& model, tensor_view<const std::int64_t, 2> ids,
                                tensor_view<const std::int64_t, 2> targets, const Policy& policy, grads_type& grads,
                                const context& ctx = {}) {
        const index_t counted = check(model, ids, targets);
        require(same_parameter_shapes(model.config(), grads.config()),
                "model_grads were made for another configuration than the model's");
        for (index_t i = 0; i < model.num_transpoint_layers(); ++i) (void)resolve_transpoint(policy, i, ids.extent(1));
        check_tables(model, ctx);
        const index_t batch = ids.extent(0), L = ids.extent(1), rows = batch * L, V = model.vocab_size(),
                      d = model.d_model();
        const auto n = static_cast<std::size_t>(rows * d);
        ids_.resize(static_cast<std::size_t>(rows));
        embedded_.resize(n);
        hidden_.resize(n);
        dhidden_.resize(n);
        logits_.resize(static_cast<std::size_t>(rows * V));
        scatter_.resize(embedding_backward_kernel<Backend>::scratch_elements(rows, V));
        traits::copy_from_host(ids.data(), ids_.data(), static_cast<std::size_t>(rows), ctx);

        model.embed(ctx, rows, ids_.data(), embedded_.data());
        stack_.forward(model.backbone(), tensor_view<const T, 3>(embedded_.data(), {batch, L, d}),
                       tensor_view<T, 3>(hidden_.data(), {batch, L, d}), policy, ctx);
        model.project(ctx, rows, hidden_.data(), logits_.data());
        const loss_stats stats = loss(ctx, rows, V, targets, counted, /*gradient=*/true);

        const T* head = model.lm_head().data();
        traits::gemm_tn(ctx, rows, V, d, logits_.data(), V, hidden_.data(), d, grads.lm_head().data(), d);
        traits::gemm_nn(ctx, rows, V, d, logits_.data(), V, head, d, dhidden_.data(), d);
        stack_.backward(model.backbone(), tensor_view<const T, 3>(dhidden_.data(), {batch, L, d}),
                        tensor_view<T, 3>(embedded_.data(), {batch, L, d}), grads.backbone(), ctx);  // embedded -> dx
        if (!model.tied()) traits::fill(ctx, grads.embeddings().data(), grads.embeddings().size(), T(0));
        embedding_backward_kernel<Backend>::scatter_add(ctx, rows, d, V, ids_.data(), embedded_.data(),
                                                        grads.embeddings().data(), scatter_.data());
        return stats;
    }

private:
    // Shapes, ids and targets; returns the counted tokens.
    index_t check(const model_type& model, tensor_view<const std::int64_t, 2> ids,
                  tensor_view<const std::int64_t, 2> targets) const {
        const index_t batch = ids.extent(0), L = ids.extent(1), V = model.vocab_size();
        require(batch > 0 && L > 0, "tensor 'ids' is empty: shape ", shape_string(ids.shape()));
        expect_contiguous(ids, "ids");
        expect_shape(targets, "targets", {batch, L});
        expect_contiguous(targets, "targets");
        model.check_token_ids(ids);
        index_t counted = 0;
        for (index_t b = 0; b < batch; ++b)
            for (index_t t = 0; t < L; ++t) {
                const std::int64_t y = targets(b, t);
                if (y == options_.ignore_index) continue;
                require(y >= 0 && y < V, "target ", y, " at position (batch ", b, ", token ", t,
                        ") of 'targets' is neither in [0, ", V, ") nor the ignore index ", options_.ignore_index);
                ++counted;
            }
        require(counted > 0, "every target of the batch is the ignore index ", options_.ignore_index,
                ": the mean loss over no tokens is undefined");
        return counted;
    }

    void check_tables(const model_type& model, const context& ctx) const {
        const index_t bad = traits::first_non_finite(ctx, model.embeddings().data(), model.embeddings().size());
        require(bad < 0, "language model parameter 'backbone.embeddings.weight' holds a non-finite value at flat index ", bad);
        if (!model.tied()) {
            const index_t bad_head = traits::first_non_finite(ctx, model.lm_head().data(), model.lm_head().size());
            require(bad_head < 0, "language model parameter 'lm_head.weight' holds a non-finite value at flat index ", bad_head);
        }
    }

    // The loss over logits_ (rows, V); with `gradient`, logits_ becomes dL/dlogits.
    loss_stats loss(const context& ctx, index_t rows, index_t V, tensor_view<const std::int64_t, 2> targets,
                    index_t counted, bool gradient) {
        targets_.resize(static_cast<std::size_t>(rows));
        row_loss_.resize(static_cast<std::size_t>(rows));
        argmax_.resize(static_cast<std::size_t>(rows));
        traits::copy_from_host(targets.data(), targets_.data(), static_cast<std::size_t>(rows), ctx);
        loss_kernel<Backend>::cross_entropy(ctx, rows, V, logits_.data(), targets_.data(), options_.ignore_index,
                                            A(1) / A(counted), gradient, row_loss_.data(), argmax_.data());
        host_loss_.resize(static_cast<std::size_t>(rows));
        host_argmax_.resize(static_cast<std::size_t>(rows));
        traits::copy_to_host(row_loss_.data(), host_loss_.data(), static_cast<std::size_t>(rows), ctx);
        traits::copy_to_host(argmax_.data(), host_argmax_.data(), static_cast<std::size_t>(rows), ctx);
        traits::synchronize(ctx);
        loss_stats s;
        s.counted = counted;
        double sum = 0;  // in token order: the same bits whatever the thread count
        for (index_t r = 0; r < rows; ++r) {
            const std::int64_t y = targets.data()[r];
            if (y == options_.ignore_index) continue;
            sum += static_cast<double>(host_loss_[std::size_t(r)]);
            if (host_argmax_[std::size_t(r)] == y) ++s.correct;
        }
        s.loss = sum / static_cast<double>(counted);
        return s;
    }

    loss_options options_;
    stack_trainer stack_;
    workspace<Backend> model_ws_;  // language_model::forward's, for forward_loss
    buffer<std::int64_t> ids_, targets_, argmax_, scatter_;
    buffer<T> embedded_, hidden_, dhidden_;
    buffer<A> logits_, row_loss_;
    std::vector<A> host_loss_;
    std::vector<std::int64_t> host_argmax_;
};

}  // namespace transmamba
