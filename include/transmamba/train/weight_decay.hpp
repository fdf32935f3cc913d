#pragma once
// Which parameters AdamW decays: a policy, a type with one static member
//   static bool decays(std::string_view checkpoint_name, const std::vector<index_t>& shape);
// asked once per parameter when the optimizer is built.
//
// The default follows common practice for Mamba2 / Transformer language models: the weight matrices
// (in_proj, out_proj, conv1d.weight, the embeddings and an untied LM head, the MLP) are decayed; the
// norms' weights, the biases and the SSM's own parameters (A_log, D, dt_bias, which mamba_ssm marks
// "_no_weight_decay") are not: pulling A_log or dt_bias towards 0 changes the model's time scales,
// not its capacity.
#include <array>
#include <string_view>
#include <vector>

#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

namespace train_detail {
// `name` is `leaf` or ends in ".leaf".
inline bool has_leaf(std::string_view name, std::string_view leaf) {
    return name == leaf || (name.size() > leaf.size() && name.ends_with(leaf) && name[name.size() - leaf.size() - 1] == '.');
}
}  // namespace train_detail

struct decay_weight_matrices {
    static bool decays(std::string_view name, const std::vector<index_t>&) {
        static constexpr std::array<std::string_view, 7> exempt{"bias",   "norm.weight", "norm_f.weight", "A_log",
                                                                 "D",      "dt_bias",     "conv1d.bias"};
        for (auto leaf : exempt)
            if (train_detail::has_leaf(name, leaf)) return false;
        return true;
    }
};

// Every parameter (plain AdamW as in the paper that defines it).
struct decay_everything {
    static bool decays(std::string_view, const std::vector<index_t>&) { return true; }
};

// None: AdamW with weight_decay ignored, i.e. Adam.
struct decay_nothing {
    static bool decays(std::string_view, const std::vector<index_t>&) { return false; }
};

template <class P>
concept weight_decay_policy = requires(std::string_view name, const std::vector<index_t>& shape) {
    { P::decays(name, shape) } -> std::convertible_to<bool>;
};

}  // namespace transmamba
