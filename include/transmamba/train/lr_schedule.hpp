#pragma once
// The learning rate of every update: a linear warm-up to the peak, then a cosine decay to the floor
// (docs/training.md, "The optimizer"). Update s (0-based) of `total` runs at
//
//   s <  warmup:  peak * (s + 1) / warmup                       (the first update is not wasted at 0)
//   s >= warmup:  floor + (peak - floor) * (1 + cos(pi * q)) / 2,  q = (s + 1 - warmup) / (total - warmup)
//
// so the warm-up ends exactly at the peak and the last update runs exactly at the floor; updates past
// `total` stay at the floor. warmup = 0 starts at the peak; floor = peak is a constant rate.
#include <cmath>
#include <numbers>

#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

struct cosine_schedule {
    double peak = 1e-3;
    double floor = 1e-4;
    index_t warmup_steps = 0;
    index_t total_steps = 1;

    void validate() const {
        require(std::isfinite(peak) && peak > 0, "cosine_schedule: the peak learning rate must be positive and finite, got ", peak);
        require(std::isfinite(floor) && floor >= 0 && floor <= peak, "cosine_schedule: the final learning rate must be in [0, peak = ",
                peak, "], got ", floor);
        require(total_steps >= 1, "cosine_schedule: total_steps must be at least 1, got ", total_steps);
        require(warmup_steps >= 0 && warmup_steps <= total_steps, "cosine_schedule: warmup_steps must be in [0, total_steps = ",
                total_steps, "], got ", warmup_steps);
    }

    // The rate of update `step` (0-based).
    double at(index_t step) const {
        require(step >= 0, "cosine_schedule: update index ", step, " is negative");
        if (step < warmup_steps) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
        if (step + 1 >= total_steps) return total_steps == warmup_steps ? peak : floor;
        const double q = static_cast<double>(step + 1 - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
        return floor + (peak - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * q));
    }
};

}  // namespace transmamba
