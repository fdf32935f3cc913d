// language_model_config::validate (issue 15): a vocabulary of 2^62 rows of 4 wrapped vocab * d_model
// to 0 and embed() crashed; the limits shared with the checkpoint loader and the CLI's init.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include "support/bridge.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_model_model_limits {

using namespace transmamba;

namespace {
language_model_config tiny_lm(index_t vocab) {
    language_model_config c;
    c.backbone.mixer = testing::small_config(/*d_model=*/4, /*headdim=*/4, /*d_state=*/4, /*ngroups=*/1, /*chunk=*/8);
    c.backbone.num_layers = 1;
    c.vocab_size = vocab;
    return c;
}
}  // namespace

TEST_CASE("language_model_config: vocab_size 2^62 with d_model 4 is refused by validate() and by the model") {
    const auto cfg = tiny_lm(index_t(1) << 62);  // vocab * d_model = 2^64: 0 once wrapped
    CHECK_THROWS_WITH_AS(cfg.validate(), doctest::Contains("vocab_size = 4611686018427387904 exceeds the limit 2147483648"),
                         error);
    CHECK_THROWS_WITH_AS((language_model<float, cpu>(cfg)), doctest::Contains("vocab_size"), error);
}

TEST_CASE("language_model_config: the vocabulary limit is 2^31, and the counts are exact below it") {
    CHECK_THROWS_AS(tiny_lm(size_limits::vocab + 1).validate(), error);
    auto cfg = tiny_lm(size_limits::vocab);
    CHECK_NOTHROW(cfg.validate());
    CHECK(cfg.embedding_count() == (index_t(1) << 33));
    cfg.tie_word_embeddings = false;
    CHECK(cfg.parameter_count() == 2 * (index_t(1) << 33) + cfg.backbone.parameter_count());
}

TEST_CASE("language_model_config: the stack's parameter product is checked through the model's config") {
    auto cfg = tiny_lm(16);
    cfg.backbone.mixer.d_model = index_t(1) << 20;
    cfg.backbone.mixer.expand = 1;
    cfg.backbone.mixer.headdim = 1;
    cfg.backbone.mixer.ngroups = index_t(1) << 20;
    cfg.backbone.mixer.d_state = index_t(1) << 20;
    cfg.backbone.num_layers = 4;  // ~ 2^61 parameters per layer
    CHECK_THROWS_WITH_AS(cfg.validate(), doctest::Contains("overflows"), error);
    CHECK_THROWS_WITH_AS((language_model<float, cpu>(cfg)), doctest::Contains("overflows"), error);
}

}  // namespace test_model_model_limits
