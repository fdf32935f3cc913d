#pragma once
// The sizes of one TransMamba mixer (SPEC.md section 2), with Mamba2's names.
#include <limits>

#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

struct mixer_config {
    index_t d_model = 256;
    index_t expand = 2;
    index_t headdim = 64;      // p: value dim per head
    index_t d_state = 128;     // n: state size = query/key dim
    index_t ngroups = 1;       // g: heads share B and C in g groups
    index_t d_conv = 4;        // width of the causal depthwise conv on xBC
    index_t chunk_size = 256;  // SSD chunk length (and the converter's tile along the prefix)
    // Mamba2's time_step_limit: dt is clamped to [dt_min, dt_max] after the softplus.
    double dt_min = 0.0;
    double dt_max = std::numeric_limits<double>::infinity();
    double norm_eps = 1e-5;    // eps of the gated RMSNorm

    constexpr index_t d_inner() const { return expand * d_model; }
    constexpr index_t nheads() const { return d_inner() / headdim; }
    constexpr index_t heads_per_group() const { return nheads() / ngroups; }
    constexpr index_t conv_dim() const { return d_inner() + 2 * ngroups * d_state; }
    constexpr index_t d_in_proj() const { return 2 * d_inner() + 2 * ngroups * d_state + nheads(); }

    // Throws naming the first field that is out of range.
    void validate() const {
        require(d_model > 0, "mixer_config.d_model must be positive, got ", d_model);
        require(expand > 0, "mixer_config.expand must be positive, got ", expand);
        require(headdim > 0, "mixer_config.headdim must be positive, got ", headdim);
        require(d_state > 0, "mixer_config.d_state must be positive, got ", d_state);
        require(d_conv > 0, "mixer_config.d_conv must be positive, got ", d_conv);
        require(chunk_size > 0, "mixer_config.chunk_size must be positive, got ", chunk_size);
        require(d_inner() % headdim == 0, "mixer_config: d_inner = expand * d_model = ", d_inner(),
                " is not a multiple of headdim = ", headdim);
        require(ngroups > 0, "mixer_config.ngroups must be positive, got ", ngroups);
        require(nheads() % ngroups == 0, "mixer_config: ngroups = ", ngroups, " does not divide nheads = ", nheads());
        require(dt_min >= 0.0 && dt_min <= dt_max && dt_min < std::numeric_limits<double>::infinity(),
                "mixer_config: time-step limit [dt_min, dt_max] = [", dt_min, ", ", dt_max,
                "] is not an interval of non-negative numbers with a finite dt_min");
        require(norm_eps > 0.0 && norm_eps < 1.0, "mixer_config.norm_eps must be in (0, 1), got ", norm_eps);
    }
};

}  // namespace transmamba
