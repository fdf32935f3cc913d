#pragma once
// The config.json of a Hugging Face Mamba2ForCausalLM checkpoint (transformers 5.x Mamba2Config), plus
// the "transmamba" object that makes it a TransMamba checkpoint (docs/checkpoints.md):
//
//   "transmamba": {"version": 1, "kind": "cyclic" | "per_layer" | "fixed", "transpoints": [0, 128, ...],
//                  "attention": "paper" | "z_gated" | "no_skip" | "rope" | {explicit fields}}
//
// Non-finite floats (transformers' default time_step_limit is [0.0, inf]) come in two spellings:
// transformers 5.x writes {"__float__": "Infinity"}, older versions (Python's json.dumps) the bare
// tokens Infinity, -Infinity and NaN, which strict JSON parsers reject; those are rewritten into
// marker strings before parsing. Both read as numbers. Writing uses the bare tokens, which every
// transformers version reads back (json.loads accepts them). Every error names the file and field,
// and quotes the file's text only through printable() (io/printable.hpp).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "transmamba/core/config.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"
#include "transmamba/io/mamba_ssm_config.hpp"
#include "transmamba/io/printable.hpp"
#include "transmamba/io/regular_file.hpp"
#include "transmamba/policy/attention_spec.hpp"
#include "transmamba/policy/transpoint_schedule.hpp"

namespace transmamba {

struct language_model_config;  // model/language_model.hpp; see hf_mamba2_config::model_config()

// The "transmamba" object: what a TransMamba checkpoint adds to a Mamba2 one.
struct transmamba_options {
    transpoint_schedule schedule;
    attention_spec attention;  // the variant the weights were trained with; default the paper's

    bool operator==(const transmamba_options&) const = default;
};

// The fields of Mamba2Config that shape the model; defaults are Mamba2Config's, used for any field
// config.json leaves out (as transformers does).
struct hf_mamba2_config {
    index_t hidden_size = 4096;
    index_t state_size = 128;
    index_t num_heads = 128;
    index_t head_dim = 64;
    index_t n_groups = 8;
    index_t expand = 2;
    index_t conv_kernel = 4;
    index_t chunk_size = 256;
    index_t num_hidden_layers = 64;
    index_t vocab_size = 32768;
    double layer_norm_epsilon = 1e-5;
    bool tie_word_embeddings = false;
    std::array<double, 2> time_step_limit{0.0, std::numeric_limits<double>::infinity()};
    bool use_conv_bias = true;
    std::optional<transmamba_options> transmamba;  // absent: a plain Mamba2 checkpoint
    // Every other top-level field as read (token ids, "architectures", init-only settings, ...):
    // save_checkpoint writes them back unchanged.
    nlohmann::json extra = nlohmann::json::object();

    // The model's config, and the config of a model (the inverse): defined in
    // io/hf_config_model.hpp, which includes the model. This header does not, so that the parser
    // builds on its own (the config fuzzer's clang 14 cannot build the model headers).
    language_model_config model_config() const;
    static hf_mamba2_config from(const language_model_config& c, std::optional<transmamba_options> options = {});

    // Elements of all parameters the config describes (nullopt when the library refuses the config,
    // e.g. a count that overflows): a loader compares it with the checkpoint before allocating
    // anything. The count is the library's (language_model_config::parameter_count).
    std::optional<std::uint64_t> parameter_count() const;  // io/hf_config_model.hpp
};

namespace io_detail {

inline constexpr std::string_view nonfinite_marker = "@transmamba:";

// Rewrites the bare tokens Infinity, -Infinity and NaN outside strings into marker strings.
inline std::string mark_nonfinite_tokens(std::string_view text) {
    std::string out;
    out.reserve(text.size() + 64);
    const auto word_char = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
    };
    bool in_string = false;
    for (std::size_t i = 0; i < text.size();) {
        const char c = text[i];
        if (in_string) {
            out += c;
            if (c == '\\' && i + 1 < text.size()) {
                out += text[i + 1];
                i += 2;
                continue;
            }
            if (c == '"') in_string = false;
            ++i;
            continue;
        }
        if (c == '"') {
            in_string = true;
            out += c;
            ++i;
            continue;
        }
        bool replaced = false;
        for (std::string_view token : {"-Infinity", "Infinity", "NaN"}) {
            if (text.substr(i, token.size()) != token) continue;
            const std::size_t after = i + token.size();
            if ((i > 0 && word_char(text[i - 1])) || (after < text.size() && word_char(text[after]))) continue;
            out += '"';
            out += nonfinite_marker;
            out += token;
            out += '"';
            i = after;
            replaced = true;
            break;
        }
        if (!replaced) {
            out += c;
            ++i;
        }
    }
    return out;
}

// Reads the fields of one JSON object, naming the file and the field (with a prefix such as
// "transmamba.") in every error, and remembering which fields were read.
class field_reader {
public:
    field_reader(const nlohmann::json& object, std::string_view source, std::string prefix = "")
        : object_(object), source_(printable(source, 4096)), prefix_(std::move(prefix)) {}

    template <class... Parts>
    [[noreturn]] void bad(std::string_view field, const Parts&... parts) const {
        fail("config '", source_, "': field '", prefix_, printable(field), "' ", parts...);
    }

    const nlohmann::json* find(std::string_view field) {
        used_.insert(std::string(field));
        const auto it = object_.find(field);
        return it == object_.end() ? nullptr : &*it;
    }

    index_t integer(std::string_view field, index_t fallback, index_t lo, index_t hi) {
        const auto* v = find(field);
        if (v == nullptr) return fallback;
        if (!v->is_number_integer()) bad(field, "must be an integer, got ", brief(*v));
        const bool in_range = v->is_number_unsigned() ? v->get<std::uint64_t>() <= static_cast<std::uint64_t>(hi) &&
                                                            v->get<std::uint64_t>() >= static_cast<std::uint64_t>(std::max<index_t>(lo, 0))
                                                      : v->get<std::int64_t>() >= lo && v->get<std::int64_t>() <= hi;
        if (!in_range) bad(field, "= ", v->dump(), " is out of range [", lo, ", ", hi, "]");
        return static_cast<index_t>(v->get<std::int64_t>());
    }

    double number(std::string_view field, double fallback) {
        const auto* v = find(field);
        return v == nullptr ? fallback : number_value(field, *v);
    }
    // A JSON number, a non-finite token (marked before parsing), or transformers 5.x's
    // {"__float__": "Infinity" | "-Infinity" | "NaN"}.
    double number_value(std::string_view field, const nlohmann::json& v) const {
        if (v.is_number()) return v.get<double>();
        const auto nonfinite = [](std::string_view token) -> std::optional<double> {
            if (token == "Infinity") return std::numeric_limits<double>::infinity();
            if (token == "-Infinity") return -std::numeric_limits<double>::infinity();
            if (token == "NaN") return std::numeric_limits<double>::quiet_NaN();
            return std::nullopt;
        };
        if (v.is_string()) {
            const auto& s = v.get_ref<const std::string&>();
            if (s.starts_with(nonfinite_marker))
                if (const auto x = nonfinite(std::string_view(s).substr(nonfinite_marker.size()))) return *x;
        }
        if (v.is_object() && v.size() == 1 && v.contains("__float__") && v.at("__float__").is_string())
            if (const auto x = nonfinite(v.at("__float__").get_ref<const std::string&>())) return *x;
        bad(field, "must be a number, got ", brief(v));
    }

    bool boolean(std::string_view field, bool fallback) {
        const auto* v = find(field);
        if (v == nullptr) return fallback;
        if (!v->is_boolean()) bad(field, "must be true or false, got ", brief(*v));
        return v->get<bool>();
    }

    std::optional<std::string> string(std::string_view field) {
        const auto* v = find(field);
        if (v == nullptr) return std::nullopt;
        if (!v->is_string()) bad(field, "must be a string, got ", brief(*v));
        return v->get<std::string>();
    }

    bool was_read(const std::string& field) const { return used_.contains(field); }

    // A JSON value for a message: cut short, escaped (dump() leaves UTF-8 as it is).
    static std::string brief(const nlohmann::json& v) {
        const std::string s = v.dump();
        return printable(s.size() > 40 ? s.substr(0, 37) + "..." : s);
    }

private:
    const nlohmann::json& object_;
    std::string source_, prefix_;
    std::set<std::string, std::less<>> used_;
};

inline attention_spec parse_attention(field_reader& outer, const nlohmann::json& v, const std::string& source) {
    if (v.is_string()) {
        const auto spec = attention_spec::named(v.get_ref<const std::string&>());
        if (!spec) outer.bad("attention", "names no attention variant: ", field_reader::brief(v),
                             " (expected \"paper\", \"z_gated\", \"no_skip\", \"rope\" or an object)");
        return *spec;
    }
    if (!v.is_object()) outer.bad("attention", "must be a variant name or an object, got ", field_reader::brief(v));
    field_reader r(v, source, "transmamba.attention.");
    attention_spec s;
    s.gate_by_z = r.boolean("gate_by_z", s.gate_by_z);
    s.skip_D = r.boolean("skip_D", s.skip_D);
    s.rope = r.boolean("rope", s.rope);
    s.rope_theta = r.number("rope_theta", s.rope_theta);
    s.scale = r.number("scale", s.scale);
    if (!(std::isfinite(s.rope_theta) && s.rope_theta > 0)) r.bad("rope_theta", "must be a positive number");
    if (!(std::isfinite(s.scale) && s.scale >= 0)) r.bad("scale", "must be a non-negative number (0: 1/sqrt(state_size))");
    for (const auto& [key, value] : v.items())
        if (!r.was_read(key)) r.bad(key, "is not a field of the attention object");
    return s;
}

inline transmamba_options parse_transmamba(field_reader& outer, const nlohmann::json& v, const std::string& source,
                                           index_t num_layers) {
    if (!v.is_object()) outer.bad("transmamba", "must be an object, got ", field_reader::brief(v));
    field_reader r(v, source, "transmamba.");
    transmamba_options o;
    const index_t version = r.integer("version", 1, 1, 1000);
    if (version != 1) r.bad("version", "= ", version, " is not supported (this library reads version 1)");
    const auto* points = r.find("transpoints");
    if (points == nullptr) r.bad("transpoints", "is missing (a list of TransPoints)");
    if (!points->is_array() || points->empty()) r.bad("transpoints", "must be a non-empty list of integers, got ", field_reader::brief(*points));
    o.schedule.transpoints.clear();
    for (const auto& p : *points) {
        if (!p.is_number_integer() || (!p.is_number_unsigned() && p.get<std::int64_t>() < 0))
            r.bad("transpoints", "must hold non-negative integers, got ", field_reader::brief(p));
        if (p.is_number_unsigned() && p.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()))
            r.bad("transpoints", "holds ", p.dump(), ", which is too large");
        o.schedule.transpoints.push_back(static_cast<index_t>(p.get<std::int64_t>()));
    }
    const auto kind = r.string("kind").value_or("cyclic");
    const auto parsed = parse_schedule_kind(kind);
    if (!parsed) r.bad("kind", "= \"", printable(kind), "\" is not a schedule kind (\"fixed\", \"per_layer\" or \"cyclic\")");
    o.schedule.kind = *parsed;
    if (*parsed == schedule_kind::fixed && o.schedule.transpoints.size() != 1)
        r.bad("transpoints", "must have exactly one entry for kind \"fixed\", got ", o.schedule.transpoints.size());
    if (*parsed == schedule_kind::per_layer && static_cast<index_t>(o.schedule.transpoints.size()) != num_layers)
        r.bad("transpoints", "must have one entry per layer (num_hidden_layers = ", num_layers, ") for kind \"per_layer\", got ",
              o.schedule.transpoints.size());
    if (const auto* a = r.find("attention")) o.attention = parse_attention(r, *a, source);
    for (const auto& [key, value] : v.items())
        if (!r.was_read(key)) r.bad(key, "is not a field of the transmamba object (version, kind, transpoints, attention)");
    return o;
}

}  // namespace io_detail

// Parses config.json text; `source` names the file in errors.
inline hf_mamba2_config parse_hf_mamba2_config(std::string_view text, const std::string& source = "config.json") {
    using json = nlohmann::json;
    json root;
    try {
        root = json::parse(io_detail::mark_nonfinite_tokens(text));
    } catch (const json::exception& e) {
        fail("config '", printable(source, 4096), "' is not valid JSON: ", printable(e.what()));
    }
    if (!root.is_object()) fail("config '", printable(source, 4096), "' is not a JSON object");
    if (io_detail::is_mamba_ssm_config(root)) io_detail::refuse_mamba_ssm_config(root, source);

    io_detail::field_reader r(root, source);
    hf_mamba2_config c;
    if (const auto model_type = r.string("model_type"); model_type && *model_type != "mamba2") {
        const bool hybrid = *model_type == "nemotron_h" || *model_type == "bamba" || *model_type == "granitemoehybrid";
        r.bad("model_type", "= \"", printable(*model_type), "\": only \"mamba2\" checkpoints are supported here",
              hybrid ? " (this layer-level hybrid loads with load_hybrid_checkpoint, io/hybrid_checkpoint.hpp)" : "");
    }
    // Sizes: the library's limits (core/config.hpp, which every config's validate() applies), read
    // here to name the config.json field; products of them are checked by validate() below.
    constexpr index_t big = size_limits::dimension;
    c.hidden_size = r.integer("hidden_size", c.hidden_size, 1, big);
    c.state_size = r.integer("state_size", c.state_size, 1, big);
    c.num_heads = r.integer("num_heads", c.num_heads, 1, big);
    c.head_dim = r.integer("head_dim", c.head_dim, 1, big);
    c.n_groups = r.integer("n_groups", c.n_groups, 1, big);
    c.expand = r.integer("expand", c.expand, 1, size_limits::expand);
    c.conv_kernel = r.integer("conv_kernel", c.conv_kernel, 1, size_limits::conv_width);
    c.chunk_size = r.integer("chunk_size", c.chunk_size, 1, big);
    c.num_hidden_layers = r.integer("num_hidden_layers", c.num_hidden_layers, 1, size_limits::layers);
    c.vocab_size = r.integer("vocab_size", c.vocab_size, 1, size_limits::vocab);
    c.layer_norm_epsilon = r.number("layer_norm_epsilon", c.layer_norm_epsilon);
    c.tie_word_embeddings = r.boolean("tie_word_embeddings", c.tie_word_embeddings);
    c.use_conv_bias = r.boolean("use_conv_bias", c.use_conv_bias);
    if (r.boolean("use_bias", false)) r.bad("use_bias", "is true: biases on in_proj/out_proj are not supported");
    if (const auto act = r.string("hidden_act"); act && *act != "silu" && *act != "swish")
        r.bad("hidden_act", "= \"", printable(*act), "\": only \"silu\" is supported (the conv activation of SPEC.md)");
    // Checked for their type only, and kept in `extra`: transformers' Mamba2 ignores rms_norm (the
    // gated RMSNorm is always there) and residual_in_fp32 only changes the residual's precision.
    for (const char* ignored : {"rms_norm", "residual_in_fp32"})
        if (const auto it = root.find(ignored); it != root.end() && !it->is_boolean())
            r.bad(ignored, "must be true or false, got ", io_detail::field_reader::brief(*it));
    if (const auto* limit = r.find("time_step_limit")) {
        if (!limit->is_array() || limit->size() != 2)
            r.bad("time_step_limit", "must be a list [min, max] of two numbers, got ", io_detail::field_reader::brief(*limit));
        c.time_step_limit = {r.number_value("time_step_limit", (*limit)[0]), r.number_value("time_step_limit", (*limit)[1])};
    }

    // Consistency (Mamba2Config checks the first; the others are what the model needs).
    if (!(c.layer_norm_epsilon > 0.0 && c.layer_norm_epsilon < 1.0))
        r.bad("layer_norm_epsilon", "= ", c.layer_norm_epsilon, " must be in (0, 1)");
    const auto [lo, hi] = c.time_step_limit;
    if (std::isnan(lo) || std::isnan(hi) || lo < 0.0 || !std::isfinite(lo) || hi < lo)
        r.bad("time_step_limit", "= [", lo, ", ", hi, "] must be [min, max] with 0 <= min <= max and a finite min");
    if (c.num_heads * c.head_dim != c.expand * c.hidden_size)
        r.bad("num_heads", "= ", c.num_heads, ": num_heads * head_dim = ", c.num_heads * c.head_dim,
              " must equal expand * hidden_size = ", c.expand * c.hidden_size);
    if (c.num_heads % c.n_groups != 0)
        r.bad("n_groups", "= ", c.n_groups, " does not divide num_heads = ", c.num_heads);

    if (const auto* t = r.find("transmamba")) c.transmamba = io_detail::parse_transmamba(r, *t, source, c.num_hidden_layers);

    for (const auto& [key, value] : root.items())
        if (!r.was_read(key)) c.extra[key] = value;
    return c;
}

inline hf_mamba2_config read_hf_mamba2_config(const std::filesystem::path& file) {
    return parse_hf_mamba2_config(read_text_file(file), file.string());
}

// config.json text (keys sorted, indent 2, as transformers writes it), non-finite numbers as
// Infinity / -Infinity / NaN. `extra` fields come first and are overridden by the model's.
inline std::string to_json_text(const hf_mamba2_config& c) {
    using json = nlohmann::json;
    const auto number = [](double v) -> json {
        if (std::isfinite(v)) return v;
        return std::string(io_detail::nonfinite_marker) + (std::isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
    };
    json j = c.extra.is_object() ? c.extra : json::object();
    if (!j.contains("architectures")) j["architectures"] = json::array({"Mamba2ForCausalLM"});
    j["model_type"] = "mamba2";
    j["hidden_size"] = c.hidden_size;
    j["state_size"] = c.state_size;
    j["num_heads"] = c.num_heads;
    j["head_dim"] = c.head_dim;
    j["n_groups"] = c.n_groups;
    j["expand"] = c.expand;
    j["conv_kernel"] = c.conv_kernel;
    j["chunk_size"] = c.chunk_size;
    j["num_hidden_layers"] = c.num_hidden_layers;
    j["vocab_size"] = c.vocab_size;
    j["layer_norm_epsilon"] = c.layer_norm_epsilon;
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    j["time_step_limit"] = json::array({number(c.time_step_limit[0]), number(c.time_step_limit[1])});
    j["use_conv_bias"] = c.use_conv_bias;
    j["use_bias"] = false;
    if (!j.contains("hidden_act")) j["hidden_act"] = "silu";
    if (!j.contains("rms_norm")) j["rms_norm"] = true;
    if (!j.contains("residual_in_fp32")) j["residual_in_fp32"] = true;
    if (c.transmamba) {
        const auto& o = *c.transmamba;
        json t = json::object();
        t["version"] = 1;
        t["kind"] = std::string(schedule_kind_name(o.schedule.kind));
        t["transpoints"] = o.schedule.transpoints;
        if (const auto name = o.attention.name(); !name.empty()) {
            t["attention"] = name;
        } else {
            json a = {{"gate_by_z", o.attention.gate_by_z}, {"skip_D", o.attention.skip_D}, {"rope", o.attention.rope},
                      {"scale", o.attention.scale}};
            if (o.attention.rope) a["rope_theta"] = o.attention.rope_theta;
            t["attention"] = a;
        }
        j["transmamba"] = t;
    } else {
        j.erase("transmamba");
    }
    std::string text = j.dump(2) + "\n";
    // Marker strings back to bare tokens.
    for (std::string_view token : {"-Infinity", "Infinity", "NaN"}) {
        std::string marked(1, '"');  // appended piecewise: GCC 12 warns falsely on "..." + string
        marked.append(io_detail::nonfinite_marker).append(token).append(1, '"');
        for (std::size_t at = text.find(marked); at != std::string::npos; at = text.find(marked, at))
            text.replace(at, marked.size(), token);
    }
    return text;
}

}  // namespace transmamba
