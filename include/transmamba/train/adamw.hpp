#pragma once
// AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"), in the form PyTorch's
// torch.optim.AdamW computes, so runs compare with it. Update t = 1, 2, ... of a parameter theta
// with gradient g (already scaled by the clipping factor c), learning rate lr, decay lambda:
//
//   g     = c * grad
//   m     = beta1 m + (1 - beta1) g                 the first moment  ("exp_avg")
//   v     = beta2 v + (1 - beta2) g^2               the second moment ("exp_avg_sq")
//   theta = theta (1 - lr lambda)                   decoupled decay, only where the policy decays
//   theta = theta - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//
// The moments are kept in State, the weights' own float type on the CPU (float for a float model,
// double for a double one): the weights are the float32 master weights, and nothing is rounded
// through a narrower type. The bias corrections are computed in double. Element by element, no
// reduction: the same inputs give the same bits at every thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "transmamba/core/error.hpp"
#include "transmamba/core/host_buffer.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/train/named_parameters.hpp"
#include "transmamba/train/weight_decay.hpp"

namespace transmamba {

struct adamw_options {
    double beta1 = 0.9;
    double beta2 = 0.95;
    double eps = 1e-8;
    double weight_decay = 0.1;

    void validate() const {
        require(beta1 >= 0 && beta1 < 1, "adamw: beta1 must be in [0, 1), got ", beta1);
        require(beta2 >= 0 && beta2 < 1, "adamw: beta2 must be in [0, 1), got ", beta2);
        require(std::isfinite(eps) && eps > 0, "adamw: eps must be positive and finite, got ", eps);
        require(std::isfinite(weight_decay) && weight_decay >= 0, "adamw: weight_decay must be finite and >= 0, got ",
                weight_decay);
    }
};

template <class State, weight_decay_policy Decay = decay_weight_matrices>
class adamw {
    static_assert(std::is_same_v<State, float> || std::is_same_v<State, double>, "adamw: the moments are float or double");

public:
    using state_type = State;
    using decay_policy = Decay;

    struct slot {
        std::string name;
        std::vector<index_t> shape;
        bool decayed = false;
        host_buffer<State> exp_avg, exp_avg_sq;
    };

    // Zero moments for every parameter of `params` (names and shapes are kept; the values are not).
    template <class T>
    adamw(const adamw_options& options, const std::vector<named_span<T>>& params) : options_(options) {
        options_.validate();
        slots_.reserve(params.size());
        for (const auto& p : params) {
            slot s{p.name, p.shape, Decay::decays(p.name, p.shape), host_buffer<State>(p.values.size()),
                   host_buffer<State>(p.values.size())};
            s.exp_avg.fill(State(0));
            s.exp_avg_sq.fill(State(0));
            slots_.push_back(std::move(s));
        }
    }

    const adamw_options& options() const { return options_; }
    // Updates taken so far (t of the last update).
    std::int64_t steps() const { return steps_; }
    // The moments, for checkpoints (io/training_checkpoint.hpp); set_steps restores t with them.
    std::vector<slot>& slots() { return slots_; }
    const std::vector<slot>& slots() const { return slots_; }
    void set_steps(std::int64_t t) {
        require(t >= 0, "adamw: the update count must be >= 0, got ", t);
        steps_ = t;
    }

    // One update of every parameter from its gradient times `grad_scale`, at learning rate `lr`.
    // params and grads list the same names and shapes as the parameters the optimizer was built for.
    template <class T, class G>
    void step(const std::vector<named_span<T>>& params, const std::vector<named_span<G>>& grads, double lr,
              double grad_scale = 1.0) {
        static_assert(!std::is_const_v<T>, "adamw::step writes the parameters");
        require(std::isfinite(lr) && lr >= 0, "adamw: the learning rate must be finite and >= 0, got ", lr);
        require(std::isfinite(grad_scale) && grad_scale >= 0, "adamw: the gradient scale must be finite and >= 0, got ",
                grad_scale);
        require_same_layout(params, grads, "the parameters", "the gradients");
        require(params.size() == slots_.size(), "adamw: ", params.size(), " parameters given, the optimizer holds ",
                slots_.size());
        for (std::size_t i = 0; i < params.size(); ++i)
            require(params[i].name == slots_[i].name && params[i].values.size() == slots_[i].exp_avg.size(),
                    "adamw: parameter ", i, " is '", params[i].name, "' with ", params[i].values.size(),
                    " elements, the optimizer's is '", slots_[i].name, "' with ", slots_[i].exp_avg.size());

        const std::int64_t t = steps_ + 1;
        const double bc1 = 1.0 - std::pow(options_.beta1, static_cast<double>(t));
        const double bc2 = 1.0 - std::pow(options_.beta2, static_cast<double>(t));
        const auto b1 = State(options_.beta1), b2 = State(options_.beta2);
        const auto one_minus_b1 = State(1.0 - options_.beta1), one_minus_b2 = State(1.0 - options_.beta2);
        const auto step_size = State(lr / bc1), bc2_sqrt = State(std::sqrt(bc2)), eps = State(options_.eps);
        const auto scale = State(grad_scale);
        const auto decay_factor = State(1.0 - lr * options_.weight_decay);

        constexpr index_t block = 4096;  // elements per task: enough work to pay for a fork
        for (std::size_t i = 0; i < params.size(); ++i) {
            slot& s = slots_[i];
            T* theta = params[i].values.data();
            const G* grad = grads[i].values.data();
            State* m = s.exp_avg.data();
            State* v = s.exp_avg_sq.data();
            const bool decayed = s.decayed && options_.weight_decay != 0;
            const auto n = static_cast<index_t>(s.exp_avg.size());
            parallel_for((n + block - 1) / block, block * 4, [&](index_t b, int) {
                const index_t end = std::min(n, (b + 1) * block);
                for (index_t k = b * block; k < end; ++k) {
                    const State g = scale * static_cast<State>(grad[k]);
                    m[k] = b1 * m[k] + one_minus_b1 * g;
                    v[k] = b2 * v[k] + one_minus_b2 * g * g;
                    State p = static_cast<State>(theta[k]);
                    if (decayed) p *= decay_factor;
                    p -= step_size * m[k] / (std::sqrt(v[k]) / bc2_sqrt + eps);
                    theta[k] = static_cast<T>(p);
                }
            });
        }
        steps_ = t;
    }

private:
    adamw_options options_;
    std::vector<slot> slots_;
    std::int64_t steps_ = 0;
};

}  // namespace transmamba
