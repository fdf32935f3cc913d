#pragma once
// A training run on disk (docs/training.md, "Training checkpoints"):
//
//   DIR/training_state.safetensors   everything to resume: the weights under their checkpoint names
//                                    (T's dtype), "optimizer.exp_avg.<name>" and
//                                    "optimizer.exp_avg_sq.<name>" (the moments' dtype), and in the
//                                    metadata the run's config and position (below)
//   DIR/config.json                  the model, exactly as save_checkpoint writes it (io/checkpoint.hpp),
//   DIR/model.safetensors            so `transmamba run` / `generate` / load_checkpoint read DIR as is
//
// Metadata of training_state.safetensors: "transmamba.training" (JSON: task, steps, batch, seed,
// learning-rate schedule, AdamW's options, clipping norm), "transmamba.model_config" (the
// config.json text of the model and its TransPoint schedule), "step", "batches_drawn".
//
// A kill mid-save loses nothing: training_state.safetensors is written atomically (a temporary file,
// fsync, rename; io/atomic_file.hpp), so it is always the old state or the new one, whole. It is
// written first and is the only file a resume reads; the model files are written after it, each
// atomically too, so a kill between them leaves the previous step's model files, whole and
// loadable, next to the new state (the next save brings them level).
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "transmamba/transmamba.hpp"  // the CPU backend: the optimizer state lives in host memory
#include "transmamba/core/error.hpp"
#include "transmamba/io/checkpoint.hpp"
#include "transmamba/io/hf_config.hpp"
#include "transmamba/io/hf_config_model.hpp"
#include "transmamba/io/safetensors.hpp"
#include "transmamba/train/training_state.hpp"

namespace transmamba {

inline constexpr std::string_view training_state_file = "training_state.safetensors";

namespace io_detail {

inline nlohmann::json task_to_json(const training_task& task) {
    using json = nlohmann::json;
    return std::visit(
        [](const auto& t) -> json {
            using Task = std::remove_cvref_t<decltype(t)>;
            json j = {{"name", t.name}};
            if constexpr (std::is_same_v<Task, mqar_task>) {
                j.update({{"vocab", t.vocab}, {"length", t.length}, {"pairs", t.pairs}, {"queries", t.queries}});
            } else if constexpr (std::is_same_v<Task, selective_copying_task>) {
                j.update({{"vocab", t.vocab}, {"length", t.length}, {"tokens", t.tokens}});
            } else {
                // Absolute, so that a resume from another directory reads the same file.
                std::error_code ec;
                const auto path = std::filesystem::absolute(t.path, ec);
                j.update({{"path", (ec ? t.path : path).string()}, {"length", t.length}, {"size", t.size()}, {"fnv1a", t.hash()}});
            }
            return j;
        },
        task);
}

// The task of a saved run; a text file is read again and must be the one the run started with.
inline training_task task_from_json(const nlohmann::json& j, const std::string& source) {
    const std::string name = j.at("name").get<std::string>();
    if (name == mqar_task::name)
        return mqar_task{j.at("vocab").get<index_t>(), j.at("length").get<index_t>(), j.at("pairs").get<index_t>(),
                         j.at("queries").get<index_t>()};
    if (name == selective_copying_task::name)
        return selective_copying_task{j.at("vocab").get<index_t>(), j.at("length").get<index_t>(), j.at("tokens").get<index_t>()};
    if (name == byte_lm_task::name) {
        const std::filesystem::path path = j.at("path").get<std::string>();
        auto task = byte_lm_task::open(path, j.at("length").get<index_t>());
        require(task.size() == j.at("size").get<std::uint64_t>() && task.hash() == j.at("fnv1a").get<std::uint64_t>(), source,
                ": the text file '", path.string(), "' the run trained on has changed (", task.size(), " bytes now, ",
                j.at("size").get<std::uint64_t>(), " then, or other bytes): resuming would train on other data");
        return task;
    }
    fail(source, ": unknown task '", printable(name), "'");
}

inline nlohmann::json training_config_to_json(const training_config& c) {
    return {{"version", 1},
            {"task", task_to_json(c.task)},
            {"steps", c.steps},
            {"batch", c.batch},
            {"seed", c.seed},
            {"lr",
             {{"peak", c.lr.peak}, {"floor", c.lr.floor}, {"warmup_steps", c.lr.warmup_steps}, {"total_steps", c.lr.total_steps}}},
            {"adamw",
             {{"beta1", c.adamw.beta1}, {"beta2", c.adamw.beta2}, {"eps", c.adamw.eps}, {"weight_decay", c.adamw.weight_decay}}},
            {"clip_norm", c.clip_norm}};
}

template <class Pattern>
std::string model_config_text(const training_config& c) {
    using policies = typename checkpoint_pattern<Pattern>::policies;
    return to_json_text(hf_mamba2_config::from(
        c.model, transmamba_options{c.schedule, attention_spec::of<typename policies::attention>(c.model.backbone.mixer.d_state)}));
}

inline std::string metadata_of(const safetensors_view& file, const std::string& key) {
    const auto it = file.metadata().find(key);
    if (it == file.metadata().end()) fail("training checkpoint '", file.source(), "' has no metadata '", key, "'");
    return it->second;
}

inline std::uint64_t unsigned_metadata(const safetensors_view& file, const std::string& key) {
    const std::string text = metadata_of(file, key);
    std::size_t used = 0;
    std::uint64_t v = 0;
    try {
        v = std::stoull(text, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    require(used == text.size() && !text.empty() && text[0] != '-', "training checkpoint '", file.source(), "': metadata '", key,
            "' = '", printable(text), "' is not a non-negative integer");
    return v;
}

}  // namespace io_detail

// Writes DIR/training_state.safetensors, then DIR/config.json and DIR/model.safetensors (module
// comment). Creates DIR if needed.
template <class T, class Backend, class Pattern>
void save_training_checkpoint(const training_state<T, Backend, Pattern>& state, const std::filesystem::path& dir) {
    using S = typename training_state<T, Backend, Pattern>::optimizer_type::state_type;
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail("save_training_checkpoint: cannot create the directory '", printable(dir.string(), 4096), "': ", ec.message());
    io_detail::require_directory("save_training_checkpoint: the checkpoint directory", dir);

    safetensors_writer writer;
    writer.set_metadata("format", "pt");
    writer.set_metadata("transmamba.training", io_detail::training_config_to_json(state.config).dump());
    writer.set_metadata("transmamba.model_config", io_detail::model_config_text<Pattern>(state.config));
    writer.set_metadata("step", std::to_string(state.step));
    writer.set_metadata("batches_drawn", std::to_string(state.batches_drawn));
    std::deque<std::vector<T>> hosts;  // kept until the write: add_view does not copy
    state.model.for_each_parameter([&](const std::string& name, const auto& buf, const std::vector<index_t>& shape) {
        hosts.push_back(to_host<Backend>(buf));
        writer.add_view(name, std::vector<std::int64_t>(shape.begin(), shape.end()), std::span<const T>(hosts.back()));
    });
    require(state.optimizer.steps() == state.step, "save_training_checkpoint: the optimizer took ", state.optimizer.steps(),
            " updates, the run says ", state.step);
    for (const auto& s : state.optimizer.slots()) {
        const std::vector<std::int64_t> shape(s.shape.begin(), s.shape.end());
        writer.add_view("optimizer.exp_avg." + s.name, shape, std::span<const S>(s.exp_avg.span()));
        writer.add_view("optimizer.exp_avg_sq." + s.name, shape, std::span<const S>(s.exp_avg_sq.span()));
    }
    writer.write(dir / training_state_file);
    save_checkpoint(state.model, state.config.schedule, dir);
}

// Reads DIR/training_state.safetensors back into the state it was saved from, bit for bit.
template <class T = float, class Backend = cpu, class Pattern = mamba2_pattern>
training_state<T, Backend, Pattern> load_training_checkpoint(const std::filesystem::path& dir)
try {
    using state_type = training_state<T, Backend, Pattern>;
    using S = typename state_type::optimizer_type::state_type;
    using traits = backend_traits<Backend>;
    io_detail::require_directory("training checkpoint directory", dir);
    const std::filesystem::path path = dir / training_state_file;
    require(!status_of(path).missing(), "'", dir.string(), "' holds no training run: it has no ", training_state_file,
            " (a model checkpoint alone cannot be resumed: it lacks the optimizer's state)");
    const safetensors_file file(path);
    const std::string source = file.source();

    training_config config;
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(io_detail::metadata_of(file, "transmamba.training"));
        config.task = io_detail::task_from_json(j.at("task"), source);
        config.steps = j.at("steps").get<index_t>();
        config.batch = j.at("batch").get<index_t>();
        config.seed = j.at("seed").get<std::uint64_t>();
        const auto& lr = j.at("lr");
        config.lr = {lr.at("peak").get<double>(), lr.at("floor").get<double>(), lr.at("warmup_steps").get<index_t>(),
                     lr.at("total_steps").get<index_t>()};
        const auto& a = j.at("adamw");
        config.adamw = {a.at("beta1").get<double>(), a.at("beta2").get<double>(), a.at("eps").get<double>(),
                        a.at("weight_decay").get<double>()};
        config.clip_norm = j.at("clip_norm").get<double>();
    } catch (const nlohmann::json::exception& e) {
        fail("training checkpoint '", source, "': metadata 'transmamba.training' is not a training config: ", printable(e.what()));
    }
    const hf_mamba2_config model_cfg =
        parse_hf_mamba2_config(io_detail::metadata_of(file, "transmamba.model_config"), source + " (transmamba.model_config)");
    validate_model_config(model_cfg, source);
    config.model = model_cfg.model_config();
    require(model_cfg.transmamba.has_value(), "training checkpoint '", source, "': the model config has no TransPoint schedule");
    config.schedule = model_cfg.transmamba->schedule;
    config.validate();

    state_type state{config, typename state_type::model_type(config.model),
                     typename state_type::optimizer_type(config.adamw, std::vector<named_span<const T>>{}), 0, 0};
    std::set<std::string, std::less<>> consumed;
    const auto read_tensor = [&](const std::string& name, const std::vector<index_t>& shape, auto dst) {
        const tensor_info* t = file.find(name);
        require(t != nullptr, "training checkpoint '", source, "' has no tensor '", name, "'");
        file.expect_shape(*t, std::vector<std::int64_t>(shape.begin(), shape.end()));
        using E = typename decltype(dst)::value_type;
        require(t->type == dtype_of<E>(), "training checkpoint '", source, "', tensor '", name, "': dtype ", dtype_name(t->type),
                ", expected ", dtype_name(dtype_of<E>()), " (resume with the storage type the run was saved with)");
        file.read_into(*t, dst);
        consumed.insert(name);
    };
    state.model.for_each_parameter([&](const std::string& name, auto& buf, const std::vector<index_t>& shape) {
        std::vector<T> host(buf.size());
        read_tensor(name, shape, std::span<T>(host));
        traits::copy_from_host(host.data(), buf.data(), host.size(), {});
    });
    traits::synchronize({});
    state.optimizer = typename state_type::optimizer_type(config.adamw, named_parameters(state.model));
    for (auto& s : state.optimizer.slots()) {
        read_tensor("optimizer.exp_avg." + s.name, s.shape, std::span<S>(s.exp_avg.span()));
        read_tensor("optimizer.exp_avg_sq." + s.name, s.shape, std::span<S>(s.exp_avg_sq.span()));
    }
    for (const auto& t : file.tensors())
        require(consumed.contains(t.name), "training checkpoint '", source, "' holds tensor '", printable(t.name),
                "', which the run does not have");
    state.step = static_cast<std::int64_t>(io_detail::unsigned_metadata(file, "step"));
    state.batches_drawn = io_detail::unsigned_metadata(file, "batches_drawn");
    require(state.step <= config.steps, "training checkpoint '", source, "': step ", state.step, " is past the run's ", config.steps,
            " steps");
    state.optimizer.set_steps(state.step);
    return state;
} catch (const std::filesystem::filesystem_error& e) {
    io_detail::rethrow_filesystem_error("cannot load the training checkpoint", dir, e);
}

}  // namespace transmamba
