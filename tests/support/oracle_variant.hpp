#pragma once
// The float64 oracle configured as an attention variant policy is (D skip, RoPE, the score scale),
// so that a kernel test compares the policy with the oracle of the same variant.
#include <transmamba/core/config.hpp>

#include "reference/reference.hpp"

namespace transmamba::testing {

template <class Variant>
reference::variant oracle_variant(index_t d_state) {
    reference::variant v;
    v.d_skip_attention = Variant::skip_D;
    v.rope = Variant::position::rotary;
    if constexpr (Variant::position::rotary) v.rope_theta = Variant::position::theta;
    v.scale = Variant::scale::value(d_state);
    return v;
}

}  // namespace transmamba::testing
