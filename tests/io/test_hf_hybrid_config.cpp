// config.json of layer-level hybrids (io/hf_hybrid_config.hpp): the layer kinds of each
// architecture's spellings, the multipliers and RoPE settings, the map to checkpoint names, and a
// refusal naming the field for everything the library does not run.
#include <doctest/doctest.h>

#include <transmamba/io.hpp>

#include <string>

#include "support/error_of.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_io_hf_hybrid_config {

using namespace transmamba;
using transmamba::testing::error_of;
using transmamba::testing::has;

namespace {

std::string nemotron(const std::string& fields) {
    return R"({"model_type": "nemotron_h", "hidden_size": 32, "vocab_size": 64, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 48, "ssm_state_size": 8,
               "mamba_num_heads": 4, "mamba_head_dim": 16, "n_groups": 2, "chunk_size": 8)" + fields + "}";
}
std::string granite(const std::string& fields) {
    return R"({"model_type": "granitemoehybrid", "hidden_size": 32, "vocab_size": 64, "num_hidden_layers": 3,
               "num_attention_heads": 4, "num_key_value_heads": 2, "shared_intermediate_size": 32,
               "num_local_experts": 0, "mamba_n_heads": 4, "mamba_d_head": 16, "mamba_d_state": 8,
               "layer_types": ["mamba", "attention", "mamba"])" + fields + "}";
}

}  // namespace

TEST_CASE("hf_hybrid_config: Nemotron-H layer kinds in both spellings") {
    for (const char* kinds : {R"(, "layers_block_type": ["mamba", "attention", "mlp", "mamba"])",
                              R"(, "layers_block_type": ["linear_attention", "full_attention", "mlp", "linear_attention"])",
                              R"(, "hybrid_override_pattern": "M*-M")"}) {
        CAPTURE(kinds);
        const auto c = parse_hf_hybrid_config(nemotron(kinds));
        const auto& h = c.model.backbone.hybrid;
        REQUIRE(h.layers.size() == 4);
        CHECK(h.layers[0].mixer == hybrid_mixer::mamba2);
        CHECK(h.layers[1].mixer == hybrid_mixer::attention);
        CHECK(h.layers[1].mlp == hybrid_mlp::none);
        CHECK(h.layers[2].mixer == hybrid_mixer::none);
        CHECK(h.layers[2].mlp == hybrid_mlp::relu2);
        CHECK(h.attention.rotary_dim == 0);  // Nemotron-H's attention has no RoPE
        CHECK(c.model.backbone.mixer.expand == 2);
        CHECK(c.model.backbone.mixer.dt_min == 1e-3);  // transformers' torch path: time_step_min
        CHECK(c.source_of("backbone.layers.2.mlp.up_proj.weight", "backbone.").name == "backbone.layers.2.mixer.up_proj.weight");
        CHECK(c.source_of("backbone.layers.2.mlp_norm.weight", "backbone.").name == "backbone.layers.2.norm.weight");
        CHECK(c.source_of("backbone.layers.1.attention.q_proj.weight", "backbone.").name == "backbone.layers.1.mixer.q_proj.weight");
    }
}

TEST_CASE("hf_hybrid_config: Granite's multipliers, RoPE and fused MLP input") {
    const auto c = parse_hf_hybrid_config(granite(R"(, "embedding_multiplier": 12.0, "logits_scaling": 8.0,
        "residual_multiplier": 0.22, "attention_multiplier": 0.0078125, "position_embedding_type": "rope",
        "rope_parameters": {"rope_type": "default", "rope_theta": 20000.0})"));
    CHECK(c.model.embedding_multiplier == 12.0);
    CHECK(c.model.logits_divisor == 8.0);
    CHECK(c.model.backbone.hybrid.residual_multiplier == 0.22);
    CHECK(c.model.backbone.hybrid.attention.scale == 0.0078125);
    CHECK(c.model.backbone.hybrid.attention.rotary_dim == 8);
    CHECK(c.model.backbone.hybrid.attention.rope_theta == 20000.0);
    const auto up = c.source_of("backbone.layers.0.mlp.up_proj.weight", "model.");
    CHECK(up.name == "model.layers.0.shared_mlp.input_linear.weight");
    CHECK(up.row_begin == 32);
    CHECK(up.total_rows == 64);
    const auto nope = parse_hf_hybrid_config(granite(R"(, "position_embedding_type": "nope")"));
    CHECK(nope.model.backbone.hybrid.attention.rotary_dim == 0);
}

TEST_CASE("hf_hybrid_config: what the library does not run is refused by name") {
    CHECK(has(error_of([] { parse_hf_hybrid_config(granite(R"(, "num_local_experts": 8)")); }), "'num_local_experts' = 8: mixture-of-experts"));
    CHECK(has(error_of([] { parse_hf_hybrid_config(nemotron(R"(, "hybrid_override_pattern": "ME")")); }),
              "mixture-of-experts layer (\"E\")"));
    CHECK(has(error_of([] { parse_hf_hybrid_config(nemotron(R"(, "hybrid_override_pattern": "M", "mystery_knob": 3)")); }),
              "does not know: 'mystery_knob'"));
    CHECK(has(error_of([] { parse_hf_hybrid_config(nemotron(R"(, "hybrid_override_pattern": "M*", "attention_bias": true)")); }),
              "'attention_bias' is true"));
    CHECK(has(error_of([] { parse_hf_hybrid_config(nemotron(R"(, "hybrid_override_pattern": "M*", "sliding_window": 64)")); }),
              "sliding-window"));
    CHECK(has(error_of([] { parse_hf_hybrid_config(granite(R"(, "rope_scaling": {"type": "linear", "factor": 2})")); }),
              "RoPE scaling is not supported"));
    CHECK(has(error_of([] { parse_hf_hybrid_config(nemotron(R"(, "hybrid_override_pattern": "M*-", "mlp_hidden_act": "gelu")")); }),
              "'mlp_hidden_act' = \"gelu\" is not supported"));
    CHECK(has(error_of([] { parse_hf_hybrid_config(R"({"model_type": "falcon_h1"})"); }), "Falcon-H1 is not supported"));
    CHECK(has(error_of([] { parse_hf_hybrid_config(R"({"model_type": "zamba2"})"); }), "Zamba2 is not supported"));
    CHECK(has(error_of([] { parse_hf_hybrid_config(R"({"model_type": "mamba2"})"); }), "load it with load_checkpoint"));
    CHECK(has(error_of([] { parse_hf_mamba2_config(R"({"model_type": "bamba"})"); }), "loads with load_hybrid_checkpoint"));
    CHECK(has(error_of([] { parse_hf_hybrid_config(granite(R"(, "num_hidden_layers": 4)")); }),
              "names 3 layers, but num_hidden_layers = 4"));
    CHECK(has(error_of([] { parse_hf_hybrid_config(nemotron(R"(, "hybrid_override_pattern": "M", "mamba_num_heads": 3, "n_groups": 1)")); }),
              "not a multiple of hidden_size"));
    // Unknown fields may be kept instead, on request.
    hybrid_config_options lenient;
    lenient.allow_unknown_fields = true;
    const auto kept = parse_hf_hybrid_config(nemotron(R"(, "hybrid_override_pattern": "M", "mystery_knob": 3)"), "c", lenient);
    CHECK(kept.extra.at("mystery_knob") == 3);
}

}  // namespace test_io_hf_hybrid_config
