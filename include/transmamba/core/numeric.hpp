#pragma once
// Scalar functions of SPEC.md section 3, written once for every backend (host and device).
#include <cmath>
#include <type_traits>

#if defined(__CUDACC__)
#define TRANSMAMBA_HOST_DEVICE __host__ __device__
#else
#define TRANSMAMBA_HOST_DEVICE
#endif

namespace transmamba {

// The type arithmetic is done in: float for float and the 16-bit storage types, double for double.
template <class T>
using compute_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// softplus(x) = log(1 + e^x), in the form that neither overflows nor loses the small tail.
template <class T>
TRANSMAMBA_HOST_DEVICE inline T softplus(T x) {
    using std::exp;
    using std::log1p;
    using std::fabs;
    return (x > T(0) ? x : T(0)) + log1p(exp(-fabs(x)));
}

template <class T>
TRANSMAMBA_HOST_DEVICE inline T silu(T x) {
    using std::exp;
    return x / (T(1) + exp(-x));
}

}  // namespace transmamba
