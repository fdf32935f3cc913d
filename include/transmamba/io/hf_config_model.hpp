#pragma once
// hf_mamba2_config (io/hf_config.hpp) and the model config it describes, both ways. Apart from the
// parser because these need the model's headers, which the parser's fuzzer cannot build.
#include <optional>
#include <utility>

#include "transmamba/io/hf_config.hpp"
#include "transmamba/model/language_model.hpp"

namespace transmamba {

inline language_model_config hf_mamba2_config::model_config() const {
    mixer_config m;
    m.d_model = hidden_size;
    m.expand = expand;
    m.headdim = head_dim;
    m.d_state = state_size;
    m.ngroups = n_groups;
    m.d_conv = conv_kernel;
    m.chunk_size = chunk_size;
    m.dt_min = time_step_limit[0];
    m.dt_max = time_step_limit[1];
    m.norm_eps = layer_norm_epsilon;
    language_model_config c;
    c.backbone = transmamba::model_config{m, /*d_ff=*/0, num_hidden_layers, {}};
    c.vocab_size = vocab_size;
    c.tie_word_embeddings = tie_word_embeddings;
    return c;
}

inline hf_mamba2_config hf_mamba2_config::from(const language_model_config& c, std::optional<transmamba_options> options) {
    const auto& m = c.backbone.mixer;
    require(m.inner_width == 0 && m.norm_placement == gated_norm::after_gate,
            "a Mamba2 config.json has no field for a Mamba2 width other than expand * hidden_size or a gated norm other "
            "than after the gate (a Falcon-H1 model's mixer): it cannot be saved as Mamba2ForCausalLM");
    hf_mamba2_config h;
    h.hidden_size = m.d_model;
    h.state_size = m.d_state;
    h.num_heads = m.nheads();
    h.head_dim = m.headdim;
    h.n_groups = m.ngroups;
    h.expand = m.expand;
    h.conv_kernel = m.d_conv;
    h.chunk_size = m.chunk_size;
    h.num_hidden_layers = c.backbone.num_layers;
    h.vocab_size = c.vocab_size;
    h.layer_norm_epsilon = m.norm_eps;
    h.tie_word_embeddings = c.tie_word_embeddings;
    h.time_step_limit = {m.dt_min, m.dt_max};
    h.transmamba = std::move(options);
    return h;
}

inline std::optional<std::uint64_t> hf_mamba2_config::parameter_count() const {
    try {
        const auto c = model_config();
        c.validate();
        return static_cast<std::uint64_t>(c.parameter_count());
    } catch (const error&) {
        return std::nullopt;
    }
}


// What a model built from `c` checks (language_model_config::validate): one set of rules for the
// loader and for anything that builds a config; the message names the config file.
inline void validate_model_config(const hf_mamba2_config& c, const std::string& source) {
    try {
        c.model_config().validate();
    } catch (const error& e) {
        std::string_view why = e.what();
        if (why.starts_with("transmamba: ")) why.remove_prefix(12);
        fail("config '", printable(source, 4096), "' describes a model the library refuses: ", why);
    }
}

}  // namespace transmamba
