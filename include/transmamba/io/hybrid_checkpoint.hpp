#pragma once
// Loads a layer-level hybrid checkpoint directory (Nemotron-H, Bamba, dense Granite 4.0 hybrid,
// Falcon-H1, whose muP multipliers are folded into the weights as they are read) as
// transformers 5.x saves it (config.json + model.safetensors or shards) into a language model of
// the hybrid pattern (block/hybrid_block.hpp). The checks are those of load_checkpoint
// (io/checkpoint.hpp): the config first (io/hf_hybrid_config.hpp), the files' headers, a parameter
// count against the files before anything is allocated, then every tensor for presence, shape,
// float dtype and finiteness, and tensors the model does not use.
//
// The Mamba2 layers take TransPoints like any TransMamba layer: the returned schedule is the
// config's "transmamba" object, or fixed P = 0 (the model as trained) without one.
#include <cmath>
#include <filesystem>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "transmamba/block/stack.hpp"
#include "transmamba/io/checkpoint.hpp"
#include "transmamba/io/hf_hybrid_config.hpp"
#include "transmamba/model/language_model.hpp"
#include "transmamba/policy/transpoint_schedule.hpp"

namespace transmamba {

namespace io_detail {
template <class T>
T from_double(double v) {
    if constexpr (std::is_same_v<T, double> || std::is_same_v<T, float>) return static_cast<T>(v);
    else return element_traits<T>::from_float(static_cast<float>(v));
}
}  // namespace io_detail

struct hybrid_load_options {
    bool allow_unexpected_tensors = false;  // as load_options
    bool allow_unknown_fields = false;      // as hybrid_config_options
    bool nemotron_dt_floor_at_time_step_min = true;  // as hybrid_config_options
};

template <class T, class Backend, class Policies = paper_policies>
struct loaded_hybrid_checkpoint {
    using model_type = language_model<T, Backend, layer_pattern<hybrid_layer<Policies>>>;
    model_type model;
    transpoint_schedule schedule;  // the config's, or fixed 0 (the model as trained)
    bool has_schedule = false;
    hf_hybrid_config config;
    std::vector<std::string> unexpected_tensors;
};

template <class T = float, class Backend = cpu, class Policies = paper_policies>
loaded_hybrid_checkpoint<T, Backend, Policies> load_hybrid_checkpoint(
    const std::filesystem::path& dir, const hybrid_load_options& options = {},
    const typename backend_traits<Backend>::context& ctx = {})
try {
    using traits = backend_traits<Backend>;
    using result = loaded_hybrid_checkpoint<T, Backend, Policies>;
    namespace fs = std::filesystem;
    io_detail::require_directory("checkpoint directory", dir);
    const fs::path config_path = dir / "config.json";
    require(!status_of(config_path).missing(), "checkpoint '", dir.string(), "' has no config.json");
    hf_hybrid_config cfg = read_hf_hybrid_config(config_path, hybrid_config_options{options.allow_unknown_fields, options.nemotron_dt_floor_at_time_step_min});
    if (cfg.transmamba) {
        const auto compiled = attention_spec::of<typename Policies::attention>(cfg.model.backbone.mixer.d_state);
        if (!(cfg.transmamba->attention == compiled))
            fail("config '", config_path.string(), "': field 'transmamba.attention' names another attention variant than the "
                 "one the model type runs (\"", compiled.name(), "\"): load it with the matching mixer_policies");
    }

    const checkpoint_weights weights(dir);
    const auto needed = cfg.parameter_count();
    const std::uint64_t held = weights.total_elements();
    if (!needed || *needed / 4 > held + (std::uint64_t(1) << 24))
        fail("config '", config_path.string(), "' describes ", needed ? std::to_string(*needed) : std::string("too many"),
             " parameters, but the weights (", weights.description(), ") hold only ", held,
             ": the config does not belong to these weights");
    // transformers names Nemotron-H's backbone "backbone." in its files; the others "model.".
    std::string prefix = "model.";
    if (cfg.architecture == hybrid_architecture::nemotron_h && !weights.find("model.embeddings.weight")) prefix = "backbone.";

    typename result::model_type model(cfg.model);
    std::set<std::string, std::less<>> consumed;
    std::vector<std::string> missing;
    model.for_each_parameter([&](const std::string& name, auto& buf, const std::vector<index_t>& shape) {
        const tensor_source src = cfg.source_of(name, prefix);
        const bool conv_bias = name.ends_with("mixer.conv1d.bias");
        const auto* e = weights.find(src.name);
        if (e == nullptr) {
            if (conv_bias && !cfg.use_conv_bias) {
                traits::fill(ctx, buf.data(), buf.size(), static_cast<T>(0.0f));
                return;
            }
            missing.push_back(src.name);
            return;
        }
        if (conv_bias && !cfg.use_conv_bias)
            io_detail::bad_weight(*e->file, src.name, "is present although config.json says the conv has no bias");
        const tensor_info& t = *e->info;
        std::vector<std::int64_t> want(shape.begin(), shape.end());
        if (src.rows > 0) want[0] = src.total_rows;
        e->file->expect_shape(t, want);
        if (!is_float_dtype(t.type))
            io_detail::bad_weight(*e->file, src.name, "has dtype ", dtype_name(t.type), "; weights must be F32, F16, BF16 or F64");
        std::vector<T> host;
        if (const auto scales = cfg.row_scales(name, shape[0]); !scales.empty()) {
            // Falcon-H1's multipliers, folded in double and rounded to T once (falcon_h1_multipliers).
            const auto stored = e->file->template read<double>(t);
            const std::size_t cols = stored.size() / scales.size();
            host.resize(stored.size());
            for (std::size_t i = 0; i < stored.size(); ++i) host[i] = io_detail::from_double<T>(stored[i] * scales[i / cols]);
        } else {
            host = e->file->template read<T>(t);
        }
        if (src.rows > 0)  // a block of rows of a fused tensor
            host = std::vector<T>(host.begin() + static_cast<std::ptrdiff_t>(src.row_begin * shape[1]),
                                  host.begin() + static_cast<std::ptrdiff_t>((src.row_begin + src.rows) * shape[1]));
        for (std::size_t i = 0; i < host.size(); ++i)
            if (!std::isfinite(to_double(host[i])))
                io_detail::bad_weight(*e->file, src.name, "holds a non-finite value (", to_double(host[i]), ") at flat index ", i);
        traits::copy_from_host(host.data(), buf.data(), host.size(), ctx);
        consumed.insert(src.name);
    });
    if (!missing.empty())
        fail("checkpoint '", dir.string(), "' (", weights.description(), ") is missing ", missing.size(), " tensor",
             missing.size() == 1 ? "" : "s", " that config.json (", architecture_name(cfg.architecture), ") calls for: ",
             io_detail::name_list(missing));

    if (const auto* head = weights.find("lm_head.weight"); head && model.tied()) {
        const std::vector<std::int64_t> want{model.vocab_size(), model.d_model()};
        head->file->expect_shape(*head->info, want);
        if (!is_float_dtype(head->info->type))
            io_detail::bad_weight(*head->file, "lm_head.weight", "has dtype ", dtype_name(head->info->type));
        const auto stored = head->file->template read<T>(*head->info);
        const auto embeddings = to_host<Backend>(model.embeddings(), ctx);
        if (std::memcmp(stored.data(), embeddings.data(), stored.size() * sizeof(T)) != 0)
            io_detail::bad_weight(*head->file, "lm_head.weight", "differs from the embeddings although tie_word_embeddings is true");
        consumed.insert("lm_head.weight");
    }

    // Nemotron-H's multi-token-prediction layers are not part of the model: transformers skips them too.
    const auto mtp = [&](std::string_view name) { return cfg.mtp_layers > 0 && name.starts_with("mtp."); };
    auto unexpected = io_detail::unused_tensors(weights, consumed, mtp, options.allow_unexpected_tensors, dir,
                                                "hybrid_load_options::allow_unexpected_tensors");
    traits::synchronize(ctx);

    auto [schedule, has_schedule] = io_detail::stored_schedule(cfg, model);
    return {std::move(model), std::move(schedule), has_schedule, std::move(cfg), std::move(unexpected)};
} catch (const std::filesystem::filesystem_error& e) {
    io_detail::rethrow_filesystem_error("cannot load the checkpoint", dir, e);
}

}  // namespace transmamba
