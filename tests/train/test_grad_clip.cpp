// Clipping by global norm (train/grad_clip.hpp): the norm against a float64 sum, the scale rule,
// and a non-finite gradient named.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "transmamba/train/grad_clip.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_train_grad_clip {

using namespace transmamba;

TEST_CASE("global norm: the square root of every element's square, over all gradients") {
    std::mt19937_64 rng(3);
    std::normal_distribution<float> normal;
    std::vector<float> a(1000), b(17);
    double sum = 0;
    for (auto* v : {&a, &b})
        for (auto& x : *v) {
            x = normal(rng);
            sum += double(x) * double(x);
        }
    std::vector<named_span<float>> g{{"a", a, {1000}}, {"b", b, {17}}};
    const double norm = global_norm(g);
    CHECK(std::fabs(norm - std::sqrt(sum)) <= 1e-12 * std::sqrt(sum));
    CHECK(norm > 20.0);  // ~sqrt(1017): not vacuous

    CHECK(clip_scale(norm, 1.0) == doctest::Approx(1.0 / (norm + 1e-6)).epsilon(1e-15));
    CHECK(clip_scale(0.5, 1.0) == 1.0);
    CHECK(clip_scale(norm, 0.0) == 1.0);  // clipping off
    // The clipped gradient has norm max_norm (up to the 1e-6 guard).
    CHECK(norm * clip_scale(norm, 2.0) == doctest::Approx(2.0).epsilon(1e-6));
}

TEST_CASE("global norm: a NaN or an infinity names the gradient and the index") {
    std::vector<float> a(4, 1.0f), b(4, 1.0f);
    b[2] = std::numeric_limits<float>::quiet_NaN();
    std::vector<named_span<float>> g{{"layers.0.mixer.D", a, {4}}, {"lm_head.weight", b, {4}}};
    CHECK_THROWS_WITH_AS(global_norm(g), doctest::Contains("'lm_head.weight'"), error);
    CHECK_THROWS_WITH_AS(global_norm(g), doctest::Contains("flat index 2"), error);
    b[2] = std::numeric_limits<float>::infinity();
    CHECK_THROWS_WITH_AS(global_norm(g), doctest::Contains("non-finite"), error);
}

}  // namespace test_train_grad_clip
