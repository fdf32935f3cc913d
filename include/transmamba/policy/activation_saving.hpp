#pragma once
// What a training forward pass keeps for the backward pass (docs/training.md, "Saved activations"):
// the policy of stack_training and language_model_training. Either way every block's input hidden
// states are kept; the policies differ in the blocks' inner activations.
#include <concepts>

namespace transmamba {

// Every block's activations are kept from the forward pass: the fastest backward, the most memory.
struct keep_activations {
    static constexpr bool recompute_in_backward = false;
};

// Activation checkpointing per block: the backward runs each block's forward again from its saved
// input, just before that block's backward. One block's activations are alive at a time, for the
// cost of a second forward pass; the gradients are the same bits.
struct recompute_activations {
    static constexpr bool recompute_in_backward = true;
};

template <class S>
concept activation_saving = requires {
    { S::recompute_in_backward } -> std::convertible_to<bool>;
};

}  // namespace transmamba
