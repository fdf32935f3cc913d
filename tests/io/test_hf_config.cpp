// io/hf_config.hpp: a transformers Mamba2Config config.json, its non-finite tokens, the transmamba
// object, and errors that name the file and the field.
#include <doctest/doctest.h>

#include <transmamba/io/hf_config.hpp>
#include <transmamba/io/hf_config_model.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_io_hf_config {

using namespace transmamba;

namespace {

// As transformers writes it (json.dumps(..., indent=2, sort_keys=True)), with the bare Infinity token
// of versions before 5 (5.x writes {"__float__": "Infinity"}: see tests/data/*/config.json).
const std::string hf_text = R"({
  "architectures": [
    "Mamba2ForCausalLM"
  ],
  "bos_token_id": 0,
  "chunk_size": 8,
  "conv_kernel": 4,
  "dtype": "float32",
  "eos_token_id": 2,
  "expand": 2,
  "head_dim": 16,
  "hidden_act": "silu",
  "hidden_size": 64,
  "initializer_range": 0.1,
  "layer_norm_epsilon": 1e-05,
  "model_type": "mamba2",
  "n_groups": 2,
  "num_heads": 8,
  "num_hidden_layers": 2,
  "pad_token_id": 1,
  "rescale_prenorm_residual": false,
  "residual_in_fp32": true,
  "rms_norm": true,
  "state_size": 16,
  "tie_word_embeddings": false,
  "time_step_floor": 0.0001,
  "time_step_limit": [
    0.0,
    Infinity
  ],
  "time_step_max": 0.1,
  "time_step_min": 0.001,
  "time_step_rank": 4,
  "transformers_version": "5.17.0",
  "use_bias": false,
  "use_cache": true,
  "use_conv_bias": true,
  "vocab_size": 96
}
)";

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const error& e) {
        return e.what();
    }
    return "(no error)";
}

// hf_text with `field` set to the JSON text `value` (or removed when value is empty).
std::string with_field(const std::string& field, const std::string& value) {
    auto j = nlohmann::json::parse(io_detail::mark_nonfinite_tokens(hf_text));
    if (value.empty()) j.erase(field);
    else j[field] = nlohmann::json::parse(io_detail::mark_nonfinite_tokens(value));
    std::string text = j.dump(2);
    // markers back to tokens, as in a real file
    for (std::string_view token : {"-Infinity", "Infinity", "NaN"}) {
        std::string marked(1, '"');
        marked.append(io_detail::nonfinite_marker).append(token).append(1, '"');
        for (auto at = text.find(marked); at != std::string::npos; at = text.find(marked, at)) text.replace(at, marked.size(), token);
    }
    return text;
}

void check_field_error(const std::string& field, const std::string& value, const std::string& expected) {
    const auto msg = error_of([&] { (void)parse_hf_mamba2_config(with_field(field, value), "m/config.json"); });
    INFO(msg);
    CHECK(msg.find("config 'm/config.json'") != std::string::npos);
    CHECK(msg.find(expected) != std::string::npos);
}

}  // namespace

TEST_CASE("hf config: a transformers Mamba2 config.json maps onto the model config") {
    const auto c = parse_hf_mamba2_config(hf_text, "m/config.json");
    CHECK(c.hidden_size == 64);
    CHECK(c.num_heads == 8);
    CHECK(c.n_groups == 2);
    CHECK(c.vocab_size == 96);
    CHECK(!c.tie_word_embeddings);
    CHECK(c.time_step_limit[0] == 0.0);
    CHECK(std::isinf(c.time_step_limit[1]));
    CHECK(!c.transmamba);
    const auto m = c.model_config();
    CHECK(m.backbone.mixer.d_model == 64);
    CHECK(m.backbone.mixer.expand == 2);
    CHECK(m.backbone.mixer.headdim == 16);
    CHECK(m.backbone.mixer.nheads() == 8);
    CHECK(m.backbone.mixer.d_state == 16);
    CHECK(m.backbone.mixer.ngroups == 2);
    CHECK(m.backbone.mixer.d_conv == 4);
    CHECK(m.backbone.mixer.chunk_size == 8);
    CHECK(m.backbone.mixer.norm_eps == 1e-5);
    CHECK(std::isinf(m.backbone.mixer.dt_max));
    CHECK(m.backbone.num_layers == 2);
    CHECK(m.backbone.d_ff == 0);
    CHECK(m.vocab_size == 96);
    CHECK_NOTHROW(m.validate());
    // Fields the model does not use are kept.
    CHECK(c.extra.at("pad_token_id") == 1);
    CHECK(c.extra.at("transformers_version") == "5.17.0");
    CHECK(c.extra.at("time_step_min") == 0.001);
    CHECK(!c.extra.contains("hidden_size"));
    CHECK(c.extra.at("residual_in_fp32") == true);  // ignored, kept, written back
    const auto fp16_residual = parse_hf_mamba2_config(with_field("residual_in_fp32", "false"), "x");
    CHECK(to_json_text(fp16_residual).find("\"residual_in_fp32\": false") != std::string::npos);
    // The parameter count the loader checks files against.
    const std::uint64_t layer = (2 * 128 + 2 * 32 + 8) * 64 + (128 + 64) * 4 + (128 + 64) + 3 * 8 + 128 + 64 * 128 + 64;
    CHECK(c.parameter_count() == 2 * layer + 2 * 96 * 64 + 64);
}

TEST_CASE("hf config: missing fields take Mamba2Config's defaults") {
    const auto c = parse_hf_mamba2_config(R"({"hidden_size": 64, "num_heads": 2, "n_groups": 1})", "x");
    CHECK(c.state_size == 128);
    CHECK(c.head_dim == 64);
    CHECK(c.expand == 2);
    CHECK(c.num_hidden_layers == 64);
    CHECK(c.vocab_size == 32768);
    CHECK(!c.tie_word_embeddings);
    CHECK(c.use_conv_bias);
    CHECK(c.chunk_size == 256);
    // The default num_heads (128) does not fit hidden_size 64: named.
    const auto msg = error_of([] { (void)parse_hf_mamba2_config(R"({"hidden_size": 64})", "x"); });
    CHECK(msg.find("field 'num_heads' = 128: num_heads * head_dim = 8192 must equal expand * hidden_size = 128") != std::string::npos);
}

TEST_CASE("hf config: Infinity, -Infinity and NaN tokens as Python's json writes them") {
    using io_detail::mark_nonfinite_tokens;
    CHECK(mark_nonfinite_tokens("[0.0, Infinity]") == R"([0.0, "@transmamba:Infinity"])");
    CHECK(mark_nonfinite_tokens("[-Infinity,NaN]") == R"(["@transmamba:-Infinity","@transmamba:NaN"])");
    // Not inside strings (escaped quotes included), not inside other words.
    CHECK(mark_nonfinite_tokens(R"({"Infinity": "NaN \" Infinity"})") == R"({"Infinity": "NaN \" Infinity"})");
    CHECK(mark_nonfinite_tokens("[InfinityX, xNaN, NaN_]") == "[InfinityX, xNaN, NaN_]");

    auto c = parse_hf_mamba2_config(with_field("time_step_limit", "[0.001, 0.1]"), "x");
    CHECK(c.time_step_limit == std::array<double, 2>{0.001, 0.1});
    CHECK(c.model_config().backbone.mixer.dt_min == 0.001);
    check_field_error("time_step_limit", "[0.0, NaN]", "field 'time_step_limit' = [0, nan] must be [min, max]");
    check_field_error("time_step_limit", "[Infinity, Infinity]", "field 'time_step_limit'");
    check_field_error("time_step_limit", "[-Infinity, 1.0]", "field 'time_step_limit'");
    check_field_error("time_step_limit", "[0.5, 0.1]", "field 'time_step_limit' = [0.5, 0.1]");
    check_field_error("time_step_limit", "[0.0]", "must be a list [min, max]");
    check_field_error("time_step_limit", R"([0.0, "inf"])", "field 'time_step_limit' must be a number, got \"inf\"");
    check_field_error("layer_norm_epsilon", "Infinity", "field 'layer_norm_epsilon' = inf must be in (0, 1)");
    // A non-finite value in a field the model does not read is kept and written back as a token.
    c = parse_hf_mamba2_config(with_field("some_limit", "-Infinity"), "x");
    CHECK(to_json_text(c).find("\"some_limit\": -Infinity") != std::string::npos);
    // transformers 5.x's spelling.
    c = parse_hf_mamba2_config(with_field("time_step_limit", R"([0.0, {"__float__": "Infinity"}])"), "x");
    CHECK(std::isinf(c.time_step_limit[1]));
    check_field_error("time_step_limit", R"([0.0, {"__float__": "inf"}])", "must be a number, got {\"__float__\":\"inf\"}");
    check_field_error("time_step_limit", R"([{"__float__": "NaN"}, 1.0])", "field 'time_step_limit' = [nan, 1]");
    check_field_error("layer_norm_epsilon", R"({"__float__": "Infinity", "x": 1})", "field 'layer_norm_epsilon' must be a number");
    // A strict parser is what rejects the tokens: no marker, no parse.
    CHECK_THROWS_AS(
        [] {
            const auto j = nlohmann::json::parse("[Infinity]");
            (void)j;
        }(),
        nlohmann::json::exception);
}

TEST_CASE("hf config: bad fields are named") {
    check_field_error("hidden_size", "\"64\"", "field 'hidden_size' must be an integer, got \"64\"");
    check_field_error("hidden_size", "64.0", "field 'hidden_size' must be an integer");
    check_field_error("hidden_size", "0", "field 'hidden_size' = 0 is out of range");
    check_field_error("state_size", "-16", "field 'state_size' = -16 is out of range");
    check_field_error("vocab_size", "99999999999999", "field 'vocab_size' = 99999999999999 is out of range");
    check_field_error("num_heads", "7", "field 'num_heads' = 7: num_heads * head_dim = 112 must equal expand * hidden_size = 128");
    check_field_error("n_groups", "3", "field 'n_groups' = 3 does not divide num_heads = 8");
    check_field_error("use_bias", "true", "field 'use_bias' is true");
    check_field_error("use_conv_bias", "1", "field 'use_conv_bias' must be true or false");
    check_field_error("tie_word_embeddings", "\"yes\"", "field 'tie_word_embeddings' must be true or false");
    check_field_error("hidden_act", "\"gelu\"", "field 'hidden_act' = \"gelu\": only \"silu\"");
    check_field_error("model_type", "\"mamba\"", "field 'model_type' = \"mamba\"");
    check_field_error("rms_norm", "\"yes\"", "field 'rms_norm' must be true or false");
    check_field_error("layer_norm_epsilon", "0", "field 'layer_norm_epsilon' = 0 must be in (0, 1)");
    check_field_error("num_hidden_layers", "0", "field 'num_hidden_layers' = 0 is out of range");
    auto msg = error_of([] { (void)parse_hf_mamba2_config("{\"hidden_size\": 64,", "m/config.json"); });
    CHECK(msg.find("config 'm/config.json' is not valid JSON") != std::string::npos);
    msg = error_of([] { (void)parse_hf_mamba2_config("[1, 2]", "m/config.json"); });
    CHECK(msg.find("config 'm/config.json' is not a JSON object") != std::string::npos);
    msg = error_of([] { (void)read_hf_mamba2_config("/nonexistent/config.json"); });
    CHECK(msg.find("cannot open '/nonexistent/config.json'") != std::string::npos);
}

TEST_CASE("hf config: the transmamba object") {
    auto c = parse_hf_mamba2_config(
        with_field("transmamba", R"({"version": 1, "kind": "per_layer", "transpoints": [9, 3], "attention": "paper"})"), "x");
    REQUIRE(c.transmamba);
    CHECK(c.transmamba->schedule == transpoint_schedule::per_layer({9, 3}));
    CHECK(c.transmamba->attention == attention_spec{});
    CHECK(!c.extra.contains("transmamba"));

    c = parse_hf_mamba2_config(with_field("transmamba", R"({"transpoints": [0, 128, 256]})"), "x");
    CHECK(c.transmamba->schedule == transpoint_schedule::cyclic({0, 128, 256}));  // kind defaults to cyclic

    c = parse_hf_mamba2_config(with_field("transmamba", R"({"kind": "fixed", "transpoints": [64], "attention": "rope"})"), "x");
    CHECK(c.transmamba->schedule == transpoint_schedule::fixed(64));
    CHECK(c.transmamba->attention.rope);
    CHECK(c.transmamba->attention.name() == "rope");

    c = parse_hf_mamba2_config(
        with_field("transmamba", R"({"transpoints": [1], "attention": {"gate_by_z": true, "skip_D": false, "scale": 0.5}})"), "x");
    CHECK(c.transmamba->attention.gate_by_z);
    CHECK(!c.transmamba->attention.skip_D);
    CHECK(c.transmamba->attention.scale == 0.5);
    CHECK(c.transmamba->attention.name().empty());

    check_field_error("transmamba", "[1]", "field 'transmamba' must be an object");
    check_field_error("transmamba", R"({"kind": "cyclic"})", "field 'transmamba.transpoints' is missing");
    check_field_error("transmamba", R"({"transpoints": []})", "field 'transmamba.transpoints' must be a non-empty list");
    check_field_error("transmamba", R"({"transpoints": [-1]})", "field 'transmamba.transpoints' must hold non-negative integers, got -1");
    check_field_error("transmamba", R"({"transpoints": [1.5]})", "field 'transmamba.transpoints' must hold non-negative integers");
    check_field_error("transmamba", R"({"transpoints": [1], "kind": "spiral"})", "field 'transmamba.kind' = \"spiral\" is not a schedule kind");
    check_field_error("transmamba", R"({"transpoints": [1, 2], "kind": "fixed"})", "exactly one entry for kind \"fixed\"");
    check_field_error("transmamba", R"({"transpoints": [1, 2, 3], "kind": "per_layer"})", "one entry per layer (num_hidden_layers = 2)");
    check_field_error("transmamba", R"({"transpoints": [1], "attention": "flash"})", "field 'transmamba.attention' names no attention variant");
    check_field_error("transmamba", R"({"transpoints": [1], "attention": {"gate": true}})",
                      "field 'transmamba.attention.gate' is not a field of the attention object");
    check_field_error("transmamba", R"({"transpoints": [1], "transpoint": 3})", "field 'transmamba.transpoint' is not a field");
    check_field_error("transmamba", R"({"transpoints": [1], "version": 2})", "field 'transmamba.version' = 2 is not supported");
}

TEST_CASE("hf config: written and read again unchanged") {
    auto c = parse_hf_mamba2_config(hf_text, "x");
    c.transmamba = transmamba_options{transpoint_schedule::cyclic({0, 128}), *attention_spec::named("no_skip")};
    const std::string text = to_json_text(c);
    CHECK(text.find("\"time_step_limit\": [\n    0.0,\n    Infinity\n  ]") != std::string::npos);
    CHECK(text.find("\"attention\": \"no_skip\"") != std::string::npos);
    const auto back = parse_hf_mamba2_config(text, "y");
    CHECK(back.transmamba == c.transmamba);
    CHECK(back.hidden_size == c.hidden_size);
    CHECK(back.num_heads == c.num_heads);
    CHECK(back.n_groups == c.n_groups);
    CHECK(back.layer_norm_epsilon == c.layer_norm_epsilon);
    CHECK(back.time_step_limit == c.time_step_limit);
    CHECK(back.extra == c.extra);
    CHECK(to_json_text(back) == text);
    // from(model config) is the inverse of model_config().
    const auto again = hf_mamba2_config::from(c.model_config(), c.transmamba);
    CHECK(again.model_config().backbone.mixer.d_in_proj() == c.model_config().backbone.mixer.d_in_proj());
    CHECK(again.num_heads == 8);
    // A custom attention variant is written as an object.
    attention_spec custom;
    custom.scale = 0.25;
    c.transmamba->attention = custom;
    const auto custom_back = parse_hf_mamba2_config(to_json_text(c), "z");
    CHECK(custom_back.transmamba->attention == custom);
}

TEST_CASE("hf config: errors quote the file's text as printable ASCII only") {
    const auto printable_only = [](const std::string& msg) {
        return std::all_of(msg.begin(), msg.end(), [](char ch) { return ch >= 0x20 && ch <= 0x7e; });
    };
    const auto check_printable = [&](const std::string& text, std::string_view expected) {
        const auto msg = error_of([&] { (void)parse_hf_mamba2_config(text, "m/config.json"); });
        INFO(printable(msg));
        CHECK(msg.find(expected) != std::string::npos);
        CHECK(printable_only(msg));
    };
    // Raw bytes that are not UTF-8 (the JSON parser's message quotes what it read) ...
    check_printable("{\"model_type\": \"mamba\xff\"}", "is not valid JSON");
    check_printable("{\"hidden_size\": 64, \xc3\x28: 1}", "is not valid JSON");
    // ... and valid JSON whose strings decode to control characters or to non-ASCII text.
    check_printable(with_field("model_type", R"("\u001b[2Jmamba")"), "field 'model_type' = \"\\x1b[2Jmamba\"");
    check_printable(with_field("hidden_act", R"("g\u00e9lu")"), "field 'hidden_act' = \"g\\xc3\\xa9lu\"");
    check_printable(with_field("hidden_size", R"("\u0007")"), "field 'hidden_size' must be an integer");
    check_printable(with_field("transmamba", R"({"transpoints": [0], "k\u001bey": 1})"), "field 'transmamba.k\\x1bey'");
    check_printable(with_field("transmamba", R"({"transpoints": [0], "kind": "\ud83d\ude00"})"), "field 'transmamba.kind' = \"\\xf0\\x9f\\x98\\x80\"");
    // Every bit of every byte flipped, one at a time: whatever breaks, the message stays printable.
    const std::string text = with_field("transmamba", R"({"transpoints": [0, 4], "kind": "cyclic", "attention": "rope"})");
    int rejected = 0;
    for (std::size_t i = 0; i < text.size(); ++i)
        for (int bit = 0; bit < 8; ++bit) {
            std::string mutant = text;
            mutant[i] = static_cast<char>(mutant[i] ^ (1 << bit));
            try {
                (void)parse_hf_mamba2_config(mutant, "m/config.json");
            } catch (const error& e) {
                ++rejected;
                const std::string msg = e.what();
                if (!printable_only(msg)) FAIL_CHECK("not printable: ", printable(msg));
            }
        }
    CHECK(rejected > 0);
}

}  // namespace test_io_hf_config
