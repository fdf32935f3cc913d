#pragma once
// The training loop, one update at a time (docs/training.md, "The loop"):
//
//   batch   = make_batch(task, seed, batches_drawn++)           tasks/task.hpp: a function of (seed, k)
//   loss    = forward + backward of the model on the batch      model/language_model_backward.hpp: the mean
//                                                                cross-entropy over the scored targets
//   N       = global_norm(grads);  c = min(1, clip / (N + 1e-6)) train/grad_clip.hpp
//   lr      = schedule.at(step)                                  train/lr_schedule.hpp
//   adamw.step(params, grads, lr, c);  ++step                   train/adamw.hpp
//
// Everything a step reads is in training_state, so a run saved after step k and resumed
// (io/training_checkpoint.hpp) takes exactly the steps the uninterrupted run takes; nothing is
// random but the data, and the kernels are deterministic (docs/training.md, "Deterministic"), so a
// seed gives the same run bit for bit on the CPU.
#include <cstdint>
#include <utility>
#include <vector>

#include "transmamba/core/error.hpp"
#include "transmamba/training.hpp"  // the CPU backward kernels and language_model_training
#include "transmamba/tasks/task.hpp"
#include "transmamba/train/grad_clip.hpp"
#include "transmamba/train/training_state.hpp"

namespace transmamba {

struct step_report {
    std::int64_t step = 0;  // updates done after this one (1 for the first)
    double loss = 0;        // mean cross-entropy over the batch's scored targets, before the update
    double accuracy = 0;    // fraction of scored targets whose argmax logit is the target
    double lr = 0;          // the learning rate of the update
    double grad_norm = 0;   // the global norm before clipping
    index_t tokens = 0;     // tokens in the batch (batch * L)
    index_t scored = 0;     // targets that carried a loss
};

template <class T = float, class Backend = cpu, class Pattern = mamba2_pattern>
class trainer {
public:
    using state_type = training_state<T, Backend, Pattern>;
    using training_type = language_model_training<T, Backend, Pattern>;
    using grads_type = model_grads<T, Backend, Pattern>;

    explicit trainer(state_type state)
        : state_(std::move(state)), training_(loss_options{ignore_id}), grads_(state_.model.config()) {}

    state_type& state() { return state_; }
    const state_type& state() const { return state_; }
    bool done() const { return state_.step >= state_.config.steps; }

    // One update. A step that throws (a non-finite loss or gradient) changes nothing, the data
    // position included.
    step_report step() {
        const training_config& c = state_.config;
        require(!done(), "training: the run is complete (", c.steps, " steps)");
        const token_batch batch = make_batch(c.task, c.seed, state_.batches_drawn, c.batch);
        const loss_stats measured =
            training_.forward_backward(state_.model, batch.id_view(), batch.target_view(), c.schedule, grads_);
        const auto grads = named_parameters<const T>(std::as_const(grads_));
        step_report r;
        r.loss = measured.loss;
        r.accuracy = double(measured.correct) / double(measured.counted);
        r.scored = measured.counted;
        r.tokens = batch.batch * batch.length;
        r.grad_norm = global_norm(grads);
        r.lr = c.lr.at(state_.step);
        state_.optimizer.step(named_parameters(state_.model), grads, r.lr, clip_scale(r.grad_norm, c.clip_norm));
        ++state_.batches_drawn;
        r.step = ++state_.step;
        return r;
    }

private:
    state_type state_;
    training_type training_;
    grads_type grads_;
};

}  // namespace transmamba
