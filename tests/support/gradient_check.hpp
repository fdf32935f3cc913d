#pragma once
// Gradient checks (docs/training.md): central finite differences of a scalar loss in float64, and
// the random linear losses L = <out, R> whose gradient with respect to out is R.
#include <cmath>
#include <cstddef>
#include <vector>

#include "support/fixtures.hpp"

namespace transmamba::testing {

// g_i by the fourth-order central difference
//   (8 (f(v + h e_i) - f(v - h e_i)) - (f(v + 2h e_i) - f(v - 2h e_i))) / (12 h),
// h = step * max(1, |v_i|); v is restored. Its truncation error is O(h^4 f^(5)) ~ 1e-12 and its
// rounding O(eps f / h) ~ 1e-12 at step 2e-4: far below the 1e-6 bar, also for the few parameters
// (A_log, dt_bias) whose loss is strongly curved, where the second-order difference was not.
template <class F>
std::vector<double> central_differences(std::vector<double>& v, F&& f, double step = 2e-4) {
    std::vector<double> g(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
        const double saved = v[i], h = step * std::max(1.0, std::abs(saved));
        const auto at = [&](double offset) {
            v[i] = saved + offset;
            return f();
        };
        const double near = at(h) - at(-h), far = at(2 * h) - at(-2 * h);
        v[i] = saved;
        g[i] = (8 * near - far) / (12 * h);
    }
    return g;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

// True when every element is finite: a NaN-poisoned output buffer was fully written.
template <class V>
bool all_finite(const V& v) {
    for (const auto& e : v)
        if (!std::isfinite(static_cast<double>(e))) return false;
    return true;
}

// The bar of every gradient check against finite differences in float64.
inline constexpr double gradient_tolerance = 1e-6;

}  // namespace transmamba::testing
