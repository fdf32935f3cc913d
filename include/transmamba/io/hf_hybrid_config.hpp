#pragma once
// The config.json of a layer-level hybrid checkpoint as transformers 5.x writes it
// (docs/checkpoints.md, "Hybrid checkpoints"): NemotronHForCausalLM, BambaForCausalLM, the dense
// GraniteMoeHybridForCausalLM and FalconH1ForCausalLM, read into a language_model_config whose model_config::hybrid says
// which layer is which, and the map from the library's parameter names to the checkpoint's.
//
// Every field is accounted for: read and checked, known to change nothing at inference (dropout,
// init ranges, token ids, ...), or refused with its name (MoE experts, biases, sliding windows,
// RoPE scaling). A field this library does not know is an error too, unless
// hybrid_config_options::allow_unknown_fields keeps it in `extra`: a new transformers field could
// change the math, and a silent wrong answer is worse than a refusal.
#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "transmamba/block/hybrid_config.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/io/hf_config.hpp"
#include "transmamba/io/printable.hpp"
#include "transmamba/io/regular_file.hpp"
#include "transmamba/model/language_model.hpp"

namespace transmamba {

enum class hybrid_architecture { nemotron_h, bamba, granite_hybrid, falcon_h1 };

inline const char* architecture_name(hybrid_architecture a) {
    switch (a) {
        case hybrid_architecture::nemotron_h: return "NemotronHForCausalLM";
        case hybrid_architecture::bamba: return "BambaForCausalLM";
        case hybrid_architecture::falcon_h1: return "FalconH1ForCausalLM";
        default: return "GraniteMoeHybridForCausalLM";
    }
}

// Falcon-H1's muP multipliers (transformers' FalconH1Config). Each one scales the output of a
// linear map: (x * ssm_in) W_in^T * ssm[segment] = x (ssm_in * ssm[segment] * W_in)^T, and so on,
// so folding it into that map's weight rows is exact in real arithmetic and costs one rounding per
// weight in floating point (the loader does it in double, then rounds once to T). So are the
// attention input (q, k, v rows), key_multiplier (the k rows: RoPE is linear, it commutes), the
// two branch outputs (out_proj, o_proj), the MLP gate (gate_proj rows: the scale sits inside the
// silu, on gate_proj's output, exactly where the folded weight puts it) and the MLP output
// (down_proj). Not folded: embedding_multiplier and lm_head_multiplier, since with tied embeddings
// one matrix serves both ends; they stay data (language_model_config's embedding_multiplier and
// logits_divisor = 1 / lm_head_multiplier, which rounds 1/m once more).
struct falcon_h1_multipliers {
    double embedding = 1.0, lm_head = 1.0;
    double attention_in = 1.0, attention_out = 1.0, key = 1.0;
    double ssm_in = 1.0, ssm_out = 1.0;
    std::array<double, 5> ssm{1.0, 1.0, 1.0, 1.0, 1.0};  // the in_proj segments [z, x, B, C, dt]
    std::array<double, 2> mlp{1.0, 1.0};                 // gate_proj, down_proj
};

// Where a parameter lives in the checkpoint: a tensor, or a block of its rows (Granite keeps the
// MLP's gate and up projections in one tensor, input_linear = [gate; up]).
struct tensor_source {
    std::string name;
    index_t row_begin = 0;
    index_t rows = 0;  // 0: the whole tensor
    index_t total_rows = 0;  // rows of the stored tensor when only a block is taken
};

struct hybrid_config_options {
    bool allow_unknown_fields = false;  // keep unknown config.json fields in `extra` instead of refusing them
    // Nemotron-H's Mamba2 layers in transformers' torch path (its CPU path) clamp dt from below at
    // time_step_min (an init setting, 1e-3 by default); its mamba_ssm path clamps at
    // time_step_limit only. true follows the torch path, so that the logits are transformers' own
    // on any machine; false follows the kernels.
    bool nemotron_dt_floor_at_time_step_min = true;
};

struct hf_hybrid_config {
    hybrid_architecture architecture = hybrid_architecture::nemotron_h;
    language_model_config model;  // model.backbone.hybrid: the layers
    bool use_conv_bias = true;
    index_t mtp_layers = 0;  // Nemotron-H's multi-token-prediction layers: not used at inference, their tensors skipped
    falcon_h1_multipliers falcon;  // Falcon-H1's (all 1 for the other architectures)
    std::optional<transmamba_options> transmamba;  // a TransPoint schedule for the Mamba2 layers
    nlohmann::json extra = nlohmann::json::object();  // fields that change nothing here (and unknown ones, when allowed)

    // The checkpoint tensor of a parameter named as language_model::for_each_parameter names it,
    // given the prefix the weights use ("backbone." or "model.").
    tensor_source source_of(std::string_view name, std::string_view prefix) const {
        if (name == "lm_head.weight") return {std::string(name)};
        std::string_view rest = name;
        if (rest.starts_with("backbone.")) rest.remove_prefix(9);
        const std::string p(prefix);
        if (rest == "embeddings.weight")
            return {p + (architecture == hybrid_architecture::nemotron_h ? "embeddings.weight" : "embed_tokens.weight")};
        if (rest == "norm_f.weight") {
            switch (architecture) {
                case hybrid_architecture::nemotron_h: return {p + "norm_f.weight"};
                case hybrid_architecture::bamba:
                case hybrid_architecture::falcon_h1: return {p + "final_layernorm.weight"};
                default: return {p + "norm.weight"};
            }
        }
        // "layers.{i}.<part>"
        require(rest.starts_with("layers."), "hf_hybrid_config: no checkpoint name for parameter '", std::string(name), "'");
        rest.remove_prefix(7);
        const auto dot = rest.find('.');
        const std::string layer = p + "layers." + std::string(rest.substr(0, dot)) + ".";
        const std::string_view part = rest.substr(dot + 1);
        const auto tail = [&](std::string_view head) { return std::string(part.substr(head.size())); };
        const index_t d_ff = model.backbone.d_ff;
        switch (architecture) {
            case hybrid_architecture::nemotron_h:  // one branch per layer, always "norm" + "mixer"
                if (part == "norm.weight" || part == "mlp_norm.weight") return {layer + "norm.weight"};
                if (part.starts_with("mixer.")) return {layer + "mixer." + tail("mixer.")};
                if (part.starts_with("attention.")) return {layer + "mixer." + tail("attention.")};
                if (part.starts_with("mlp.")) return {layer + "mixer." + tail("mlp.")};
                break;
            case hybrid_architecture::bamba:
            case hybrid_architecture::falcon_h1:  // Falcon-H1 uses Bamba's names
                if (part == "norm.weight") return {layer + "input_layernorm.weight"};
                if (part == "mlp_norm.weight") return {layer + "pre_ff_layernorm.weight"};
                if (part.starts_with("mixer.")) return {layer + "mamba." + tail("mixer.")};
                if (part.starts_with("attention.")) return {layer + "self_attn." + tail("attention.")};
                if (part.starts_with("mlp.")) return {layer + "feed_forward." + tail("mlp.")};
                break;
            case hybrid_architecture::granite_hybrid:
                if (part == "norm.weight") return {layer + "input_layernorm.weight"};
                if (part == "mlp_norm.weight") return {layer + "post_attention_layernorm.weight"};
                if (part.starts_with("mixer.")) return {layer + "mamba." + tail("mixer.")};
                if (part.starts_with("attention.")) return {layer + "self_attn." + tail("attention.")};
                if (part == "mlp.gate_proj.weight") return {layer + "shared_mlp.input_linear.weight", 0, d_ff, 2 * d_ff};
                if (part == "mlp.up_proj.weight") return {layer + "shared_mlp.input_linear.weight", d_ff, d_ff, 2 * d_ff};
                if (part == "mlp.down_proj.weight") return {layer + "shared_mlp.output_linear.weight"};
                break;
        }
        fail("hf_hybrid_config: no checkpoint name for parameter '", std::string(name), "'");
    }

    // The factor each row of a parameter (named as language_model::for_each_parameter names it,
    // `rows` rows) is multiplied by at load: Falcon-H1's multipliers folded into the weights (see
    // falcon_h1_multipliers). Empty: stored as it is.
    std::vector<double> row_scales(std::string_view name, index_t rows) const {
        if (architecture != hybrid_architecture::falcon_h1) return {};
        const auto& f = falcon;
        const auto all = [&](double s) { return std::vector<double>(static_cast<std::size_t>(rows), s); };
        if (name.ends_with(".mixer.in_proj.weight")) {
            const auto& m = model.backbone.mixer;
            const index_t di = m.d_inner(), gn = m.ngroups * m.d_state;
            const std::array<index_t, 5> widths{di, di, gn, gn, m.nheads()};
            std::vector<double> s;
            s.reserve(static_cast<std::size_t>(rows));
            for (std::size_t k = 0; k < widths.size(); ++k) s.insert(s.end(), static_cast<std::size_t>(widths[k]), f.ssm_in * f.ssm[k]);
            require(static_cast<index_t>(s.size()) == rows, "hf_hybrid_config: in_proj has ", rows, " rows, its segments ", s.size());
            return s;
        }
        if (name.ends_with(".mixer.out_proj.weight")) return all(f.ssm_out);
        if (name.ends_with(".attention.q_proj.weight") || name.ends_with(".attention.v_proj.weight")) return all(f.attention_in);
        if (name.ends_with(".attention.k_proj.weight")) return all(f.attention_in * f.key);
        if (name.ends_with(".attention.o_proj.weight")) return all(f.attention_out);
        if (name.ends_with(".mlp.gate_proj.weight")) return all(f.mlp[0]);
        if (name.ends_with(".mlp.down_proj.weight")) return all(f.mlp[1]);
        return {};
    }

    std::optional<std::uint64_t> parameter_count() const {
        try {
            return static_cast<std::uint64_t>(model.parameter_count());
        } catch (const error&) {
            return std::nullopt;
        }
    }
};

namespace io_detail {

// Fields every architecture may carry that change nothing at inference here.
inline bool inert_config_field(std::string_view key) {
    static const std::set<std::string, std::less<>> inert{
        "architectures", "transformers_version", "dtype", "torch_dtype", "bos_token_id", "eos_token_id", "pad_token_id",
        "use_cache", "initializer_range", "num_logits_to_keep", "max_position_embeddings", "attention_dropout",
        "hidden_dropout", "output_router_logits", "router_aux_loss_coef", "z_loss_coefficient",
        "rescale_prenorm_residual", "time_step_min", "time_step_max", "time_step_floor", "use_mamba_kernels",
        "mamba_ssm_cache_dtype", "output_attentions", "output_hidden_states", "return_dict", "_name_or_path",
        "id2label", "label2id", "tokenizer_class", "problem_type"};
    return inert.contains(key);
}

// The RoPE settings: rope_parameters {rope_type, rope_theta, partial_rotary_factor} (transformers
// 5.x), or the older top-level rope_theta / partial_rotary_factor / rope_scaling.
struct rope_settings {
    double theta = 10000.0;
    double partial_rotary_factor = 1.0;
};
inline rope_settings read_rope(field_reader& r, const std::string& source, double default_factor) {
    rope_settings s;
    s.partial_rotary_factor = default_factor;
    std::optional<double> top_theta, top_factor;
    if (r.find("rope_theta")) top_theta = r.number("rope_theta", s.theta);
    if (r.find("partial_rotary_factor")) top_factor = r.number("partial_rotary_factor", s.partial_rotary_factor);
    if (const auto* scaling = r.find("rope_scaling"); scaling && !scaling->is_null())
        r.bad("rope_scaling", "= ", field_reader::brief(*scaling), ": RoPE scaling is not supported");
    if (const auto* p = r.find("rope_parameters"); p && !p->is_null()) {
        if (!p->is_object()) r.bad("rope_parameters", "must be an object, got ", field_reader::brief(*p));
        field_reader q(*p, source, "rope_parameters.");
        if (const auto type = q.string("rope_type"); type && *type != "default")
            q.bad("rope_type", "= \"", printable(*type), "\": only the default RoPE (no scaling) is supported");
        s.theta = q.number("rope_theta", top_theta.value_or(s.theta));
        s.partial_rotary_factor = q.number("partial_rotary_factor", top_factor.value_or(s.partial_rotary_factor));
        for (const auto& [key, value] : p->items())
            if (!q.was_read(key)) q.bad(key, "is not supported (RoPE scaling parameters are not)");
        if (top_theta && *top_theta != s.theta)
            r.bad("rope_theta", "= ", *top_theta, " disagrees with rope_parameters.rope_theta = ", s.theta);
        if (top_factor && *top_factor != s.partial_rotary_factor)
            r.bad("partial_rotary_factor", "= ", *top_factor, " disagrees with rope_parameters.partial_rotary_factor = ",
                  s.partial_rotary_factor);
    } else {
        s.theta = top_theta.value_or(s.theta);
        s.partial_rotary_factor = top_factor.value_or(s.partial_rotary_factor);
    }
    if (!(std::isfinite(s.theta) && s.theta > 1.0)) r.bad("rope_theta", "= ", s.theta, " must be a finite number > 1");
    if (!(s.partial_rotary_factor > 0.0 && s.partial_rotary_factor <= 1.0))
        r.bad("partial_rotary_factor", "= ", s.partial_rotary_factor, " must be in (0, 1]");
    return s;
}

// A boolean field that must be false (a feature this library does not have).
inline void require_false(field_reader& r, std::string_view field, std::string_view what) {
    if (r.boolean(field, false)) r.bad(field, "is true: ", what, " not supported");
}

inline std::string require_string(field_reader& r, std::string_view field, std::string_view fallback,
                                  std::initializer_list<std::string_view> allowed) {
    const std::string v = r.string(field).value_or(std::string(fallback));
    for (auto a : allowed)
        if (v == a) return v;
    std::string list;
    for (auto a : allowed) list += (list.empty() ? "\"" : ", \"") + std::string(a) + "\"";
    r.bad(field, "= \"", printable(v), "\" is not supported (supported: ", list, ")");
}

inline void read_time_step_limit(field_reader& r, mixer_config& m) {
    if (const auto* limit = r.find("time_step_limit")) {
        if (!limit->is_array() || limit->size() != 2)
            r.bad("time_step_limit", "must be a list [min, max] of two numbers, got ", field_reader::brief(*limit));
        m.dt_min = r.number_value("time_step_limit", (*limit)[0]);
        m.dt_max = r.number_value("time_step_limit", (*limit)[1]);
        if (std::isnan(m.dt_min) || std::isnan(m.dt_max) || m.dt_min < 0.0 || !std::isfinite(m.dt_min) || m.dt_max < m.dt_min)
            r.bad("time_step_limit", "= [", m.dt_min, ", ", m.dt_max, "] must be [min, max] with 0 <= min <= max and a finite min");
    }
}

// d_inner = mamba heads * head dim must be a whole multiple of hidden_size: the library's mixer
// sizes d_inner as expand * d_model.
inline index_t inner_expand(field_reader& r, std::string_view heads_field, index_t heads, index_t head_dim, index_t hidden) {
    const index_t inner = transmamba::checked_mul(heads, head_dim, "mamba heads * head dim");
    if (inner % hidden != 0)
        r.bad(heads_field, "= ", heads, ": the Mamba2 width heads * head_dim = ", inner,
              " is not a multiple of hidden_size = ", hidden, ", which this library's mixer needs");
    return inner / hidden;
}

// Bamba's and Granite's shared Mamba2 fields (mamba_*).
inline void read_bamba_mamba(field_reader& r, mixer_config& m, bool& conv_bias) {
    constexpr index_t big = size_limits::dimension;
    const index_t expand = r.integer("mamba_expand", 2, 1, size_limits::expand);
    const index_t heads = r.integer("mamba_n_heads", 128, 1, big);
    index_t head_dim = (expand * m.d_model) / heads;
    if (const auto* v = r.find("mamba_d_head"); v && !(v->is_string() && v->get<std::string>() == "auto"))
        head_dim = r.integer("mamba_d_head", 0, 1, big);
    if (heads * head_dim != expand * m.d_model)
        r.bad("mamba_n_heads", "= ", heads, ": mamba_n_heads * mamba_d_head = ", heads * head_dim,
              " must equal mamba_expand * hidden_size = ", expand * m.d_model);
    m.expand = expand;
    m.headdim = head_dim;
    m.ngroups = r.integer("mamba_n_groups", 1, 1, big);
    if (heads % m.ngroups != 0) r.bad("mamba_n_groups", "= ", m.ngroups, " does not divide mamba_n_heads = ", heads);
    m.d_state = r.integer("mamba_d_state", 256, 1, big);
    m.d_conv = r.integer("mamba_d_conv", 4, 1, size_limits::conv_width);
    m.chunk_size = r.integer("mamba_chunk_size", 256, 1, big);
    conv_bias = r.boolean("mamba_conv_bias", true);
    require_false(r, "mamba_proj_bias", "biases on the Mamba2 in_proj / out_proj are");
    read_time_step_limit(r, m);
}

inline hybrid_mixer hybrid_layer_kind(field_reader& r, std::string_view field, const std::string& name,
                                      bool allow_mlp) {
    if (name == "mamba" || name == "linear_attention" || name == "M") return hybrid_mixer::mamba2;
    if (name == "attention" || name == "full_attention" || name == "*") return hybrid_mixer::attention;
    if (allow_mlp && (name == "mlp" || name == "-")) return hybrid_mixer::none;
    if (name == "moe" || name == "E")
        r.bad(field, "names a mixture-of-experts layer (\"", printable(name), "\"): MoE layers are not supported");
    r.bad(field, "names an unknown layer kind \"", printable(name), "\"");
}

}  // namespace io_detail

// Parses config.json text; `source` names the file in errors.
inline hf_hybrid_config parse_hf_hybrid_config(std::string_view text, const std::string& source = "config.json",
                                               const hybrid_config_options& options = {}) {
    using json = nlohmann::json;
    using io_detail::field_reader;
    json root;
    try {
        root = json::parse(io_detail::mark_nonfinite_tokens(text));
    } catch (const json::exception& e) {
        fail("config '", printable(source, 4096), "' is not valid JSON: ", printable(e.what()));
    }
    if (!root.is_object()) fail("config '", printable(source, 4096), "' is not a JSON object");
    field_reader r(root, source);
    hf_hybrid_config c;
    const std::string model_type = r.string("model_type").value_or("");
    if (model_type == "nemotron_h") c.architecture = hybrid_architecture::nemotron_h;
    else if (model_type == "bamba") c.architecture = hybrid_architecture::bamba;
    else if (model_type == "granitemoehybrid") c.architecture = hybrid_architecture::granite_hybrid;
    else if (model_type == "falcon_h1") c.architecture = hybrid_architecture::falcon_h1;
    else if (model_type == "zamba2")
        r.bad("model_type", "= \"zamba2\": Zamba2 is not supported (shared attention blocks with per-use LoRA adapters "
                            "that read the concatenated original embeddings; docs/checkpoints.md)");
    else if (model_type == "mamba2")
        r.bad("model_type", "= \"mamba2\": a Mamba2 checkpoint, not a hybrid: load it with load_checkpoint (io/checkpoint.hpp)");
    else
        r.bad("model_type", "= \"", printable(model_type),
              "\" is not a hybrid this library loads (\"nemotron_h\", \"bamba\", \"granitemoehybrid\", \"falcon_h1\")");
    const auto arch = c.architecture;
    constexpr index_t big = size_limits::dimension;

    language_model_config& lm = c.model;
    model_config& bb = lm.backbone;
    mixer_config& m = bb.mixer;
    hybrid_config& h = bb.hybrid;
    m.d_model = r.integer("hidden_size", 4096, 1, big);
    lm.vocab_size = r.integer("vocab_size", arch == hybrid_architecture::nemotron_h ? 131072 : 128000, 1, size_limits::vocab);
    lm.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
    io_detail::require_false(r, "attention_bias", "biases on the attention projections are");
    io_detail::require_false(r, "mlp_bias", "biases on the MLP projections are");
    for (const char* f : {"residual_in_fp32"})
        if (const auto* v = r.find(f); v && !v->is_boolean()) r.bad(f, "must be true or false, got ", field_reader::brief(*v));
    if (const auto* w = r.find("sliding_window"); w && !w->is_null())
        r.bad("sliding_window", "= ", field_reader::brief(*w), ": sliding-window attention is not supported");

    // Which layer is which.
    std::vector<std::string> kinds;
    std::string kinds_field;
    const auto list_of_strings = [&](std::string_view field, const json& v) {
        if (!v.is_array()) r.bad(field, "must be a list of layer kinds, got ", field_reader::brief(v));
        for (const auto& e : v) {
            if (!e.is_string()) r.bad(field, "must hold strings, got ", field_reader::brief(e));
            kinds.push_back(e.get<std::string>());
        }
        kinds_field = std::string(field);
    };
    auto& attn = h.attention;
    if (arch == hybrid_architecture::nemotron_h) {
        const auto* list = r.find("layers_block_type");
        const auto* pattern = r.find("hybrid_override_pattern");
        if (list && pattern) r.bad("hybrid_override_pattern", "and layers_block_type are both given: give one");
        if (list) list_of_strings("layers_block_type", *list);
        else if (pattern) {
            if (!pattern->is_string()) r.bad("hybrid_override_pattern", "must be a string such as \"M*-M-\"");
            for (char ch : pattern->get<std::string>()) kinds.push_back(std::string(1, ch));
            kinds_field = "hybrid_override_pattern";
        } else {
            r.bad("layers_block_type", "is missing (nor is there a hybrid_override_pattern): the layers' kinds are unknown");
        }
        if (const auto* n = r.find("num_hidden_layers"); n && !(n->is_number_integer() && n->get<std::int64_t>() ==
                                                                static_cast<std::int64_t>(kinds.size())))
            r.bad("num_hidden_layers", "= ", field_reader::brief(*n), " disagrees with ", kinds_field, " (",
                  kinds.size(), " layers)");
        attn.num_heads = r.integer("num_attention_heads", 32, 1, big);
        attn.num_kv_heads = r.integer("num_key_value_heads", 8, 1, big);
        // Older Nemotron-H configs name it attention_head_dim.
        const index_t legacy_head_dim = r.integer("attention_head_dim", 128, 1, big);
        attn.head_dim = r.integer("head_dim", legacy_head_dim, 1, big);
        if (r.find("attention_head_dim") && attn.head_dim != legacy_head_dim)
            r.bad("attention_head_dim", "= ", legacy_head_dim, " disagrees with head_dim = ", attn.head_dim);
        bb.d_ff = r.integer("intermediate_size", 21504, 1, big);
        io_detail::require_string(r, "mlp_hidden_act", "relu2", {"relu2"});
        io_detail::require_string(r, "mamba_hidden_act", "silu", {"silu", "swish"});
        m.d_state = r.integer("ssm_state_size", 128, 1, big);
        const index_t heads = r.integer("mamba_num_heads", 128, 1, big);
        m.headdim = r.integer("mamba_head_dim", 64, 1, big);
        (void)r.integer("expand", 2, 1, size_limits::expand);  // NemotronH sizes the mixer by heads * head_dim instead
        m.expand = io_detail::inner_expand(r, "mamba_num_heads", heads, m.headdim, m.d_model);
        m.ngroups = r.integer("n_groups", 8, 1, big);
        if (heads % m.ngroups != 0) r.bad("n_groups", "= ", m.ngroups, " does not divide mamba_num_heads = ", heads);
        m.d_conv = r.integer("conv_kernel", 4, 1, size_limits::conv_width);
        m.chunk_size = r.integer("chunk_size", 128, 1, big);
        c.use_conv_bias = r.boolean("use_conv_bias", true);
        io_detail::require_false(r, "mamba_proj_bias", "biases on the Mamba2 in_proj / out_proj are");
        io_detail::require_false(r, "use_bias", "biases on the Mamba2 in_proj / out_proj are");
        io_detail::read_time_step_limit(r, m);
        const double dt_floor = r.number("time_step_min", 0.001);
        if (!(std::isfinite(dt_floor) && dt_floor >= 0.0)) r.bad("time_step_min", "= ", dt_floor, " must be a finite number >= 0");
        if (options.nemotron_dt_floor_at_time_step_min) {
            m.dt_min = std::max(m.dt_min, dt_floor);
            m.dt_max = std::max(m.dt_max, m.dt_min);
        } else {
            c.extra["time_step_min"] = dt_floor;
        }
        m.norm_eps = r.number("layer_norm_epsilon", 1e-5);
        if (!(m.norm_eps > 0.0 && m.norm_eps < 1.0)) r.bad("layer_norm_epsilon", "= ", m.norm_eps, " must be in (0, 1)");
        c.mtp_layers = r.integer("num_nextn_predict_layers", 0, 0, size_limits::layers);
        // The MoE sizes matter only to "moe" layers, which are refused by kind below.
        for (const char* f : {"n_routed_experts", "n_shared_experts", "moe_intermediate_size",
                              "moe_shared_expert_intermediate_size", "moe_latent_size", "moe_shared_expert_overlap",
                              "num_experts_per_tok", "routed_scaling_factor", "n_group", "topk_group", "norm_topk_prob",
                              "mtp_layers_block_type", "mtp_hybrid_override_pattern"})
            if (const auto* v = r.find(f)) c.extra[f] = *v;
    } else if (arch == hybrid_architecture::falcon_h1) {
        // Every layer: Mamba2 and attention on one normed input, summed, then a SwiGLU MLP.
        bb.num_layers = r.integer("num_hidden_layers", 32, 1, size_limits::layers);
        for (const char* f : {"layers_block_type", "layer_types"})
            if (const auto* v = r.find(f)) {
                list_of_strings(f, *v);
                if (static_cast<index_t>(kinds.size()) != bb.num_layers)
                    r.bad(f, "names ", kinds.size(), " layers, but num_hidden_layers = ", bb.num_layers);
                break;
            }
        if (kinds.empty()) kinds.assign(static_cast<std::size_t>(bb.num_layers), "hybrid"), kinds_field = "num_hidden_layers";
        attn.num_heads = r.integer("num_attention_heads", 32, 1, big);
        if (const auto* kv = r.find("num_key_value_heads"); kv && kv->is_null()) attn.num_kv_heads = attn.num_heads;
        else attn.num_kv_heads = r.integer("num_key_value_heads", 8, 1, big);
        // transformers: getattr(config, "head_dim", hidden_size // num_attention_heads).
        attn.head_dim = r.integer("head_dim", m.d_model / attn.num_heads, 1, big);
        if (attn.head_dim < 1) r.bad("num_attention_heads", "= ", attn.num_heads, " exceeds hidden_size = ", m.d_model);
        bb.d_ff = r.integer("intermediate_size", 14336, 1, big);
        io_detail::require_string(r, "hidden_act", "silu", {"silu", "swish"});
        m.norm_eps = r.number("rms_norm_eps", 1e-5);
        if (!(m.norm_eps > 0.0 && m.norm_eps < 1.0)) r.bad("rms_norm_eps", "= ", m.norm_eps, " must be in (0, 1)");
        // The Mamba2 width is mamba_d_ssm (mamba_expand * hidden_size when null), whatever its ratio to hidden_size.
        m.expand = r.integer("mamba_expand", 2, 1, size_limits::expand);
        index_t d_ssm = m.expand * m.d_model;
        if (const auto* v = r.find("mamba_d_ssm"); v && !v->is_null()) d_ssm = r.integer("mamba_d_ssm", 0, 1, big);
        m.inner_width = d_ssm;
        const index_t heads = r.integer("mamba_n_heads", 128, 1, big);
        m.headdim = d_ssm / heads;
        if (const auto* v = r.find("mamba_d_head"); v && !(v->is_string() && v->get<std::string>() == "auto"))
            m.headdim = r.integer("mamba_d_head", 0, 1, big);
        if (m.headdim < 1 || heads * m.headdim != d_ssm)
            r.bad("mamba_n_heads", "= ", heads, ": mamba_n_heads * mamba_d_head = ", heads * m.headdim,
                  " must equal the Mamba2 width mamba_d_ssm = ", d_ssm);
        m.ngroups = r.integer("mamba_n_groups", 1, 1, big);
        if (heads % m.ngroups != 0) r.bad("mamba_n_groups", "= ", m.ngroups, " does not divide mamba_n_heads = ", heads);
        m.d_state = r.integer("mamba_d_state", 256, 1, big);
        m.d_conv = r.integer("mamba_d_conv", 4, 1, size_limits::conv_width);
        m.chunk_size = r.integer("mamba_chunk_size", 256, 1, big);
        c.use_conv_bias = r.boolean("mamba_conv_bias", true);
        io_detail::require_false(r, "mamba_proj_bias", "biases on the Mamba2 in_proj are");
        io_detail::require_false(r, "projectors_bias", "biases on the Mamba2 out_proj are");
        io_detail::read_time_step_limit(r, m);  // the torch path clamps there only (time_step_min is an init setting)
        // mamba_rms_norm: a gated RMSNorm on the SSM output at all; mamba_norm_before_gate: where.
        const bool rms_norm = r.boolean("mamba_rms_norm", false);
        const bool before_gate = r.boolean("mamba_norm_before_gate", true);
        m.norm_placement = !rms_norm ? gated_norm::none : before_gate ? gated_norm::before_gate : gated_norm::after_gate;
        const auto rope = io_detail::read_rope(r, source, 1.0);
        if (rope.partial_rotary_factor != 1.0)
            r.bad("partial_rotary_factor", "= ", rope.partial_rotary_factor, ": Falcon-H1 rotates whole heads");
        attn.rope_theta = rope.theta;
        attn.rotary_dim = attn.head_dim;
        auto& f = c.falcon;
        const auto positive = [&](std::string_view field, double v) {
            if (!(std::isfinite(v) && v > 0.0)) r.bad(field, "= ", v, " must be a finite positive number");
            return v;
        };
        const auto scalar = [&](const char* field) {
            const auto* v = r.find(field);
            return v == nullptr || v->is_null() ? 1.0 : positive(field, r.number_value(field, *v));
        };
        const auto list = [&](const char* field, auto& out) {
            const auto* v = r.find(field);
            if (v == nullptr || v->is_null()) return;
            if (!v->is_array() || v->size() != out.size())
                r.bad(field, "must be a list of ", out.size(), " numbers, got ", field_reader::brief(*v));
            for (std::size_t k = 0; k < out.size(); ++k) out[k] = positive(field, r.number_value(field, (*v)[k]));
        };
        f.embedding = scalar("embedding_multiplier");
        f.lm_head = scalar("lm_head_multiplier");
        f.attention_in = scalar("attention_in_multiplier");
        f.attention_out = scalar("attention_out_multiplier");
        f.key = scalar("key_multiplier");
        f.ssm_in = scalar("ssm_in_multiplier");
        f.ssm_out = scalar("ssm_out_multiplier");
        list("ssm_multipliers", f.ssm);
        list("mlp_multipliers", f.mlp);
        lm.embedding_multiplier = f.embedding;
        lm.logits_divisor = 1.0 / f.lm_head;
    } else {
        // Bamba and Granite: every layer is a mixer (Mamba2 or attention) and an MLP.
        bb.num_layers = r.integer("num_hidden_layers", 32, 1, size_limits::layers);
        attn.num_heads = r.integer("num_attention_heads", 32, 1, big);
        attn.num_kv_heads = r.integer("num_key_value_heads", arch == hybrid_architecture::bamba ? 8 : attn.num_heads, 1, big);
        if (m.d_model % attn.num_heads != 0)
            r.bad("num_attention_heads", "= ", attn.num_heads, " does not divide hidden_size = ", m.d_model);
        attn.head_dim = m.d_model / attn.num_heads;
        if (arch == hybrid_architecture::bamba) attn.head_dim = r.integer("head_dim", attn.head_dim, 1, big);
        else if (const auto* hd = r.find("head_dim"); hd && !(hd->is_number_integer() && hd->get<std::int64_t>() == attn.head_dim))
            r.bad("head_dim", "= ", field_reader::brief(*hd), ": Granite's attention uses hidden_size / num_attention_heads = ",
                  attn.head_dim);
        io_detail::require_string(r, "hidden_act", "silu", {"silu", "swish"});
        m.norm_eps = r.number("rms_norm_eps", arch == hybrid_architecture::bamba ? 1e-5 : 1e-6);
        if (!(m.norm_eps > 0.0 && m.norm_eps < 1.0)) r.bad("rms_norm_eps", "= ", m.norm_eps, " must be in (0, 1)");
        io_detail::read_bamba_mamba(r, m, c.use_conv_bias);
        if (arch == hybrid_architecture::bamba) {
            bb.d_ff = r.integer("intermediate_size", 14336, 1, big);
            kinds.assign(static_cast<std::size_t>(bb.num_layers), "mamba");
            if (const auto* idx = r.find("attn_layer_indices"); idx && !idx->is_null()) {
                if (!idx->is_array()) r.bad("attn_layer_indices", "must be a list of layer indices");
                for (const auto& e : *idx) {
                    if (!e.is_number_integer() || e.get<std::int64_t>() < 0 || e.get<std::int64_t>() >= bb.num_layers)
                        r.bad("attn_layer_indices", "holds ", field_reader::brief(e), ", not a layer index in [0, ",
                              bb.num_layers, ")");
                    kinds[static_cast<std::size_t>(e.get<std::int64_t>())] = "attention";
                }
            }
            kinds_field = "attn_layer_indices";
            const auto rope = io_detail::read_rope(r, source, 0.5);
            attn.rope_theta = rope.theta;
            attn.rotary_dim = static_cast<index_t>(static_cast<double>(attn.head_dim) * rope.partial_rotary_factor);
            if (attn.rotary_dim % 2 != 0)
                r.bad("partial_rotary_factor", "= ", rope.partial_rotary_factor, " gives an odd rotary dimension ", attn.rotary_dim);
        } else {
            (void)r.integer("intermediate_size", 0, 0, big);  // the experts' width; no experts here
            bb.d_ff = r.integer("shared_intermediate_size", 1024, 1, big);
            const index_t experts = r.integer("num_local_experts", 8, 0, big);
            if (experts != 0)
                r.bad("num_local_experts", "= ", experts, ": mixture-of-experts layers are not supported (the dense Granite "
                                                          "4.0 hybrids, num_local_experts = 0, are)");
            (void)r.integer("num_experts_per_tok", 2, 0, big);
            const auto* types = r.find("layer_types");
            const auto* types_alias = r.find("layers_block_type");
            if (types && types_alias) r.bad("layers_block_type", "and layer_types are both given: give one");
            if (types || types_alias) list_of_strings(types ? "layer_types" : "layers_block_type", types ? *types : *types_alias);
            else kinds.assign(static_cast<std::size_t>(bb.num_layers), "mamba"), kinds_field = "layer_types";
            if (static_cast<index_t>(kinds.size()) != bb.num_layers)
                r.bad(kinds_field, "names ", kinds.size(), " layers, but num_hidden_layers = ", bb.num_layers);
            lm.embedding_multiplier = r.number("embedding_multiplier", 1.0);
            lm.logits_divisor = r.number("logits_scaling", 1.0);
            h.residual_multiplier = r.number("residual_multiplier", 1.0);
            attn.scale = r.number("attention_multiplier", 1.0);
            for (auto [field, v] : {std::pair{"embedding_multiplier", lm.embedding_multiplier},
                                    std::pair{"logits_scaling", lm.logits_divisor},
                                    std::pair{"residual_multiplier", h.residual_multiplier},
                                    std::pair{"attention_multiplier", attn.scale}})
                if (!(std::isfinite(v) && v > 0.0)) r.bad(field, "= ", v, " must be a finite positive number");
            const auto* pos = r.find("position_embedding_type");
            const bool rope_on = pos && pos->is_string() && pos->get<std::string>() == "rope";
            if (pos && !pos->is_null() && !rope_on && !(pos->is_string() && pos->get<std::string>() == "nope"))
                r.bad("position_embedding_type", "= ", field_reader::brief(*pos), " is not supported (null, \"nope\" or \"rope\")");
            const auto rope = io_detail::read_rope(r, source, 1.0);
            if (rope_on) {
                if (rope.partial_rotary_factor != 1.0)
                    r.bad("partial_rotary_factor", "= ", rope.partial_rotary_factor, ": Granite rotates whole heads");
                attn.rope_theta = rope.theta;
                attn.rotary_dim = attn.head_dim;
            }
        }
    }
    for (std::size_t i = 0; i < kinds.size(); ++i) {
        hybrid_layer_spec spec;
        if (arch == hybrid_architecture::falcon_h1) {
            if (kinds[i] != "hybrid")
                r.bad(kinds_field, "names a layer kind \"", printable(kinds[i]), "\": Falcon-H1's layers are all \"hybrid\"");
            spec.mixer = hybrid_mixer::parallel;
        } else {
            spec.mixer = io_detail::hybrid_layer_kind(r, kinds_field, kinds[i], arch == hybrid_architecture::nemotron_h);
        }
        if (arch == hybrid_architecture::nemotron_h) spec.mlp = spec.mixer == hybrid_mixer::none ? hybrid_mlp::relu2 : hybrid_mlp::none;
        else spec.mlp = hybrid_mlp::swiglu;
        h.layers.push_back(spec);
    }
    bb.num_layers = static_cast<index_t>(h.layers.size());
    if (bb.num_layers < 1) r.bad(kinds_field, "names no layers");
    if (h.attention_layers() > 0 && attn.num_heads % attn.num_kv_heads != 0)
        r.bad("num_key_value_heads", "= ", attn.num_kv_heads, " does not divide num_attention_heads = ", attn.num_heads);
    if (h.attention_layers() == 0) attn = self_attention_config{};

    if (const auto* t = r.find("transmamba"))
        c.transmamba = io_detail::parse_transmamba(r, *t, source, h.mamba2_layers());

    std::vector<std::string> unknown;
    for (const auto& [key, value] : root.items()) {
        if (r.was_read(key)) continue;
        if (io_detail::inert_config_field(key) || options.allow_unknown_fields) c.extra[key] = value;
        else unknown.push_back(key);
    }
    if (!unknown.empty()) {
        std::string list;
        for (const auto& k : unknown) list += (list.empty() ? "'" : ", '") + printable(k) + "'";
        fail("config '", printable(source, 4096), "' (", architecture_name(arch), ") has field", unknown.size() == 1 ? "" : "s",
             " this library does not know: ", list,
             " (they might change the model; hybrid_config_options::allow_unknown_fields keeps them and goes on)");
    }
    try {
        lm.validate();
    } catch (const error& e) {
        std::string_view why = e.what();
        if (why.starts_with("transmamba: ")) why.remove_prefix(12);
        fail("config '", printable(source, 4096), "' describes a model the library refuses: ", why);
    }
    return c;
}

inline hf_hybrid_config read_hf_hybrid_config(const std::filesystem::path& file, const hybrid_config_options& options = {}) {
    return parse_hf_hybrid_config(read_text_file(file), file.string(), options);
}

// Whether a config.json's model_type is one of the hybrids above (for a program that picks the loader).
inline bool is_hybrid_model_type(std::string_view model_type) {
    return model_type == "nemotron_h" || model_type == "bamba" || model_type == "granitemoehybrid" ||
           model_type == "falcon_h1";
}

}  // namespace transmamba
