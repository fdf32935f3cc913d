#pragma once
// The sizes of one TransMamba mixer (SPEC.md section 2), with Mamba2's names.
#include <limits>

#include "transmamba/core/checked_size.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

// The largest sizes a model may have, one set for every way a config is made (built in code, by the
// CLI's init, read from config.json): whatever one of them accepts, the others load. Far above any
// real model; products of them can still overflow, and validate() checks those separately.
struct size_limits {
    static constexpr index_t dimension = index_t(1) << 24;  // d_model, headdim, d_state, ngroups, nheads, chunk_size, d_ff
    static constexpr index_t expand = 1024;
    static constexpr index_t conv_width = 1024;             // d_conv
    static constexpr index_t layers = index_t(1) << 16;     // num_layers
    static constexpr index_t vocab = index_t(1) << 31;      // vocab_size
};

// Where the gated RMSNorm sits on the SSM output y, with gate = silu(z) (layer-level hybrids differ
// here; Falcon-H1's mamba_rms_norm / mamba_norm_before_gate choose):
//   after_gate:  rmsnorm_g(y * gate) * w      Mamba2, mamba_ssm (the default)
//   before_gate: rmsnorm_g(y) * w * gate
//   none:        y * gate                     no norm, no norm.weight parameter
// The forward kernels (CPU and CUDA) take all three; the backward pass has after_gate only.
enum class gated_norm { after_gate, before_gate, none };

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
    gated_norm norm_placement = gated_norm::after_gate;
    // The SSM width when it is not a multiple of d_model (Falcon-H1's mamba_d_ssm, 1.5 x hidden_size
    // in the released models); 0: expand * d_model.
    index_t inner_width = 0;

    constexpr index_t d_inner() const { return inner_width > 0 ? inner_width : expand * d_model; }
    constexpr index_t nheads() const { return d_inner() / headdim; }
    constexpr index_t heads_per_group() const { return nheads() / ngroups; }
    constexpr index_t conv_dim() const { return d_inner() + 2 * ngroups * d_state; }
    constexpr index_t d_in_proj() const { return 2 * d_inner() + 2 * ngroups * d_state + nheads(); }

    // Elements of the mixer's parameters (SPEC.md section 2), checked for overflow; for a config
    // whose fields are within size_limits (validate() checks those first).
    index_t parameter_count() const {
        index_t n = checked_mul(d_in_proj(), d_model, "mixer_config: in_proj.weight elements d_in_proj * d_model");
        n = checked_add(n, checked_mul(conv_dim(), d_conv + 1, "mixer_config: conv1d elements conv_dim * (d_conv + 1)"),
                        "mixer_config: parameter count");
        n = checked_add(n, checked_mul(d_model, d_inner(), "mixer_config: out_proj.weight elements d_model * d_inner"),
                        "mixer_config: parameter count");
        const index_t norm = norm_placement == gated_norm::none ? 0 : d_inner();
        return checked_add(n, 3 * nheads() + norm, "mixer_config: parameter count");
    }

    // Throws naming the first field that is out of range, or the derived size that overflows.
    void validate() const {
        const auto in_range = [](index_t v, index_t most, const char* field) {
            require(v > 0, "mixer_config.", field, " must be positive, got ", v);
            require(v <= most, "mixer_config.", field, " = ", v, " exceeds the limit ", most);
        };
        in_range(d_model, size_limits::dimension, "d_model");
        in_range(expand, size_limits::expand, "expand");
        in_range(headdim, size_limits::dimension, "headdim");
        in_range(d_state, size_limits::dimension, "d_state");
        in_range(d_conv, size_limits::conv_width, "d_conv");
        in_range(chunk_size, size_limits::dimension, "chunk_size");
        in_range(ngroups, size_limits::dimension, "ngroups");
        // Every derived size, in the order they build on each other (the fields' limits keep the
        // first few in range; g * n and everything after it can overflow).
        require(inner_width >= 0 && inner_width <= size_limits::dimension, "mixer_config.inner_width = ", inner_width,
                " must be in [0, ", size_limits::dimension, "] (0: expand * d_model)");
        const index_t inner =
            inner_width > 0 ? inner_width : checked_mul(expand, d_model, "mixer_config: d_inner = expand * d_model");
        require(inner % headdim == 0, "mixer_config: d_inner = ", inner, inner_width > 0 ? " (inner_width)" : " (expand * d_model)",
                " is not a multiple of headdim = ", headdim);
        require(inner / headdim <= size_limits::dimension, "mixer_config: nheads = d_inner / headdim = ", inner / headdim,
                " exceeds the limit ", size_limits::dimension);
        require(nheads() % ngroups == 0, "mixer_config: ngroups = ", ngroups, " does not divide nheads = ", nheads());
        const index_t gn2 = checked_mul(2 * ngroups, d_state, "mixer_config: B and C channels 2 * ngroups * d_state");
        const index_t conv = checked_add(inner, gn2, "mixer_config: conv_dim = d_inner + 2 * ngroups * d_state");
        const index_t in_proj = checked_add(checked_add(inner, conv, "mixer_config: d_in_proj"), nheads(),
                                            "mixer_config: d_in_proj = 2 * d_inner + 2 * ngroups * d_state + nheads");
        (void)checked_mul(in_proj, d_conv, "mixer_config: decoding conv window d_conv * d_in_proj");
        (void)checked_mul(inner, d_state, "mixer_config: SSM state elements nheads * headdim * d_state");
        (void)checked_mul(chunk_size, d_state, "mixer_config: converter tile chunk_size * d_state");
        (void)parameter_count();
        require(dt_min >= 0.0 && dt_min <= dt_max && dt_min < std::numeric_limits<double>::infinity(),
                "mixer_config: time-step limit [dt_min, dt_max] = [", dt_min, ", ", dt_max,
                "] is not an interval of non-negative numbers with a finite dt_min");
        require(norm_eps > 0.0 && norm_eps < 1.0, "mixer_config.norm_eps must be in (0, 1), got ", norm_eps);
    }
};

}  // namespace transmamba
