#pragma once
// What a mixer checks of its inputs at every call. The weights are always checked for non-finite
// values once, before their first use. The activations (u, an initial state) are checked at every
// call by default, so that a NaN is reported where it enters; on the GPU that check ends in a
// device-to-host copy, which synchronises the stream and keeps the call out of a CUDA graph.
// Serving and graph-captured benchmarks that trust their inputs choose trusted_inputs.
#include <concepts>

namespace transmamba {

struct checked_inputs {
    static constexpr bool per_call = true;
};

struct trusted_inputs {
    static constexpr bool per_call = false;
};

template <class P>
concept input_check_policy = requires {
    { P::per_call } -> std::convertible_to<bool>;
};

}  // namespace transmamba
