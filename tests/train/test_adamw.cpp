// AdamW against a float64 reference written from its definition (Loshchilov & Hutter's Algorithm 2
// in PyTorch's form, train/adamw.hpp): several updates with a changing learning rate and gradient
// scale, decayed and undecayed parameters; the decay policy; bad calls refused.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "transmamba/train/adamw.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_train_adamw {

using namespace transmamba;

namespace {

// One parameter's update t in double, straight from the formulas.
struct reference_adamw {
    double b1, b2, eps, wd;
    std::vector<double> theta, m, v;
    void step(const std::vector<double>& grad, double lr, double scale, bool decayed, int t) {
        for (std::size_t i = 0; i < theta.size(); ++i) {
            const double g = grad[i] * scale;
            m[i] = b1 * m[i] + (1 - b1) * g;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
            if (decayed) theta[i] *= 1 - lr * wd;
            theta[i] -= lr * mhat / (std::sqrt(vhat) + eps);
        }
    }
};

template <class T>
void check_against_reference(double bound) {
    std::mt19937_64 rng(7);
    std::normal_distribution<double> normal;
    const adamw_options opt{0.9, 0.95, 1e-8, 0.1};
    // A decayed matrix and an undecayed vector, by the default policy's names.
    std::vector<std::vector<T>> values{std::vector<T>(37), std::vector<T>(5)};
    std::vector<std::vector<T>> grads{std::vector<T>(37), std::vector<T>(5)};
    const std::vector<std::string> names{"layers.0.mixer.in_proj.weight", "layers.0.mixer.A_log"};
    const std::vector<std::vector<index_t>> shapes{{37, 1}, {5}};
    std::vector<reference_adamw> ref;
    for (std::size_t p = 0; p < 2; ++p) {
        reference_adamw r{opt.beta1, opt.beta2, opt.eps, opt.weight_decay, {}, {}, {}};
        for (auto& x : values[p]) {
            x = static_cast<T>(normal(rng));
            r.theta.push_back(static_cast<double>(x));
        }
        r.m.assign(values[p].size(), 0.0);
        r.v.assign(values[p].size(), 0.0);
        ref.push_back(r);
    }
    auto spans = [&](auto& lists) {
        using E = typename std::remove_reference_t<decltype(lists[0])>::value_type;
        std::vector<named_span<E>> out;
        for (std::size_t p = 0; p < 2; ++p) out.push_back({names[p], std::span<E>(lists[p]), shapes[p]});
        return out;
    };
    adamw<T> optimizer(opt, spans(values));
    CHECK(optimizer.slots()[0].decayed);
    CHECK_FALSE(optimizer.slots()[1].decayed);

    const double lrs[] = {1e-3, 3e-3, 2e-3, 5e-4, 1e-2, 1e-3};
    const double scales[] = {1.0, 0.5, 1.0, 0.25, 1.0, 0.9};
    for (int t = 1; t <= 6; ++t) {
        std::vector<std::vector<double>> g64(2);
        for (std::size_t p = 0; p < 2; ++p)
            for (auto& g : grads[p]) {
                g = static_cast<T>(normal(rng) * (t == 3 ? 1e-4 : 1.0));  // a step with tiny gradients: eps matters
                g64[p].push_back(static_cast<double>(g));
            }
        optimizer.step(spans(values), spans(grads), lrs[t - 1], scales[t - 1]);
        for (std::size_t p = 0; p < 2; ++p) ref[p].step(g64[p], lrs[t - 1], scales[t - 1], p == 0, t);
    }
    CHECK(optimizer.steps() == 6);
    double worst = 0;
    for (std::size_t p = 0; p < 2; ++p)
        for (std::size_t i = 0; i < values[p].size(); ++i) {
            const double got = static_cast<double>(values[p][i]), want = ref[p].theta[i];
            REQUIRE(std::isfinite(got));
            worst = std::max(worst, std::fabs(got - want) / std::max(1.0, std::fabs(want)));
            const double m = static_cast<double>(optimizer.slots()[p].exp_avg.data()[i]);
            const double v = static_cast<double>(optimizer.slots()[p].exp_avg_sq.data()[i]);
            CHECK(std::fabs(m - ref[p].m[i]) <= bound * std::max(1e-3, std::fabs(ref[p].m[i])));
            CHECK(std::fabs(v - ref[p].v[i]) <= bound * std::max(1e-3, std::fabs(ref[p].v[i])));
        }
    CHECK(worst < bound);
    // The weights moved by about lr per step: the check above is not vacuous.
    CHECK(std::fabs(static_cast<double>(values[0][0]) - ref[0].theta[0]) < 1e-2);
}

}  // namespace

TEST_CASE("adamw: double moments match the float64 reference to rounding") { check_against_reference<double>(1e-13); }
TEST_CASE("adamw: float moments match the float64 reference (fp32 bound)") { check_against_reference<float>(1e-5); }

TEST_CASE("adamw: decoupled decay shrinks decayed weights by lr * lambda with a zero gradient") {
    std::vector<float> w{2.0f, -4.0f}, b{3.0f}, gw{0.0f, 0.0f}, gb{0.0f};
    std::vector<named_span<float>> p{{"lm_head.weight", w, {1, 2}}, {"layers.0.mixer.conv1d.bias", b, {1}}};
    std::vector<named_span<float>> g{{"lm_head.weight", gw, {1, 2}}, {"layers.0.mixer.conv1d.bias", gb, {1}}};
    adamw<float> opt(adamw_options{0.9, 0.95, 1e-8, 0.5}, p);
    opt.step(p, g, 0.1);
    CHECK(w[0] == doctest::Approx(2.0 * (1 - 0.05)).epsilon(1e-7));
    CHECK(w[1] == doctest::Approx(-4.0 * (1 - 0.05)).epsilon(1e-7));
    CHECK(b[0] == 3.0f);  // a bias is not decayed, and a zero gradient does not move it
}

TEST_CASE("adamw: the default decay policy exempts norms, biases and the SSM parameters") {
    const std::vector<index_t> vec{4}, mat{4, 4};
    for (const char* name : {"backbone.norm_f.weight", "backbone.layers.3.norm.weight", "backbone.layers.0.mixer.norm.weight",
                             "backbone.layers.0.mixer.conv1d.bias", "backbone.layers.0.mixer.A_log",
                             "backbone.layers.0.mixer.D", "backbone.layers.1.mixer.dt_bias"})
        CHECK_MESSAGE(!decay_weight_matrices::decays(name, vec), name);
    for (const char* name : {"backbone.embeddings.weight", "lm_head.weight", "backbone.layers.0.mixer.in_proj.weight",
                             "backbone.layers.0.mixer.out_proj.weight", "backbone.layers.0.mixer.conv1d.weight"})
        CHECK_MESSAGE(decay_weight_matrices::decays(name, mat), name);
    CHECK(decay_everything::decays("backbone.layers.0.mixer.D", vec));
    CHECK_FALSE(decay_nothing::decays("lm_head.weight", mat));
}

TEST_CASE("adamw: refuses bad options and mismatched lists") {
    std::vector<float> w(3, 1.0f), g(3, 1.0f), g2(2, 1.0f);
    std::vector<named_span<float>> p{{"a", w, {3}}};
    CHECK_THROWS_WITH_AS(adamw<float>(adamw_options{1.0, 0.95, 1e-8, 0.1}, p), doctest::Contains("beta1"), error);
    CHECK_THROWS_WITH_AS(adamw<float>(adamw_options{0.9, 0.95, 0.0, 0.1}, p), doctest::Contains("eps"), error);
    adamw<float> opt(adamw_options{}, p);
    std::vector<named_span<float>> wrong_name{{"b", g, {3}}}, wrong_shape{{"a", g2, {2}}}, good{{"a", g, {3}}};
    CHECK_THROWS_WITH_AS(opt.step(p, wrong_name, 1e-3), doctest::Contains("'b'"), error);
    CHECK_THROWS_WITH_AS(opt.step(p, wrong_shape, 1e-3), doctest::Contains("shape (2)"), error);
    CHECK_THROWS_WITH_AS(opt.step(p, good, std::nan("")), doctest::Contains("learning rate"), error);
    CHECK(w[0] == 1.0f);  // nothing was written by a refused call
    CHECK(opt.steps() == 0);
}

}  // namespace test_train_adamw
