#include <doctest/doctest.h>

#include <transmamba/decode/sampling.hpp>

#include <limits>
#include <map>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_decode_sampling {

using namespace transmamba;

TEST_CASE("greedy sampling is the argmax") {
    sampler s({});
    const std::vector<float> logits{0.1f, 2.5f, -1.0f, 2.4f};
    CHECK(s.next(logits) == 1);
}

TEST_CASE("top-k 1 is greedy at any temperature; top-k limits the support") {
    const std::vector<float> logits{0.0f, 1.0f, 3.0f, 2.0f, -5.0f};
    sampler one({1.5, 1, 1.0, 7});
    for (int i = 0; i < 50; ++i) CHECK(one.next(logits) == 2);
    sampler two({5.0, 2, 1.0, 7});
    std::map<index_t, int> seen;
    for (int i = 0; i < 400; ++i) ++seen[two.next(logits)];
    CHECK(seen.size() == 2);
    CHECK(seen.count(2) == 1);
    CHECK(seen.count(3) == 1);
}

TEST_CASE("top-p keeps the smallest set reaching the mass") {
    // probabilities at temperature 1: about 0.665, 0.245, 0.090 (+ tiny)
    const std::vector<float> logits{2.0f, 1.0f, 0.0f, -10.0f};
    sampler s({1.0, 0, 0.8, 3});
    std::map<index_t, int> seen;
    for (int i = 0; i < 2000; ++i) ++seen[s.next(logits)];
    CHECK(seen.size() == 2);  // 0.665 < 0.8 <= 0.665 + 0.245
    // renormalised over {0, 1}: 0.731 / 0.269
    CHECK(seen[0] / 2000.0 == doctest::Approx(0.731).epsilon(0.05));
}

TEST_CASE("the same seed gives the same tokens, another seed others") {
    std::vector<float> logits(50);
    for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = float(i % 7) * 0.3f;
    auto draw = [&](std::uint64_t seed) {
        sampler s({1.0, 0, 1.0, seed});
        std::vector<index_t> out;
        for (int i = 0; i < 30; ++i) out.push_back(s.next(logits));
        return out;
    };
    CHECK(draw(5) == draw(5));
    CHECK(draw(5) != draw(6));
}

TEST_CASE("bad sampling options and logits are errors") {
    CHECK_THROWS_AS(sampler({-1.0, 0, 1.0, 0}), error);
    CHECK_THROWS_AS(sampler({1.0, -2, 1.0, 0}), error);
    CHECK_THROWS_AS(sampler({1.0, 0, 0.0, 0}), error);
    sampler s({});
    const std::vector<float> bad{1.0f, std::numeric_limits<float>::quiet_NaN()};
    CHECK_THROWS_WITH_AS(s.next(bad), doctest::Contains("logit 1 is not finite"), error);
}

TEST_CASE("double logits: the same draws as float logits of the same values, read at double precision") {
    // Values exact in float: the two paths see the same numbers and must draw the same tokens.
    std::vector<float> as_float(64);
    for (std::size_t i = 0; i < as_float.size(); ++i) as_float[i] = float(int(i * 37 % 64) - 32) / 8.0f;
    const std::vector<double> as_double(as_float.begin(), as_float.end());
    for (const sampling_options opt : {sampling_options{}, sampling_options{0.9, 0, 1.0, 11}, sampling_options{1.3, 10, 0.9, 12}}) {
        sampler f(opt), d(opt);
        for (int i = 0; i < 200; ++i) CHECK(f.next(as_float) == d.next(as_double));
    }
    // A difference below float's resolution still decides the argmax: the logits are not narrowed.
    const std::vector<double> close{1.0, 1.0 + 1e-12, 1.0 - 1e-12};
    CHECK(sampler({}).next(close) == 1);
    const std::vector<double> bad{0.0, std::numeric_limits<double>::infinity()};
    sampler s({});
    CHECK_THROWS_WITH_AS(s.next(bad), doctest::Contains("logit 1 is not finite"), error);
}

}  // namespace test_decode_sampling
