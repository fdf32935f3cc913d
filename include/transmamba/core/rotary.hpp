#pragma once
// Rotary position encoding (RoPE, rotate-half) of SPEC.md section 6, for every place that rotates:
// the CPU and CUDA prefill and the CPU and CUDA decoding step. Dims i and i + n/2 of a vector at
// position t form a pair turned by the angle t * theta^(-2i/n).
//
// The angle and its sine and cosine are taken in float64 everywhere: at t ~ 8k a float32 angle
// is off by ~1e-3 rad, so a token decoded step by step would be rotated differently from the same
// position in a forward pass (decoding must equal the forward pass, SPEC.md section 5).
#include <cmath>

#include "transmamba/core/numeric.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

struct rotation {
    double cos;
    double sin;
};

// The rotation of pair i (0 <= i < n/2) of an n-vector at position t.
TRANSMAMBA_HOST_DEVICE inline rotation rope_rotation(index_t t, index_t i, index_t n, double theta) {
    using std::cos;
    using std::pow;
    using std::sin;
    const double angle = static_cast<double>(t) * pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(n));
    return {cos(angle), sin(angle)};
}

// (first, second) of one pair turned by r, in the arithmetic type A (float or double).
template <class A>
struct rotated_pair {
    A first;
    A second;
};
template <class A>
TRANSMAMBA_HOST_DEVICE inline rotated_pair<A> rope_rotate(A first, A second, rotation r) {
    const A c = static_cast<A>(r.cos), s = static_cast<A>(r.sin);
    return {first * c - second * s, second * c + first * s};
}

}  // namespace transmamba
