#pragma once
// Training a stack of blocks (docs/training.md): stack_grads, the gradients of a stack's
// parameters under the stack's names, and stack_training, the forward pass that keeps what the
// backward reads and the backward itself, under any TransPoint policy and either activation policy.
//
//   forward:  x_0 = u,  x_{i+1} = block_i(x_i) at P_i,  out = rmsnorm(x_N) w_f
//   backward: g = rmsnorm backward(dout) (dw_f),  g = block_i backward(g) for i = N-1 .. 0,  du = g
//
// Every x_i is kept. keep_activations keeps each block's activations too; recompute_activations
// runs block i's forward again from x_i just before its backward, into one shared set.
#include <cstddef>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "transmamba/backend/backward.hpp"
#include "transmamba/block/block_backward.hpp"
#include "transmamba/block/block_grads.hpp"
#include "transmamba/block/stack.hpp"
#include "transmamba/policy/activation_saving.hpp"
#include "transmamba/policy/transpoint.hpp"

namespace transmamba {

template <class T, class Backend, class Pattern>
class stack_grads;

template <class T, class Backend, class... Kinds>
class stack_grads<T, Backend, layer_pattern<Kinds...>> {
public:
    using buffer = typename backend_traits<Backend>::template buffer<T>;
    using group = std::tuple<typename block_training<typename Kinds::template block<T, Backend>>::grads_type...>;

    explicit stack_grads(const model_config& cfg) : config_(cfg) {
        cfg.validate();
        groups_.reserve(static_cast<std::size_t>(cfg.num_layers));
        for (index_t i = 0; i < cfg.num_layers; ++i)
            groups_.emplace_back(typename block_training<typename Kinds::template block<T, Backend>>::grads_type(cfg)...);
        norm_f_.resize(static_cast<std::size_t>(cfg.mixer.d_model));
    }

    const model_config& config() const { return config_; }
    group& layer_group(index_t i) { return groups_.at(static_cast<std::size_t>(i)); }
    const group& layer_group(index_t i) const { return groups_.at(static_cast<std::size_t>(i)); }
    buffer& norm_f() { return norm_f_; }
    const buffer& norm_f() const { return norm_f_; }

    // The stack's names: "layers.{i}.mixer.in_proj.weight", ..., "norm_f.weight".
    template <class F>
    void for_each_parameter(F&& f) {
        visit(*this, f);
    }
    template <class F>
    void for_each_parameter(F&& f) const {
        visit(*this, f);
    }

private:
    template <class Self, class F>
    static void visit(Self& self, F& f) {
        index_t block_index = 0;
        auto one = [&](auto& block) {
            const std::string prefix = "layers." + std::to_string(block_index++) + ".";
            block.for_each_parameter([&](std::string_view name, auto& buf, const std::vector<index_t>& shape) {
                f(prefix + std::string(name), buf, shape);
            });
        };
        for (auto& g : self.groups_) std::apply([&](auto&... blocks) { (one(blocks), ...); }, g);
        f(std::string("norm_f.weight"), self.norm_f_, std::vector<index_t>{self.config_.mixer.d_model});
    }

    model_config config_;
    std::vector<group> groups_;
    buffer norm_f_;
};

template <class T, class Backend, class Pattern, activation_saving Saving = keep_activations>
class stack_training;

template <class T, class Backend, class... Kinds, activation_saving Saving>
class stack_training<T, Backend, layer_pattern<Kinds...>, Saving> {
public:
    using pattern = layer_pattern<Kinds...>;
    using stack_type = stack<T, Backend, pattern>;
    using grads_type = stack_grads<T, Backend, pattern>;
    using saving = Saving;
    using A = compute_t<T>;
    using traits = backend_traits<Backend>;
    using context = typename traits::context;
    template <class E>
    using buffer = typename traits::template buffer<E>;
    using activations = std::tuple<typename block_training<typename Kinds::template block<T, Backend>>::activations...>;
    static constexpr std::size_t kinds = sizeof...(Kinds);

    // out = norm_f(blocks(u)), the TransMamba layer i at P = resolve_transpoint(policy, i, L), as
    // stack::forward (the same bits); keeps what backward() reads, until the next forward().
    template <transpoint_policy Policy>
    void forward(const stack_type& s, tensor_view<const T, 3> u, tensor_view<T, 3> out, const Policy& policy,
                 const context& ctx = {}) {
        const auto& cfg = s.config();
        const index_t batch = u.extent(0), L = u.extent(1), d = cfg.mixer.d_model;
        require(batch > 0 && L > 0, "tensor 'u' is empty: shape ", shape_string(u.shape()));
        expect_shape(u, "u", {batch, L, d});
        expect_contiguous(u, "u");
        expect_shape(out, "out", {batch, L, d});
        expect_contiguous(out, "out");
        std::vector<index_t> points(static_cast<std::size_t>(s.num_transpoint_layers()));
        for (index_t i = 0; i < s.num_transpoint_layers(); ++i) points[std::size_t(i)] = resolve_transpoint(policy, i, L);

        ready_ = false;
        batch_ = batch;
        seqlen_ = L;
        const index_t blocks = s.num_blocks();
        const auto n = static_cast<std::size_t>(u.size());
        block_points_.assign(static_cast<std::size_t>(blocks), 0);
        inputs_.resize(static_cast<std::size_t>(blocks + 1));
        for (auto& x : inputs_) x.resize(n);
        saved_.resize(Saving::recompute_in_backward ? 1 : static_cast<std::size_t>(cfg.num_layers));
        const workspace_span ws = ws_.reserve(workspace_bytes(s, batch, L));

        traits::copy(ctx, u.data(), inputs_[0].data(), n);
        index_t layer = 0;
        for (index_t gi = 0; gi < cfg.num_layers; ++gi)
            each_block(std::make_index_sequence<kinds>{}, [&](auto k) {
                constexpr std::size_t K = decltype(k)::value;
                const auto& block = std::get<K>(s.layer_group(gi));
                const index_t i = gi * index_t(kinds) + index_t(K);
                index_t P = 0;
                if constexpr (std::remove_cvref_t<decltype(block)>::has_transpoint) P = points[std::size_t(layer++)];
                block_points_[std::size_t(i)] = P;
                block_training<std::remove_cvref_t<decltype(block)>>::forward(
                    block, view(inputs_[std::size_t(i)]), mutable_view(inputs_[std::size_t(i + 1)]), P,
                    std::get<K>(saved_at(gi)), ws, ctx);
            });
        block_kernel<Backend>::rmsnorm(ctx, batch * L, d, inputs_.back().data(), s.norm_f().data(), cfg.mixer.norm_eps,
                                       out.data());
        ready_ = true;
    }

    // du = dL/du for dout = dL/dout of the last forward(); every gradient in `grads` is overwritten.
    void backward(const stack_type& s, tensor_view<const T, 3> dout, tensor_view<T, 3> du, grads_type& grads,
                  const context& ctx = {}) {
        const auto& cfg = s.config();
        const index_t batch = batch_, L = seqlen_, d = cfg.mixer.d_model, rows = batch * L;
        require(ready_ && static_cast<index_t>(inputs_.size()) == s.num_blocks() + 1,
                "stack_training::backward needs a forward() of this stack first");
        expect_shape(dout, "dout", {batch, L, d});
        expect_contiguous(dout, "dout");
        expect_shape(du, "du", {batch, L, d});
        expect_contiguous(du, "du");
        require(grads.config().num_layers == cfg.num_layers && grads.config().mixer.d_model == d &&
                    grads.config().d_ff == cfg.d_ff,
                "stack_grads were made for another configuration than the stack's");
        const auto n = static_cast<std::size_t>(rows * d);
        grad_.resize(n);
        grad_next_.resize(n);
        inv_.resize(static_cast<std::size_t>(rows));
        const workspace_span ws = ws_.reserve(workspace_bytes(s, batch, L));

        traits::fill(ctx, grad_.data(), n, T(0));
        block_backward_kernel<Backend>::rmsnorm_backward(ctx, rows, d, inputs_.back().data(), s.norm_f().data(),
                                                         cfg.mixer.norm_eps, dout.data(), grad_.data(),
                                                         grads.norm_f().data(), inv_.data());
        if constexpr (Saving::recompute_in_backward) recomputed_.resize(n);
        for (index_t gi = cfg.num_layers - 1; gi >= 0; --gi)
            each_block_reversed(std::make_index_sequence<kinds>{}, [&](auto k) {
                constexpr std::size_t K = decltype(k)::value;
                const auto& block = std::get<K>(s.layer_group(gi));
                using training = block_training<std::remove_cvref_t<decltype(block)>>;
                const index_t i = gi * index_t(kinds) + index_t(K);
                auto& saved = std::get<K>(saved_at(gi));
                const auto x = view(inputs_[std::size_t(i)]);
                if constexpr (Saving::recompute_in_backward)
                    training::forward(block, x, mutable_view(recomputed_), block_points_[std::size_t(i)], saved, ws, ctx);
                training::backward(block, x, saved, view(grad_), mutable_view(grad_next_), std::get<K>(grads.layer_group(gi)),
                                   ws, ctx);
                std::swap(grad_, grad_next_);
            });
        traits::copy(ctx, grad_.data(), du.data(), n);
    }

    // Workspace of the blocks' training passes (the largest kind's); the stack's saved inputs and
    // gradient buffers are held apart from it.
    static std::size_t workspace_bytes(const stack_type& s, index_t batch, index_t L) {
        std::size_t most = workspace_arena::alignment;
        std::apply([&](const auto&... blocks) {
            ((most = std::max(most, block_training<std::remove_cvref_t<decltype(blocks)>>::workspace_bytes(blocks, batch, L))), ...);
        }, s.layer_group(0));
        return most;
    }

private:
    template <std::size_t... K, class F>
    static void each_block(std::index_sequence<K...>, F&& f) {
        (f(std::integral_constant<std::size_t, K>{}), ...);
    }
    template <std::size_t... K, class F>
    static void each_block_reversed(std::index_sequence<K...>, F&& f) {
        (f(std::integral_constant<std::size_t, sizeof...(K) - 1 - K>{}), ...);
    }
    activations& saved_at(index_t group) {
        return saved_[Saving::recompute_in_backward ? 0 : static_cast<std::size_t>(group)];
    }
    tensor_view<const T, 3> view(const buffer<T>& b) const { return {b.data(), {batch_, seqlen_, d_of(b)}}; }
    tensor_view<T, 3> mutable_view(buffer<T>& b) const { return {b.data(), {batch_, seqlen_, d_of(b)}}; }
    index_t d_of(const buffer<T>& b) const { return static_cast<index_t>(b.size()) / (batch_ * seqlen_); }

    index_t batch_ = 0, seqlen_ = 0;
    bool ready_ = false;
    std::vector<index_t> block_points_;  // P of every block (0 for blocks without one)
    std::vector<buffer<T>> inputs_;      // x_0 .. x_N: every block's input, and norm_f's
    std::vector<activations> saved_;     // one per group of the pattern, or one shared (recompute)
    buffer<T> grad_, grad_next_, recomputed_;
    buffer<A> inv_;
    workspace<Backend> ws_;
};

}  // namespace transmamba
