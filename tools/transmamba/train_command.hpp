#pragma once
// `transmamba train`: trains a model on a generated task or the bytes of a text file, on the CPU
// (docs/training.md, "transmamba train"). Writes a training checkpoint to --out (its model files
// load with run and generate), a progress line every --log-every steps, and with --metrics one JSON
// line per logged step; --resume continues the run saved in --out.
#include <transmamba/io/training_checkpoint.hpp>
#include <transmamba/train/trainer.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "output_paths.hpp"

namespace transmamba::cli {

struct train_args {
    std::filesystem::path out;
    bool resume = false;
    bool force = false;
    std::filesystem::path config;  // a config.json for the model (as init writes); else the flags below
    init_args model;               // d_model, layers, ..., the TransPoint flags, seed (init's flags and defaults)
    std::string task = "mqar";
    index_t seq_len = 64, vocab = 0 /* 0: the task's default */, pairs = 8, copy_tokens = 8;
    std::optional<index_t> queries;  // default: every pair
    std::filesystem::path text;
    index_t steps = 1000, batch = 16;
    std::optional<index_t> warmup;  // default: steps / 10
    double lr = 1e-3;
    std::optional<double> final_lr;  // default: lr / 10
    double weight_decay = 0.1, clip = 1.0, beta1 = 0.9, beta2 = 0.95;
    index_t log_every = 10, save_every = 100;
    std::optional<index_t> stop_at;  // save and stop after this step (--resume continues)
    std::filesystem::path metrics;
    bool progress = true;
};

// The run a fresh `train` describes: the model from --config or init's flags, the task, the optimizer.
inline training_config train_config(const train_args& a) {
    training_config c;
    if (a.task == "mqar") {
        const index_t vocab = a.vocab ? a.vocab : 64;
        c.task = mqar_task{vocab, a.seq_len, a.pairs, a.queries.value_or(a.pairs)};
    } else if (a.task == "selective-copying") {
        c.task = selective_copying_task{a.vocab ? a.vocab : 16, a.seq_len, a.copy_tokens};
    } else if (a.task == "bytes") {
        require(!a.text.empty(), "--task bytes needs --text FILE (the text to model)");
        require(a.vocab == 0 || a.vocab == 256, "--task bytes has a vocabulary of 256 bytes; --vocab ", a.vocab, " does not fit");
        c.task = byte_lm_task::open(a.text, a.seq_len);
    } else {
        fail("--task '", a.task, "' is not a task: mqar, selective-copying or bytes");
    }
    validate_task(c.task);
    if (!a.config.empty()) {
        const hf_mamba2_config h = read_hf_mamba2_config(a.config);
        validate_model_config(h, a.config.string());
        c.model = h.model_config();
        using attention = typename checkpoint_pattern<mamba2_pattern>::policies::attention;
        require(!h.transmamba || h.transmamba->attention == attention_spec::of<attention>(h.state_size), "--config '",
                a.config.string(), "' asks for the attention variant \"", h.transmamba ? h.transmamba->attention.name() : "",
                "\", but train runs the paper's (\"", attention_spec::of<attention>(h.state_size).name(), "\")");
        c.schedule = a.model.points.resolve(h.transmamba ? h.transmamba->schedule : transpoint_schedule::fixed(0),
                                            c.model.backbone.num_layers);
        require(c.model.vocab_size >= task_vocab_size(c.task), "--config '", a.config.string(), "' has vocab_size ",
                c.model.vocab_size, ", but --task ", a.task, " uses ", task_vocab_size(c.task), " token ids");
    } else {
        init_args m = a.model;
        m.vocab = task_vocab_size(c.task);
        m.out = a.out;
        std::tie(c.model, c.schedule) = init_config(m);
    }
    c.steps = a.steps;
    c.batch = a.batch;
    c.seed = a.model.seed;
    const index_t warmup = a.warmup.value_or(a.steps / 10);
    c.lr = cosine_schedule{a.lr, a.final_lr.value_or(a.lr / 10), warmup, a.steps};
    c.adamw = adamw_options{a.beta1, a.beta2, 1e-8, a.weight_decay};
    c.clip_norm = a.clip;
    c.validate();
    return c;
}

namespace cli_detail {

inline std::string duration_text(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    const auto s = static_cast<long long>(std::llround(seconds));
    char buf[32];
    if (s >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
    else std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
    return buf;
}

// The metrics file of a resumed run keeps the lines up to the checkpoint's step: the steps after
// it are taken again.
inline void truncate_metrics(const std::filesystem::path& file, std::int64_t step) {
    std::ifstream in(file);
    if (!in) return;
    std::vector<std::string> kept;
    for (std::string line; std::getline(in, line);) {
        const auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_discarded() && j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
            j["step"].get<std::int64_t>() <= step)
            kept.push_back(line);
    }
    in.close();
    std::string text;
    for (const auto& l : kept) text.append(l).append("\n");
    write_file_atomically(file, [&](file_sink& sink) { sink.write(text.data(), text.size()); });
}

}  // namespace cli_detail

// Returns 0 when the run is complete and saved.
inline int train(const train_args& a) {
    namespace fs = std::filesystem;
    require(a.log_every >= 1, "--log-every must be at least 1, got ", a.log_every);
    require(a.save_every >= 0, "--save-every must be >= 0, got ", a.save_every);
    std::optional<training_state<float>> loaded;
    if (a.resume) {
        loaded.emplace(load_training_checkpoint<float>(a.out));
    } else {
        const training_config config = train_config(a);
        check_checkpoint_output("--out", a.out, a.force);
        std::error_code ec;
        require(a.force || !fs::exists(a.out / training_state_file, ec), "--out '", a.out.string(), "' already holds a training run (",
                training_state_file, "): pass --resume to continue it or --force to replace it");
        loaded.emplace(training_state<float>::fresh(config));
    }
    if (!a.metrics.empty()) {
        std::vector<protected_file> kept{{a.out / training_state_file, "the training state in --out"},
                                         {a.out / "config.json", "a file of the --out checkpoint"},
                                         {a.out / "model.safetensors", "a file of the --out checkpoint"}};
        if (const auto* bytes = std::get_if<byte_lm_task>(&loaded->config.task))
            kept.push_back({bytes->path, "the text file the run models"});
        check_output_file("--metrics", a.metrics, kept);
    }
    trainer<float> run(std::move(*loaded));
    const training_config& c = run.state().config;

    std::ofstream metrics;
    if (!a.metrics.empty()) {
        if (a.resume) cli_detail::truncate_metrics(a.metrics, run.state().step);
        metrics.open(a.metrics, a.resume ? std::ios::app : std::ios::trunc);
        require(metrics.good(), "--metrics '", a.metrics.string(), "': cannot open the file for writing");
    }
    std::printf("%s %s: %lld layers, d_model %lld, vocab %lld, %lld parameters; task %s, L %lld, batch %lld, %lld steps%s\n",
                a.resume ? "resuming" : "training", a.out.string().c_str(), (long long)c.model.backbone.num_layers,
                (long long)c.model.backbone.mixer.d_model, (long long)c.model.vocab_size, (long long)c.model.parameter_count(),
                task_name(c.task).c_str(), (long long)task_length(c.task), (long long)c.batch, (long long)c.steps,
                a.resume ? (" from step " + std::to_string(run.state().step)).c_str() : "");
    std::fflush(stdout);

    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const std::int64_t first = run.state().step;
    // The progress line averages over the steps since the last one.
    double loss_sum = 0, correct_sum = 0, scored_sum = 0;
    index_t tokens_since = 0, steps_since = 0;
    auto since = start;
    const std::int64_t stop = std::min<std::int64_t>(a.stop_at.value_or(c.steps), c.steps);
    while (run.state().step < stop) {
        const auto before = clock::now();
        const step_report r = run.step();
        const auto now = clock::now();
        const double step_seconds = std::chrono::duration<double>(now - before).count();
        loss_sum += r.loss;
        correct_sum += r.accuracy * double(r.scored);
        scored_sum += double(r.scored);
        tokens_since += r.tokens;
        ++steps_since;
        if (metrics.is_open()) {
            const nlohmann::json line = {{"step", r.step},
                                         {"loss", r.loss},
                                         {"accuracy", r.accuracy},
                                         {"lr", r.lr},
                                         {"grad_norm", r.grad_norm},
                                         {"tokens_per_s", double(r.tokens) / std::max(step_seconds, 1e-9)}};
            metrics << line.dump() << '\n';
        }
        const bool last = r.step == stop;
        if (r.step % a.log_every == 0 || last) {
            const double window = std::chrono::duration<double>(now - since).count();
            const double elapsed = std::chrono::duration<double>(now - start).count();
            const double left = elapsed / double(r.step - first) * double(c.steps - r.step);
            if (a.progress)
                std::printf("step %lld/%lld  loss %.4f  accuracy %.3f  lr %.3g  %.0f tokens/s  %s left\n", (long long)r.step,
                            (long long)c.steps, loss_sum / double(steps_since), scored_sum ? correct_sum / scored_sum : 0.0, r.lr,
                            double(tokens_since) / std::max(window, 1e-9), cli_detail::duration_text(left).c_str());
            std::fflush(stdout);
            if (metrics.is_open()) metrics.flush();
            loss_sum = correct_sum = scored_sum = 0;
            tokens_since = steps_since = 0;
            since = now;
        }
        if (last || (a.save_every > 0 && r.step % a.save_every == 0)) {
            if (metrics.is_open()) metrics.flush();
            save_training_checkpoint(run.state(), a.out);
        }
    }
    if (run.done())
        std::printf("wrote %s: step %lld of %lld (training_state.safetensors, config.json, model.safetensors)\n",
                    a.out.string().c_str(), (long long)run.state().step, (long long)c.steps);
    else
        std::printf("stopped at step %lld of %lld; wrote %s (--resume continues the run)\n", (long long)run.state().step,
                    (long long)c.steps, a.out.string().c_str());
    return 0;
}

}  // namespace transmamba::cli
