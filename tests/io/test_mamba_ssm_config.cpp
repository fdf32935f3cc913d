// A mamba_ssm checkpoint's config.json (state-spaces/mamba2-*) is recognised and refused with what
// it is and how to convert it, not with a field of the Hugging Face config it is not.
#include <doctest/doctest.h>

#include <unistd.h>

#include <transmamba/io.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "support/error_of.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_io_mamba_ssm_config {

using namespace transmamba;
using testing::error_of;
using testing::has;

namespace {

// state-spaces/mamba2-130m's config.json, as mamba_ssm writes it.
const char* mamba2_130m = R"({
    "d_model": 768, "d_intermediate": 0, "n_layer": 24, "vocab_size": 50277,
    "ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {},
    "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true,
    "pad_vocab_size_multiple": 16, "tie_embeddings": true})";

}  // namespace

TEST_CASE("io: a mamba_ssm Mamba2 config is named and the converter pointed to") {
    const auto message = error_of([] { (void)parse_hf_mamba2_config(mamba2_130m, "m/config.json"); });
    CHECK(has(message, "config 'm/config.json' is a mamba_ssm Mamba2 model's config.json"));
    CHECK(has(message, "state-spaces/mamba2-*"));
    CHECK(has(message, "python3 tools/convert_mamba_ssm.py SRC DST"));
}

TEST_CASE("io: mamba_ssm configs the converter cannot take say why") {
    // Mamba1 (ssm_cfg without a layer is Mamba1 in mamba_ssm), attention layers, MLP blocks.
    const auto mamba1 = error_of([] { (void)parse_hf_mamba2_config(R"({"d_model": 768, "n_layer": 24, "ssm_cfg": {}})"); });
    CHECK(has(mamba1, "is a mamba_ssm Mamba1 model's config.json"));
    CHECK(has(mamba1, "only mamba_ssm Mamba2 models without attention or MLP layers convert"));
    const auto hybrid = error_of([] {
        (void)parse_hf_mamba2_config(R"({"d_model": 64, "n_layer": 4, "ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [1]})");
    });
    CHECK(has(hybrid, "Mamba2 model with attention layers (attn_layer_idx)"));
    const auto mlp = error_of([] {
        (void)parse_hf_mamba2_config(R"({"d_model": 64, "n_layer": 4, "ssm_cfg": {"layer": "Mamba2"}, "d_intermediate": 128})");
    });
    CHECK(has(mlp, "with MLP blocks (d_intermediate)"));
    // The layer name is the file's text: quoted printable.
    const auto odd = error_of(
        [] { (void)parse_hf_mamba2_config("{\"d_model\": 1, \"n_layer\": 1, \"ssm_cfg\": {\"layer\": \"M\\u001b[31m\"}}"); });
    CHECK(has(odd, "mamba_ssm M\\x1b[31m model"));
    // A Hugging Face config with an extra d_model field is not taken for one.
    CHECK(error_of([] { (void)parse_hf_mamba2_config(R"({"model_type": "mamba2", "d_model": 64, "n_layer": 2, "hidden_size": 64,
        "num_heads": 8, "head_dim": 16, "n_groups": 1})"); }).empty());
}

TEST_CASE("io: load_checkpoint on a mamba_ssm directory (config.json + pytorch_model.bin) names the format") {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("transmamba_mamba_ssm_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << mamba2_130m;
    std::ofstream(dir / "pytorch_model.bin") << "PK";
    const auto message = error_of([&] { (void)load_checkpoint<float, cpu>(dir); });
    CHECK(has(message, "mamba_ssm Mamba2 model"));
    CHECK(has(message, "tools/convert_mamba_ssm.py"));
    fs::remove_all(dir);
}

}  // namespace test_io_mamba_ssm_config
