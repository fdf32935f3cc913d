#pragma once
// Gradient checks (docs/training.md): central finite differences of a scalar loss in float64, and
// the random linear losses L = <out, R> whose gradient with respect to out is R.
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include <transmamba/training.hpp>

#include "support/fixtures.hpp"

namespace transmamba::testing {

// g_i by the sixth-order central difference
//   (45 (f(+h) - f(-h)) - 9 (f(+2h) - f(-2h)) + (f(+3h) - f(-3h))) / (60 h)  along e_i,
// h = step * max(1, |v_i|); v is restored. Its truncation error is O(h^6 f^(7)), its rounding
// O(eps |f| / h). At step 2e-4 the whole mixer's worst case (A_log, whose gradient is small next to
// the loss) measured 4e-8, against 2e-7 for the fourth-order and 8e-7 for the second-order
// difference: the loss is strongly curved in A_log and dt_bias (through exp(dt A)) and in the conv
// bias (through the RMSNorm of groups of 2 channels).
template <class F>
std::vector<double> central_differences(std::vector<double>& v, F&& f, double step = 2e-4) {
    std::vector<double> g(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
        const double saved = v[i], h = step * std::max(1.0, std::abs(saved));
        const auto across = [&](double k) {
            v[i] = saved + k * h;
            const double up = f();
            v[i] = saved - k * h;
            return up - f();
        };
        const double d1 = across(1), d2 = across(2), d3 = across(3);
        v[i] = saved;
        g[i] = (45 * d1 - 9 * d2 + d3) / (60 * h);
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

// max |got - want| / max(max |want|, 1e-9): relative, except for a gradient that is zero in exact
// arithmetic (one key: the softmax is 1 whatever B and C are), which the finite differences find
// exactly and the kernels to within rounding (~1e-17).
inline double gradient_error(const std::vector<double>& got, const std::vector<double>& want) {
    if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
    double top = 0, diff = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        if (!std::isfinite(got[i]) || !std::isfinite(want[i])) return std::numeric_limits<double>::infinity();
        top = std::max(top, std::abs(want[i]));
        diff = std::max(diff, std::abs(got[i] - want[i]));
    }
    return diff / std::max(top, 1e-9);
}

// Gradient views for the attention, converter and scan backward kernels, laid out as the mixer
// lays them out: dx, dB, dC strided inside one row per token, [dx | dB | dC | pad], as
// ssm_operands(..., strided = true) lays out x, B, C. The kernels add into them, so they start at
// zero; the pad starts NaN and must stay so (nothing written outside the views).
template <class T>
struct ssm_gradient_buffers {
    reference::dims d;
    index_t width;
    std::vector<T> xbc, dt, A, D;
    ssm_grads<T> grads;

    explicit ssm_gradient_buffers(const reference::dims& dims) : d(dims) {
        const index_t batch = d.batch, L = d.seqlen, h = d.nheads(), p = d.headdim, g = d.ngroups, n = d.d_state;
        width = h * p + 2 * g * n + 3;
        xbc.assign(static_cast<std::size_t>(batch * L * width), T(0));
        for (index_t r = 0; r < batch * L; ++r)
            for (index_t c = h * p + 2 * g * n; c < width; ++c) xbc[std::size_t(r * width + c)] = nan_value<T>();
        dt.assign(static_cast<std::size_t>(batch * L * h), T(0));
        A.assign(static_cast<std::size_t>(batch * h), T(0));
        D.assign(static_cast<std::size_t>(batch * h), T(0));
        grads.x = tensor_view<T, 4>(xbc.data(), {batch, L, h, p}, {L * width, width, p, 1});
        grads.B = tensor_view<T, 4>(xbc.data() + h * p, {batch, L, g, n}, {L * width, width, n, 1});
        grads.C = tensor_view<T, 4>(xbc.data() + h * p + g * n, {batch, L, g, n}, {L * width, width, n, 1});
        grads.dt = tensor_view<T, 3>(dt.data(), {batch, L, h});
        grads.A = tensor_view<T, 2>(A.data(), {batch, h});
        grads.D = tensor_view<T, 2>(D.data(), {batch, h});
    }

    // In the oracle's layouts: (b, L, h, p), (b, L, g, n), (b, L, h); A and D summed over the batch.
    std::vector<double> x() const { return columns(0, d.nheads() * d.headdim); }
    std::vector<double> B() const { return columns(d.nheads() * d.headdim, d.ngroups * d.d_state); }
    std::vector<double> C() const { return columns(d.nheads() * d.headdim + d.ngroups * d.d_state, d.ngroups * d.d_state); }
    std::vector<double> time_steps() const { return reference::to_double(dt); }
    std::vector<double> A_total() const { return batch_sum(A); }
    std::vector<double> D_total() const { return batch_sum(D); }
    bool pad_untouched() const {
        const index_t used = d.nheads() * d.headdim + 2 * d.ngroups * d.d_state;
        for (index_t r = 0; r < d.batch * d.seqlen; ++r)
            for (index_t c = used; c < width; ++c)
                if (!std::isnan(static_cast<double>(xbc[std::size_t(r * width + c)]))) return false;
        return true;
    }

private:
    std::vector<double> columns(index_t c0, index_t count) const {
        std::vector<double> r;
        for (index_t row = 0; row < d.batch * d.seqlen; ++row)
            for (index_t c = c0; c < c0 + count; ++c) r.push_back(static_cast<double>(xbc[std::size_t(row * width + c)]));
        return r;
    }
    std::vector<double> batch_sum(const std::vector<T>& v) const {
        std::vector<double> r(static_cast<std::size_t>(d.nheads()), 0.0);
        for (index_t b = 0; b < d.batch; ++b)
            for (index_t k = 0; k < d.nheads(); ++k) r[std::size_t(k)] += static_cast<double>(v[std::size_t(b * d.nheads() + k)]);
        return r;
    }
};

}  // namespace transmamba::testing
