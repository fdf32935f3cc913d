// The language-model loss (train/cross_entropy.hpp): against a float64 loop; its gradient against
// central differences of the float64 loss; ignored rows; a NaN-poisoned gradient fully written.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "transmamba/train/cross_entropy.hpp"

using namespace transmamba;

namespace {

double reference_loss(const std::vector<double>& z, const std::vector<std::int64_t>& t, index_t V) {
    double sum = 0;
    int n = 0;
    for (std::size_t r = 0; r < t.size(); ++r) {
        if (t[r] == ignore_id) continue;
        double m = -1e300, s = 0;
        for (index_t v = 0; v < V; ++v) m = std::max(m, z[r * V + v]);
        for (index_t v = 0; v < V; ++v) s += std::exp(z[r * V + v] - m);
        sum += m + std::log(s) - z[r * V + std::size_t(t[r])];
        ++n;
    }
    return sum / n;
}

}  // namespace

TEST_CASE("cross entropy: loss, accuracy and gradient against float64") {
    const index_t rows = 7, V = 11;
    std::mt19937_64 rng(4);
    std::normal_distribution<double> normal(0.0, 3.0);
    std::vector<double> z(rows * V);
    for (auto& x : z) x = normal(rng);
    std::vector<std::int64_t> t{3, ignore_id, 0, 10, ignore_id, 5, 7};
    // Make row 2's target its argmax, row 3's not.
    z[2 * V + 0] = 50;
    z[3 * V + 4] = 60;
    std::vector<double> dz(rows * V, std::numeric_limits<double>::quiet_NaN());
    const auto got = cross_entropy<double>({z.data(), {rows, V}}, t, {dz.data(), {rows, V}});
    CHECK(got.scored == 5);
    CHECK(got.loss == doctest::Approx(reference_loss(z, t, V)).epsilon(1e-14));
    CHECK(got.correct >= 1);
    CHECK(got.correct <= 4);
    // Every gradient element written; central differences of the float64 loss.
    for (index_t i = 0; i < rows * V; ++i) {
        REQUIRE(std::isfinite(dz[std::size_t(i)]));
        auto zp = z, zm = z;
        const double h = 1e-5;
        zp[std::size_t(i)] += h;
        zm[std::size_t(i)] -= h;
        const double fd = (reference_loss(zp, t, V) - reference_loss(zm, t, V)) / (2 * h);
        CHECK(std::fabs(dz[std::size_t(i)] - fd) <= 1e-8 + 1e-6 * std::fabs(fd));
    }
    for (index_t v = 0; v < V; ++v) CHECK(dz[std::size_t(1 * V + v)] == 0.0);  // an ignored row

    // float logits: the same loss to fp32 rounding; argmax decides accuracy.
    std::vector<float> zf(z.begin(), z.end());
    const auto f = cross_entropy<float>({zf.data(), {rows, V}}, t);
    CHECK(f.loss == doctest::Approx(got.loss).epsilon(1e-5));
    CHECK(f.correct == got.correct);
}

TEST_CASE("cross entropy: accuracy counts argmax hits; bad targets refused") {
    std::vector<float> z{0, 5, 1, /**/ 3, 0, 0};
    std::vector<std::int64_t> t{1, 2};
    const auto r = cross_entropy<float>({z.data(), {2, 3}}, t);
    CHECK(r.correct == 1);
    CHECK(r.scored == 2);
    std::vector<std::int64_t> bad{1, 3};
    CHECK_THROWS_WITH_AS(cross_entropy<float>({z.data(), {2, 3}}, bad), doctest::Contains("target 3 of row 1"), error);
}
