#pragma once
// The config.json of a mamba_ssm checkpoint (MambaLMHeadModel's MambaConfig: d_model, n_layer,
// ssm_cfg, ...; the format of the state-spaces/mamba2-* models, weights in pytorch_model.bin) is not
// the Hugging Face layout the loader reads. It is recognised, so that the error says what the
// directory holds and how to convert it (tools/convert_mamba_ssm.py) instead of naming a field of
// a config it never was.
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "transmamba/core/error.hpp"
#include "transmamba/io/printable.hpp"

namespace transmamba::io_detail {

// mamba_ssm's MambaConfig has d_model and n_layer where Mamba2Config has hidden_size and
// num_hidden_layers; a Hugging Face config has neither.
inline bool is_mamba_ssm_config(const nlohmann::json& root) {
    return root.is_object() && root.contains("d_model") && root.contains("n_layer") && !root.contains("hidden_size") &&
           !root.contains("model_type");
}

// What kind of mamba_ssm model the config describes, for the message: its layer type
// (ssm_cfg.layer, "Mamba1" when absent, as in mamba_ssm) and whether it has attention or MLP layers.
inline std::string mamba_ssm_kind(const nlohmann::json& root) {
    std::string layer = "Mamba1";
    if (const auto it = root.find("ssm_cfg"); it != root.end() && it->is_object())
        if (const auto l = it->find("layer"); l != it->end() && l->is_string()) layer = l->get<std::string>();
    std::string kind = "a mamba_ssm " + printable(layer) + " model";
    if (const auto a = root.find("attn_layer_idx"); a != root.end() && a->is_array() && !a->empty())
        kind += " with attention layers (attn_layer_idx)";
    if (const auto d = root.find("d_intermediate"); d != root.end() && d->is_number() && d->get<double>() > 0)
        kind += " with MLP blocks (d_intermediate)";
    return kind;
}

[[noreturn]] inline void refuse_mamba_ssm_config(const nlohmann::json& root, std::string_view source) {
    const std::string kind = mamba_ssm_kind(root);
    const bool convertible = kind == "a mamba_ssm Mamba2 model";
    fail("config '", printable(source, 4096), "' is ", kind,
         "'s config.json (d_model, n_layer, ssm_cfg: mamba_ssm's format, as in state-spaces/mamba2-*), not a Hugging Face "
         "Mamba2 config: ",
         convertible ? "convert the directory with `python3 tools/convert_mamba_ssm.py SRC DST` (needs PyTorch) and load DST"
                     : "only mamba_ssm Mamba2 models without attention or MLP layers convert (tools/convert_mamba_ssm.py)");
}

}  // namespace transmamba::io_detail
