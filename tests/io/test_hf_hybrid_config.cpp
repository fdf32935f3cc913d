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
std::string falcon(const std::string& fields) {
    return R"({"model_type": "falcon_h1", "hidden_size": 32, "vocab_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "mamba_d_ssm": 48,
               "mamba_n_heads": 4, "mamba_d_head": 12, "mamba_n_groups": 2, "mamba_d_state": 8)" + fields + "}";
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

TEST_CASE("hf_hybrid_config: Falcon-H1's parallel layers, Mamba2 width, norm placement and multipliers") {
    const auto c = parse_hf_hybrid_config(falcon(R"(, "head_dim": 16, "mamba_expand": 3, "rope_parameters":
        {"rope_type": "default", "rope_theta": 3000.0}, "embedding_multiplier": 1.7, "lm_head_multiplier": 0.5,
        "attention_in_multiplier": 0.8, "attention_out_multiplier": 1.3, "key_multiplier": 0.7,
        "ssm_in_multiplier": 1.2, "ssm_out_multiplier": 0.9, "ssm_multipliers": [0.5, 1.5, 0.8, 1.25, 2.0],
        "mlp_multipliers": [1.4, 0.75], "projectors_bias": false, "mamba_proj_bias": false)"));
    CHECK(c.architecture == hybrid_architecture::falcon_h1);
    const auto& bb = c.model.backbone;
    REQUIRE(bb.hybrid.layers.size() == 2);
    CHECK(bb.hybrid.layers[1].mixer == hybrid_mixer::parallel);
    CHECK(bb.hybrid.layers[1].mlp == hybrid_mlp::swiglu);
    CHECK(bb.hybrid.mamba2_layers() == 2);
    CHECK(bb.hybrid.attention_layers() == 2);
    CHECK(bb.mixer.d_inner() == 48);  // mamba_d_ssm, not mamba_expand * hidden_size (96)
    CHECK(bb.mixer.nheads() == 4);
    CHECK(bb.mixer.norm_placement == gated_norm::none);  // mamba_rms_norm defaults to false
    CHECK(bb.hybrid.attention.head_dim == 16);
    CHECK(bb.hybrid.attention.rotary_dim == 16);
    CHECK(bb.hybrid.attention.rope_theta == 3000.0);
    CHECK(c.model.embedding_multiplier == 1.7);
    CHECK(c.model.logits_divisor == 2.0);
    // The multipliers folded into each weight's rows.
    const auto in = c.row_scales("backbone.layers.0.mixer.in_proj.weight", 2 * 48 + 2 * 16 + 4);
    REQUIRE(in.size() == 132);
    CHECK(in[0] == doctest::Approx(1.2 * 0.5));      // z
    CHECK(in[48] == doctest::Approx(1.2 * 1.5));     // x
    CHECK(in[96] == doctest::Approx(1.2 * 0.8));     // B
    CHECK(in[112] == doctest::Approx(1.2 * 1.25));   // C
    CHECK(in[131] == doctest::Approx(1.2 * 2.0));    // dt
    CHECK(c.row_scales("backbone.layers.1.attention.k_proj.weight", 2).at(1) == doctest::Approx(0.8 * 0.7));
    CHECK(c.row_scales("backbone.layers.1.attention.q_proj.weight", 2).at(0) == doctest::Approx(0.8));
    CHECK(c.row_scales("backbone.layers.1.attention.o_proj.weight", 2).at(0) == doctest::Approx(1.3));
    CHECK(c.row_scales("backbone.layers.1.mixer.out_proj.weight", 2).at(0) == doctest::Approx(0.9));
    CHECK(c.row_scales("backbone.layers.1.mlp.gate_proj.weight", 2).at(0) == doctest::Approx(1.4));
    CHECK(c.row_scales("backbone.layers.1.mlp.up_proj.weight", 2).empty());
    CHECK(c.row_scales("backbone.layers.1.mlp.down_proj.weight", 2).at(0) == doctest::Approx(0.75));
    CHECK(c.row_scales("backbone.embeddings.weight", 2).empty());
    CHECK(c.source_of("backbone.layers.1.attention.k_proj.weight", "model.").name == "model.layers.1.self_attn.k_proj.weight");
    CHECK(c.source_of("backbone.layers.0.mixer.in_proj.weight", "model.").name == "model.layers.0.mamba.in_proj.weight");
    CHECK(c.source_of("backbone.layers.0.mlp_norm.weight", "model.").name == "model.layers.0.pre_ff_layernorm.weight");
    CHECK(c.source_of("backbone.norm_f.weight", "model.").name == "model.final_layernorm.weight");

    CHECK(parse_hf_hybrid_config(falcon(R"(, "mamba_rms_norm": true)")).model.backbone.mixer.norm_placement ==
          gated_norm::before_gate);  // mamba_norm_before_gate defaults to true
    CHECK(parse_hf_hybrid_config(falcon(R"(, "mamba_rms_norm": true, "mamba_norm_before_gate": false)"))
              .model.backbone.mixer.norm_placement == gated_norm::after_gate);
    const auto plain = parse_hf_hybrid_config(falcon(R"(, "num_key_value_heads": null, "mamba_d_ssm": null, "mamba_expand": 2,
        "mamba_d_head": "auto", "ssm_multipliers": null, "layers_block_type": ["hybrid", "hybrid"])"));
    CHECK(plain.model.backbone.hybrid.attention.num_kv_heads == 4);
    CHECK(plain.model.backbone.hybrid.attention.head_dim == 8);  // hidden_size / num_attention_heads
    CHECK(plain.model.backbone.mixer.d_inner() == 64);
    CHECK(plain.model.backbone.mixer.headdim == 16);
    CHECK(plain.row_scales("backbone.layers.0.mixer.in_proj.weight", 2 * 64 + 2 * 16 + 4).at(0) == 1.0);
}

TEST_CASE("hf_hybrid_config: what Falcon-H1 runs and this library does not is refused by name") {
    const auto refused = [](const std::string& fields, const char* what) {
        CAPTURE(fields);
        CHECK(has(error_of([&] { parse_hf_hybrid_config(falcon(fields)); }), what));
    };
    refused(R"(, "projectors_bias": true)", "'projectors_bias' is true: biases on the Mamba2 out_proj are not supported");
    refused(R"(, "mamba_proj_bias": true)", "'mamba_proj_bias' is true");
    refused(R"(, "ssm_multipliers": [1, 2, 3])", "'ssm_multipliers' must be a list of 5 numbers");
    refused(R"(, "mlp_multipliers": [1.0, 0.0])", "'mlp_multipliers' = 0 must be a finite positive number");
    refused(R"(, "key_multiplier": -1)", "'key_multiplier' = -1 must be a finite positive number");
    refused(R"(, "mamba_n_heads": 5)", "mamba_n_heads * mamba_d_head = 60 must equal the Mamba2 width mamba_d_ssm = 48");
    refused(R"(, "layers_block_type": ["hybrid", "mamba"])", "Falcon-H1's layers are all \"hybrid\"");
    refused(R"(, "layers_block_type": ["hybrid"])", "names 1 layers, but num_hidden_layers = 2");
    refused(R"(, "rope_parameters": {"rope_type": "yarn", "factor": 4})", "only the default RoPE");
    refused(R"(, "partial_rotary_factor": 0.5)", "Falcon-H1 rotates whole heads");
    refused(R"(, "hidden_act": "gelu")", "'hidden_act' = \"gelu\" is not supported");
    refused(R"(, "mystery_knob": 1)", "(FalconH1ForCausalLM) has field this library does not know: 'mystery_knob'");
}

}  // namespace test_io_hf_hybrid_config
