// One set of size limits for every way a config is made (issue 15): config.json is held to the
// limits of core/config.hpp (size_limits), naming the config.json field, and to every overflow check
// of the library's validate(), so what the loader reads a model can be built from, and a config the
// library refuses (the CLI's init builds one) is refused by the loader too.
#include <doctest/doctest.h>

#include <transmamba/io/hf_config.hpp>
#include <transmamba/io/hf_config_model.hpp>

#include <string>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_io_config_limits {

using namespace transmamba;

namespace {
std::string config_json(const std::string& fields) {
    return R"({"model_type": "mamba2", "chunk_size": 8, "conv_kernel": 4, "expand": 2, "head_dim": 16,
               "n_groups": 2, "num_heads": 8, "state_size": 16, "tie_word_embeddings": true, )" +
           fields + "}";
}
}  // namespace

TEST_CASE("config.json: layers and vocabulary above the library's limits name the field and the limit") {
    CHECK_NOTHROW(parse_hf_mamba2_config(config_json(R"("hidden_size": 64, "num_hidden_layers": 65536, "vocab_size": 2147483648)")));
    CHECK_THROWS_WITH_AS(parse_hf_mamba2_config(config_json(R"("hidden_size": 64, "num_hidden_layers": 65537, "vocab_size": 100)")),
                         doctest::Contains("num_hidden_layers"), error);
    CHECK_THROWS_WITH_AS(parse_hf_mamba2_config(config_json(R"("hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 2147483649)")),
                         doctest::Contains("vocab_size"), error);
    // the same limits as a config built in code
    const auto at_limit = parse_hf_mamba2_config(
        config_json(R"("hidden_size": 64, "num_hidden_layers": 65536, "vocab_size": 2147483648)")).model_config();
    CHECK_NOTHROW(at_limit.validate());
    auto past = at_limit;
    past.backbone.num_layers = size_limits::layers + 1;
    CHECK_THROWS_AS(past.validate(), error);
}

TEST_CASE("config.json: sizes within the field limits whose products overflow are refused, naming the file") {
    // hidden_size, num_heads, n_groups, state_size at 2^24: the in-projection has 2^73 elements.
    const std::string text = R"({"model_type": "mamba2", "hidden_size": 16777216, "expand": 1, "head_dim": 1,
                                 "num_heads": 16777216, "n_groups": 16777216, "state_size": 16777216,
                                 "num_hidden_layers": 1, "vocab_size": 16})";
    CHECK_THROWS_WITH_AS(validate_model_config(parse_hf_mamba2_config(text, "big/config.json"), "big/config.json"),
                         doctest::Contains("config 'big/config.json' describes a model the library refuses: mixer_config: "
                                           "in_proj.weight elements"),
                         error);
}

}  // namespace test_io_config_limits
