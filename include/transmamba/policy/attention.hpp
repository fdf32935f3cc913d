#pragma once
// Attention variants (SPEC.md sections 3 and 6), FlashInfer-style: one kernel template per backend,
// and a variant is a small struct whose static members that kernel reads. A new variant is a new
// struct, not a new kernel.
#include <cmath>
#include <concepts>

#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

// Positions in attention mode.
struct no_position_encoding {
    static constexpr bool rotary = false;
};
// RoPE on C and B in attention mode only (the SSM reads them unrotated), rotate-half convention
// (core/rotary.hpp computes it for every backend):
// dims i and i + n/2 form a pair turned by angle t * theta^(-2i/n) at token t. n must be even.
template <double Theta = 10000.0>
struct rope_position {
    static constexpr bool rotary = true;
    static constexpr double theta = Theta;
};

// Softmax scale as a function of d_state.
struct inv_sqrt_state_scale {
    static double value(index_t d_state) { return 1.0 / std::sqrt(static_cast<double>(d_state)); }
};
template <double Scale>
struct fixed_scale {
    static double value(index_t) { return Scale; }
};

// GateByZ: multiply attention tokens' outputs by silu(z) too (the paper's default does not: its
//          Table 10 finds that gating attention by z hurts).
// SkipD:   add D * x to attention tokens' outputs (the default does, as SSM tokens).
template <bool GateByZ = false, bool SkipD = true, class Position = no_position_encoding,
          class Scale = inv_sqrt_state_scale>
struct attention_variant {
    static constexpr bool gate_by_z = GateByZ;
    static constexpr bool skip_D = SkipD;
    using position = Position;
    using scale = Scale;
};

template <class A>
concept attention_policy = requires(index_t n) {
    { A::gate_by_z } -> std::convertible_to<bool>;
    { A::skip_D } -> std::convertible_to<bool>;
    { A::position::rotary } -> std::convertible_to<bool>;
    { A::scale::value(n) } -> std::convertible_to<double>;
};

// The paper's variant and its named alternatives.
using paper_attention = attention_variant<>;
using z_gated_attention = attention_variant<true>;
using no_skip_attention = attention_variant<false, false>;
using rope_attention = attention_variant<false, true, rope_position<>>;

}  // namespace transmamba
