#pragma once
// Checkpoint directories in the layout transformers writes for Mamba2ForCausalLM (docs/checkpoints.md):
//
//   DIR/config.json                        Mamba2Config (+ the "transmamba" object: io/hf_config.hpp)
//   DIR/model.safetensors                  the weights, or
//   DIR/model.safetensors.index.json       {"weight_map": {tensor: shard file}} and the shards
//
// load_checkpoint<T, Backend>(DIR) checks the config, then every tensor the model needs for presence,
// shape, dtype and finiteness, reports tensors the model does not use, and returns the model with its
// TransPoint schedule. save_checkpoint writes both files (each atomically) so that loading them again
// gives the same parameters bit for bit, and transformers reads them as a Mamba2 model.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "transmamba/backend/cpu.hpp"  // load_hf_mamba2 loads onto the CPU
#include "transmamba/block/mixer_params.hpp"
#include "transmamba/block/stack.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/io/atomic_file.hpp"
#include "transmamba/io/hf_config.hpp"
#include "transmamba/io/hf_config_model.hpp"
#include "transmamba/io/safetensors.hpp"
#include "transmamba/model/language_model.hpp"
#include "transmamba/policy/attention_spec.hpp"
#include "transmamba/policy/transpoint_schedule.hpp"

namespace transmamba {

// Checkpoints hold mixer-only stacks (the Mamba2 pattern), with any mixer policies.
template <class Pattern>
struct checkpoint_pattern : std::false_type {};
template <class Policies>
struct checkpoint_pattern<layer_pattern<transmamba_layer<Policies>>> : std::true_type {
    using policies = Policies;
};

// The weight files of a checkpoint directory, opened and validated, with every tensor by name.
class checkpoint_weights {
public:
    struct entry {
        const safetensors_file* file;
        const tensor_info* info;
    };

    explicit checkpoint_weights(const std::filesystem::path& dir) {
        namespace fs = std::filesystem;
        const fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
        // Anything there but a missing file (a link loop, a FIFO, ...) is opened and refused with
        // its cause (io/regular_file.hpp), not taken for absent.
        if (!status_of(single).missing()) {
            add_file(single, nullptr);
        } else if (!status_of(index).missing()) {
            open_shards(dir, index);
        } else {
            const bool bin = !status_of(dir / "pytorch_model.bin").missing();
            fail("checkpoint '", dir.string(), "' has no model.safetensors (nor model.safetensors.index.json)",
                 bin ? "; it has pytorch_model.bin, which this library does not read: convert it with "
                       "transformers' save_pretrained(..., safe_serialization=True)"
                     : "");
        }
    }

    const entry* find(std::string_view name) const {
        const auto it = entries_.find(name);
        return it == entries_.end() ? nullptr : &it->second;
    }
    const std::map<std::string, entry, std::less<>>& entries() const { return entries_; }
    std::uint64_t total_elements() const { return total_elements_; }
    // "model.safetensors" or "model.safetensors.index.json (N shards)", for messages.
    const std::string& description() const { return description_; }

private:
    void add_file(const std::filesystem::path& path, const std::set<std::string, std::less<>>* listed) {
        files_.push_back(std::make_unique<safetensors_file>(path));
        const safetensors_file& f = *files_.back();
        description_ = path.filename().string();
        for (const auto& t : f.tensors()) {
            if (listed && !listed->contains(t.name)) continue;  // the index decides which shard holds a tensor
            const auto [it, fresh] = entries_.emplace(t.name, entry{&f, &t});
            if (!fresh)
                fail("checkpoint: tensor '", printable(t.name), "' is in both '", it->second.file->source(), "' and '", f.source(), "'");
            total_elements_ += t.elements;
        }
    }

    void open_shards(const std::filesystem::path& dir, const std::filesystem::path& index) {
        nlohmann::json j;
        const std::string text = read_text_file(index, safetensors_max_header_bytes, "an index");
        try {
            j = nlohmann::json::parse(text);
        } catch (const nlohmann::json::exception& e) {
            fail("checkpoint index '", index.string(), "' is not valid JSON: ", printable(e.what()));
        }
        const auto map = j.is_object() ? j.find("weight_map") : j.end();
        if (!j.is_object() || map == j.end() || !map->is_object())
            fail("checkpoint index '", index.string(), "' has no object 'weight_map'");
        std::map<std::string, std::set<std::string, std::less<>>> by_shard;
        for (const auto& [tensor, shard] : map->items()) {
            if (!shard.is_string())
                fail("checkpoint index '", index.string(), "': tensor '", printable(tensor), "' maps to no file name");
            const auto& file = shard.get_ref<const std::string&>();
            // Shards are files of this directory: no paths, so an index cannot point elsewhere.
            if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
                fail("checkpoint index '", index.string(), "': tensor '", printable(tensor), "' maps to '", printable(file),
                     "', which is not a file name in the checkpoint directory");
            by_shard[file].insert(tensor);
        }
        for (const auto& [file, tensors] : by_shard) {
            add_file(dir / file, &tensors);
            for (const auto& t : tensors)
                if (!entries_.contains(t))
                    fail("checkpoint index '", index.string(), "' puts tensor '", printable(t), "' in '", printable(file),
                         "', which does not hold it");
        }
        description_ = index.filename().string() + " (" + std::to_string(by_shard.size()) + " shards)";
    }

    std::vector<std::unique_ptr<safetensors_file>> files_;
    std::map<std::string, entry, std::less<>> entries_;
    std::uint64_t total_elements_ = 0;
    std::string description_;
};

struct load_options {
    // Tensors the model does not use are an error unless this is set; either way they are listed in
    // loaded_checkpoint::unexpected_tensors.
    bool allow_unexpected_tensors = false;
};

template <class T, class Backend, class Pattern>
struct loaded_checkpoint {
    language_model<T, Backend, Pattern> model;
    transpoint_schedule schedule;  // the checkpoint's, or fixed 0 (pure Mamba2) when it has none
    bool has_schedule = false;     // whether config.json has a "transmamba" object
    hf_mamba2_config config;       // as read (config.extra holds the fields the model does not use)
    std::vector<std::string> unexpected_tensors;
};

namespace io_detail {

template <class... Parts>
[[noreturn]] void bad_weight(const safetensors_file& f, std::string_view tensor, const Parts&... parts) {
    fail("checkpoint file '", f.source(), "', tensor '", printable(tensor), "': ", parts...);
}

// The name transformers writes for a dtype in config.json ("dtype").
inline std::string_view torch_dtype_name(dtype t) {
    switch (t) {
        case dtype::F64: return "float64";
        case dtype::F32: return "float32";
        case dtype::F16: return "float16";
        case dtype::BF16: return "bfloat16";
        default: return "float32";
    }
}

// The directory's own problems, by cause: missing, unreadable (a symbolic link loop, ...), or not a
// directory at all; `what` is "checkpoint directory" or the like.
inline void require_directory(std::string_view what, const std::filesystem::path& dir) {
    const path_status st = status_of(dir);
    const std::string shown = printable(dir.string(), 4096);
    if (st.missing()) fail(what, " '", shown, "' does not exist");
    if (st.error) fail(what, " '", shown, "': ", st.describe());
    if (!st.is_directory()) fail(what, " '", shown, "' is not a directory (it is ", st.describe(), ")");
}

// std::filesystem reports a failure as a bare "filesystem error: ..."; at the loader's edges it
// becomes a transmamba::error that says what was being done, to which path, and why.
[[noreturn]] inline void rethrow_filesystem_error(std::string_view doing, const std::filesystem::path& where,
                                                  const std::filesystem::filesystem_error& e) {
    std::string detail;
    if (!e.path1().empty() && e.path1() != where) detail = " ('" + printable(e.path1().string(), 4096) + "')";
    fail(doing, " '", printable(where.string(), 4096), "'", detail, ": ", e.code().message());
}

inline std::string name_list(const std::vector<std::string>& names, std::size_t most = 10) {
    std::string s;
    for (std::size_t i = 0; i < names.size() && i < most; ++i) s += (i ? ", " : "") + printable(names[i]);
    if (names.size() > most) s += ", ... (" + std::to_string(names.size() - most) + " more)";
    return s;
}

// The checkpoint's tensors that a load did not consume, less those `ignored(name)` accepts; an
// error naming them unless `allowed` (`option` is the load option that accepts them).
template <class Ignored>
std::vector<std::string> unused_tensors(const checkpoint_weights& weights,
                                        const std::set<std::string, std::less<>>& consumed, Ignored ignored,
                                        bool allowed, const std::filesystem::path& dir, std::string_view option) {
    std::vector<std::string> unused;
    for (const auto& [name, e] : weights.entries())
        if (!consumed.contains(name) && !ignored(name)) unused.push_back(name);
    if (!unused.empty() && !allowed)
        fail("checkpoint '", dir.string(), "' (", weights.description(), ") holds ", unused.size(), " tensor",
             unused.size() == 1 ? "" : "s", " that the model does not use: ", name_list(unused), " (", option,
             " accepts them)");
    return unused;
}

// The TransPoint schedule that config.json's "transmamba" object stores, checked against the
// model's TransMamba layers; empty (and false) when the config stores none.
template <class Config, class Model>
std::pair<transpoint_schedule, bool> stored_schedule(const Config& cfg, const Model& model) {
    if (!cfg.transmamba.has_value()) return {transpoint_schedule{}, false};
    transpoint_schedule schedule = cfg.transmamba->schedule;
    schedule.validate(model.num_transpoint_layers());
    return {std::move(schedule), true};
}

}  // namespace io_detail

// Loads a checkpoint directory into a language model of storage type T on Backend (weights are
// converted from any float dtype of the file: F32, F16, BF16, F64).
template <class T = float, class Backend = cpu, class Pattern = mamba2_pattern>
loaded_checkpoint<T, Backend, Pattern> load_checkpoint(const std::filesystem::path& dir, const load_options& options = {},
                                                       const typename backend_traits<Backend>::context& ctx = {})
try {  // a function-try-block: the whole loader is the edge at which std::filesystem errors are named
    static_assert(checkpoint_pattern<Pattern>::value,
                  "checkpoints hold mixer-only stacks: Pattern must be layer_pattern<transmamba_layer<Policies>>");
    using policies = typename checkpoint_pattern<Pattern>::policies;
    using traits = backend_traits<Backend>;
    namespace fs = std::filesystem;

    io_detail::require_directory("checkpoint directory", dir);
    const fs::path config_path = dir / "config.json";
    // Missing is said so; anything else there (a loop, a FIFO, ...) is refused with its cause on opening.
    require(!status_of(config_path).missing(), "checkpoint '", dir.string(), "' has no config.json");
    hf_mamba2_config cfg = read_hf_mamba2_config(config_path);
    validate_model_config(cfg, config_path.string());
    if (cfg.transmamba) {
        const auto compiled = attention_spec::of<typename policies::attention>(cfg.state_size);
        if (!(cfg.transmamba->attention == compiled)) {
            const auto want = cfg.transmamba->attention.name(), have = compiled.name();
            fail("config '", config_path.string(), "': field 'transmamba.attention' = \"",
                 want.empty() ? std::string("custom") : want, "\", but the model type runs the attention variant \"",
                 have.empty() ? std::string("custom") : have,
                 "\": load it with the matching mixer_policies<...>::with_attention<...>");
        }
    }

    const checkpoint_weights weights(dir);
    // A config that describes far more parameters than the files hold is refused before anything
    // is allocated (a tensor or two missing is reported by name below).
    const auto needed = cfg.parameter_count();
    const std::uint64_t held = weights.total_elements();
    if (!needed || *needed / 4 > held + (std::uint64_t(1) << 24))
        fail("config '", config_path.string(), "' describes ", needed ? std::to_string(*needed) : std::string("too many"),
             " parameters, but the weights (", weights.description(), ") hold only ", held,
             ": the config does not belong to these weights");

    language_model<T, Backend, Pattern> model(cfg.model_config());
    std::set<std::string, std::less<>> consumed;
    std::vector<std::string> missing;
    const auto ends_with = [](std::string_view s, std::string_view tail) {
        return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
    };
    model.for_each_parameter([&](const std::string& name, auto& buf, const std::vector<index_t>& shape) {
        const auto* e = weights.find(name);
        if (e == nullptr) {
            if (!cfg.use_conv_bias && ends_with(name, "mixer.conv1d.bias")) {
                traits::fill(ctx, buf.data(), buf.size(), static_cast<T>(0.0f));  // no bias: use_conv_bias = false
                return;
            }
            missing.push_back(name);
            return;
        }
        if (!cfg.use_conv_bias && ends_with(name, "mixer.conv1d.bias"))
            io_detail::bad_weight(*e->file, name, "is present although config.json says use_conv_bias = false");
        const tensor_info& t = *e->info;
        const std::vector<std::int64_t> want(shape.begin(), shape.end());
        e->file->expect_shape(t, want);
        if (!is_float_dtype(t.type))
            io_detail::bad_weight(*e->file, name, "has dtype ", dtype_name(t.type), "; weights must be F32, F16, BF16 or F64");
        std::vector<T> host;
        std::span<T> dst;
        if constexpr (traits::host_accessible) {
            dst = std::span<T>(buf.data(), buf.size());
        } else {
            host.resize(buf.size());
            dst = std::span<T>(host);
        }
        e->file->read_into(t, dst);
        for (std::size_t i = 0; i < dst.size(); ++i)
            if (!std::isfinite(to_double(dst[i])))
                io_detail::bad_weight(*e->file, name, "holds a non-finite value (", to_double(dst[i]), ") at flat index ", i);
        if constexpr (!traits::host_accessible) traits::copy_from_host(host.data(), buf.data(), host.size(), ctx);
        consumed.insert(name);
    });
    if (!missing.empty())
        fail("checkpoint '", dir.string(), "' (", weights.description(), ") is missing ", missing.size(), " tensor",
             missing.size() == 1 ? "" : "s", " that config.json calls for: ", io_detail::name_list(missing));

    // Some writers keep a tied LM head in the file: accept it when it equals the embeddings.
    if (const auto* head = weights.find("lm_head.weight"); head && model.tied()) {
        const std::vector<std::int64_t> want{model.vocab_size(), model.d_model()};
        head->file->expect_shape(*head->info, want);
        if (!is_float_dtype(head->info->type))
            io_detail::bad_weight(*head->file, "lm_head.weight", "has dtype ", dtype_name(head->info->type));
        const auto stored = head->file->read<T>(*head->info);
        const auto embeddings = to_host<Backend>(model.embeddings(), ctx);
        if (std::memcmp(stored.data(), embeddings.data(), stored.size() * sizeof(T)) != 0)
            io_detail::bad_weight(*head->file, "lm_head.weight",
                                  "differs from backbone.embeddings.weight although tie_word_embeddings is true");
        consumed.insert("lm_head.weight");
    }

    auto unexpected = io_detail::unused_tensors(
        weights, consumed, [](std::string_view) { return false; }, options.allow_unexpected_tensors, dir,
        "load_options::allow_unexpected_tensors");
    traits::synchronize(ctx);

    auto [schedule, has_schedule] = io_detail::stored_schedule(cfg, model);
    return {std::move(model), std::move(schedule), has_schedule, std::move(cfg), std::move(unexpected)};
} catch (const std::filesystem::filesystem_error& e) {
    io_detail::rethrow_filesystem_error("cannot load the checkpoint", dir, e);
}

// A Hugging Face Mamba2ForCausalLM directory as a float32 model on the CPU.
inline loaded_checkpoint<float, cpu, mamba2_pattern> load_hf_mamba2(const std::filesystem::path& dir,
                                                                     const load_options& options = {}) {
    return load_checkpoint<float, cpu, mamba2_pattern>(dir, options);
}

struct save_options {
    // The dtype of the weights in model.safetensors; default T's own (F32 for float, F64 for
    // double, BF16 for bfloat16 storage), which loads back bit for bit.
    std::optional<dtype> weights_dtype;
    // More config.json fields (e.g. a loaded checkpoint's config.extra: token ids, ...); the model's
    // own fields override them.
    nlohmann::json extra_config = nlohmann::json::object();
};

namespace io_detail {

template <class T, class Backend, class Pattern>
void save_checkpoint(const language_model<T, Backend, Pattern>& model, const std::optional<transpoint_schedule>& schedule,
                     const std::filesystem::path& dir, const save_options& options,
                     const typename backend_traits<Backend>::context& ctx)
try {  // the edge at which std::filesystem errors are named, as in load_checkpoint

    static_assert(checkpoint_pattern<Pattern>::value,
                  "checkpoints hold mixer-only stacks: Pattern must be layer_pattern<transmamba_layer<Policies>>");
    using policies = typename checkpoint_pattern<Pattern>::policies;
    namespace fs = std::filesystem;
    const dtype weights_dtype = options.weights_dtype.value_or(dtype_of<T>());
    require(is_float_dtype(weights_dtype), "save_checkpoint: weights cannot be stored as ", dtype_name(weights_dtype));
    if (schedule) schedule->validate(model.num_transpoint_layers());
    require(options.extra_config.is_object(), "save_checkpoint: save_options::extra_config must be a JSON object");

    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail("save_checkpoint: cannot create the directory '", printable(dir.string(), 4096), "': ", ec.message());
    io_detail::require_directory("save_checkpoint: the checkpoint directory", dir);

    safetensors_writer writer;
    writer.set_metadata("format", "pt");
    model.for_each_parameter([&](const std::string& name, const auto& buf, const std::vector<index_t>& shape) {
        const auto host = to_host<Backend>(buf, ctx);
        writer.add(name, std::vector<std::int64_t>(shape.begin(), shape.end()), std::span<const T>(host), weights_dtype);
    });
    writer.write(dir / "model.safetensors");

    std::optional<transmamba_options> extension;
    if (schedule)
        extension = transmamba_options{*schedule,
                                       attention_spec::of<typename policies::attention>(model.config().backbone.mixer.d_state)};
    hf_mamba2_config cfg = hf_mamba2_config::from(model.config(), std::move(extension));
    cfg.extra = options.extra_config;
    cfg.extra["dtype"] = torch_dtype_name(weights_dtype);
    if (cfg.extra.contains("torch_dtype")) cfg.extra["torch_dtype"] = torch_dtype_name(weights_dtype);
    const std::string text = to_json_text(cfg);
    write_file_atomically(dir / "config.json", [&](file_sink& sink) { sink.write(text.data(), text.size()); });
} catch (const std::filesystem::filesystem_error& e) {
    rethrow_filesystem_error("save_checkpoint: cannot write the checkpoint", dir, e);
}

}  // namespace io_detail

// Writes DIR/model.safetensors and DIR/config.json with the TransPoint schedule (the "transmamba"
// object, with the model's attention variant). Creates DIR if needed.
template <class T, class Backend, class Pattern>
void save_checkpoint(const language_model<T, Backend, Pattern>& model, const transpoint_schedule& schedule,
                     const std::filesystem::path& dir, const save_options& options = {},
                     const typename backend_traits<Backend>::context& ctx = {}) {
    io_detail::save_checkpoint(model, std::optional<transpoint_schedule>(schedule), dir, options, ctx);
}

// Writes a plain Mamba2 checkpoint: no "transmamba" object.
template <class T, class Backend, class Pattern>
void save_checkpoint(const language_model<T, Backend, Pattern>& model, const std::filesystem::path& dir,
                     const save_options& options = {}, const typename backend_traits<Backend>::context& ctx = {}) {
    io_detail::save_checkpoint(model, std::optional<transpoint_schedule>(), dir, options, ctx);
}

}  // namespace transmamba
