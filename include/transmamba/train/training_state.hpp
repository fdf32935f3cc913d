#pragma once
// Everything a training run is, in one value: what it trains (the model's config, its TransPoint
// schedule, the task), how (steps, batch, seed, the learning-rate schedule, AdamW's options, the
// clipping norm), and where it stands (the weights, both moments, the update count, the data
// stream's position). io/training_checkpoint.hpp saves and restores exactly this; train/trainer.hpp
// advances it.
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "transmamba/transmamba.hpp"  // the CPU backend: the loop runs on host memory
#include "transmamba/block/random_init.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/model/language_model.hpp"
#include "transmamba/policy/transpoint_schedule.hpp"
#include "transmamba/tasks/stream_rng.hpp"
#include "transmamba/tasks/task.hpp"
#include "transmamba/train/adamw.hpp"
#include "transmamba/train/lr_schedule.hpp"
#include "transmamba/train/named_parameters.hpp"

namespace transmamba {

struct training_config {
    language_model_config model;
    transpoint_schedule schedule;  // the TransPoints of the training forward passes
    training_task task = mqar_task{};
    index_t steps = 1000;   // updates of the whole run
    index_t batch = 16;     // sequences per update
    std::uint64_t seed = 1; // the initial weights (block/random_init.hpp) and the data stream
    cosine_schedule lr{1e-3, 1e-4, 100, 1000};  // total_steps must equal steps
    adamw_options adamw;
    double clip_norm = 1.0;  // 0: no clipping

    void validate() const {
        model.validate();
        validate_task(task);
        require(task_vocab_size(task) <= model.vocab_size, "training: the task '", task_name(task), "' uses ",
                task_vocab_size(task), " token ids, but the model's vocabulary has ", model.vocab_size);
        require(steps >= 1, "training: steps must be at least 1, got ", steps);
        require(batch >= 1, "training: the batch must hold at least one sequence, got ", batch);
        lr.validate();
        require(lr.total_steps == steps, "training: the learning-rate schedule spans ", lr.total_steps,
                " updates, the run has ", steps);
        adamw.validate();
        require(std::isfinite(clip_norm) && clip_norm >= 0, "training: the clipping norm must be finite and >= 0, got ",
                clip_norm);
        schedule.validate(model.backbone.num_layers);
    }
};

// The initial weights of a run: block/random_init.hpp's ranges (projections and the conv as PyTorch
// initialises Linear / Conv1d, U(-1, 1) / sqrt(fan_in); dt and A as Mamba2 initialises them), except
// what Mamba2's _init_weights sets for training from scratch: the embeddings (and an untied LM head)
// ~ N(0, 0.02^2), so that the first logits are small and the first loss is about log(vocab) (with
// U(-1, 1) embeddings a d_model-64 model starts near 20 nats); the norms' weights and D at 1. The
// normal draws are Box-Muller over tasks/stream_rng.hpp, the same with every standard library.
template <class Model>
void initialize_for_training(Model& model, std::uint64_t seed) {
    randomize(model, seed);
    stream_rng rng(seed, ~std::uint64_t(0));
    const auto unit = [&] { return (double(rng.next() >> 11) + 0.5) * 0x1p-53; };  // in (0, 1)
    model.for_each_parameter([&](const std::string& name, auto& buf, const std::vector<index_t>&) {
        using E = std::remove_reference_t<decltype(*buf.data())>;
        const bool table = train_detail::has_leaf(name, "embeddings.weight") || name == "lm_head.weight";
        const bool one = train_detail::has_leaf(name, "norm.weight") || train_detail::has_leaf(name, "norm_f.weight") ||
                         train_detail::has_leaf(name, "D");
        if (!table && !one) return;
        std::vector<E> host(buf.size());
        for (auto& v : host)
            v = one ? E(1) : E(0.02 * std::sqrt(-2.0 * std::log(unit())) * std::cos(2.0 * std::numbers::pi * unit()));
        backend_traits<typename Model::backend>::copy_from_host(host.data(), buf.data(), host.size(), {});
    });
    backend_traits<typename Model::backend>::synchronize({});
}

template <class T = float, class Backend = cpu, class Pattern = mamba2_pattern>
struct training_state {
    using value_type = T;
    using model_type = language_model<T, Backend, Pattern>;
    using optimizer_type = transmamba::adamw<compute_t<T>>;

    training_config config;
    model_type model;
    optimizer_type optimizer;
    std::int64_t step = 0;            // updates done
    std::uint64_t batches_drawn = 0;  // the data stream's position; its seed is config.seed

    // A new run: weights from config.seed (initialize_for_training), zero moments, nothing drawn.
    static training_state fresh(const training_config& config) {
        config.validate();
        model_type model(config.model);
        initialize_for_training(model, config.seed);
        optimizer_type optimizer(config.adamw, named_parameters(model));
        return training_state{config, std::move(model), std::move(optimizer), 0, 0};
    }
};

}  // namespace transmamba
