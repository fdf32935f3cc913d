#pragma once
// Everything a training run is, in one value: what it trains (the model's config, its TransPoint
// schedule, the task), how (steps, batch, seed, the learning-rate schedule, AdamW's options, the
// clipping norm), and where it stands (the weights, both moments, the update count, the data
// stream's position). io/training_checkpoint.hpp saves and restores exactly this; train/trainer.hpp
// advances it.
#include <cstdint>
#include <utility>

#include "transmamba/backend/cpu.hpp"
#include "transmamba/block/random_init.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/model/language_model.hpp"
#include "transmamba/policy/transpoint_schedule.hpp"
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

    // A new run: weights from config.seed, zero moments, nothing drawn.
    static training_state fresh(const training_config& config) {
        config.validate();
        model_type model(config.model);
        randomize(model, config.seed);
        optimizer_type optimizer(config.adamw, named_parameters(model));
        return training_state{config, std::move(model), std::move(optimizer), 0, 0};
    }
};

}  // namespace transmamba
