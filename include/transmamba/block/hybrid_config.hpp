#pragma once
// Which layer is which in a layer-level hybrid stack (block/hybrid_block.hpp): per layer, an
// optional token mixer (a Mamba2 mixer, or self-attention with Q/K/V of its own) and an optional
// MLP, each a pre-norm residual branch. The sizes the layers share sit here too.
#include <cmath>
#include <string>
#include <vector>

#include "transmamba/core/checked_size.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/error.hpp"

namespace transmamba {

// parallel: a Mamba2 mixer and self-attention both read the normed input, and their outputs are
// summed into one residual branch (Falcon-H1).
enum class hybrid_mixer { mamba2, attention, parallel, none };
constexpr bool has_mamba2(hybrid_mixer m) { return m == hybrid_mixer::mamba2 || m == hybrid_mixer::parallel; }
constexpr bool has_attention(hybrid_mixer m) { return m == hybrid_mixer::attention || m == hybrid_mixer::parallel; }
enum class hybrid_mlp {
    none,
    swiglu,  // down(silu(gate(h)) * up(h))   (Bamba, Granite)
    relu2,   // down(relu(up(h))^2)            (Nemotron-H)
};

inline const char* name_of(hybrid_mixer m) {
    switch (m) {
        case hybrid_mixer::mamba2: return "mamba2";
        case hybrid_mixer::attention: return "attention";
        case hybrid_mixer::parallel: return "mamba2 + attention";
        default: return "none";
    }
}

// u += m * mixer(rmsnorm(u) * norm.weight); then u += m * mlp(rmsnorm(u) * mlp_norm.weight).
// A parallel mixer is mamba2(h) + attention(h) on the same h = rmsnorm(u) * norm.weight.
struct hybrid_layer_spec {
    hybrid_mixer mixer = hybrid_mixer::mamba2;
    hybrid_mlp mlp = hybrid_mlp::none;
};

struct self_attention_config {
    index_t num_heads = 0;     // H (query heads); 0: the model has no attention layers
    index_t num_kv_heads = 0;  // KV, divides H
    index_t head_dim = 0;
    index_t rotary_dim = 0;    // channels per head turned by RoPE (even, <= head_dim); 0: no RoPE
    double rope_theta = 10000.0;
    double scale = 0.0;        // softmax scale; 0 means 1 / sqrt(head_dim)

    index_t q_width() const { return num_heads * head_dim; }
    index_t kv_width() const { return num_kv_heads * head_dim; }
    double softmax_scale() const { return scale > 0.0 ? scale : 1.0 / std::sqrt(static_cast<double>(head_dim)); }

    // Elements of q/k/v/o_proj.weight for a model of width d_model, checked for overflow.
    index_t parameter_count(index_t d_model) const {
        const index_t qo = checked_mul(2 * num_heads, checked_mul(head_dim, d_model, "self_attention: head_dim * d_model"),
                                       "self_attention: q_proj and o_proj elements");
        const index_t kv = checked_mul(2 * num_kv_heads, checked_mul(head_dim, d_model, "self_attention: head_dim * d_model"),
                                       "self_attention: k_proj and v_proj elements");
        return checked_add(qo, kv, "self_attention: parameter count");
    }

    void validate(index_t d_model) const {
        const auto in_range = [](index_t v, const char* field) {
            require(v > 0, "self_attention_config.", field, " must be positive, got ", v);
            require(v <= size_limits::dimension, "self_attention_config.", field, " = ", v, " exceeds the limit ",
                    size_limits::dimension);
        };
        in_range(num_heads, "num_heads");
        in_range(num_kv_heads, "num_kv_heads");
        in_range(head_dim, "head_dim");
        require(num_heads % num_kv_heads == 0, "self_attention_config: num_kv_heads = ", num_kv_heads,
                " does not divide num_heads = ", num_heads);
        require(rotary_dim >= 0 && rotary_dim <= head_dim && rotary_dim % 2 == 0, "self_attention_config.rotary_dim = ",
                rotary_dim, " must be even and in [0, head_dim = ", head_dim, "]");
        require(std::isfinite(rope_theta) && rope_theta > 1.0, "self_attention_config.rope_theta must be a finite number > 1, got ",
                rope_theta);
        require(std::isfinite(scale) && scale >= 0.0, "self_attention_config.scale must be finite and >= 0, got ", scale);
        (void)checked_mul(num_heads, head_dim, "self_attention: num_heads * head_dim");
        (void)parameter_count(d_model);
    }
};

struct hybrid_config {
    std::vector<hybrid_layer_spec> layers;  // one per layer; empty: the stack is not a hybrid
    self_attention_config attention;        // the attention layers' sizes (all alike)
    double residual_multiplier = 1.0;       // m above (Granite's residual_multiplier)

    bool enabled() const { return !layers.empty(); }
    index_t count(hybrid_mixer m) const {
        index_t n = 0;
        for (const auto& l : layers) n += l.mixer == m;
        return n;
    }
    // Layers that hold a Mamba2 mixer (they take TransPoints) / self-attention (they keep a KV
    // cache), parallel layers counted in both.
    index_t mamba2_layers() const {
        index_t n = 0;
        for (const auto& l : layers) n += has_mamba2(l.mixer);
        return n;
    }
    index_t attention_layers() const {
        index_t n = 0;
        for (const auto& l : layers) n += has_attention(l.mixer);
        return n;
    }
    bool has_mlp() const {
        for (const auto& l : layers)
            if (l.mlp != hybrid_mlp::none) return true;
        return false;
    }

    // Elements of layer i's parameters (its norms, its mixer, its MLP), checked for overflow.
    index_t layer_parameter_count(std::size_t i, const mixer_config& mixer, index_t d_ff) const {
        const index_t d = mixer.d_model;
        const auto& l = layers.at(i);
        index_t n = 0;
        if (l.mixer != hybrid_mixer::none) n = d;  // norm.weight
        if (has_mamba2(l.mixer)) n = checked_add(n, mixer.parameter_count(), "hybrid layer parameter count");
        if (has_attention(l.mixer)) n = checked_add(n, attention.parameter_count(d), "hybrid layer parameter count");
        if (l.mlp != hybrid_mlp::none) {
            const index_t mats = l.mlp == hybrid_mlp::swiglu ? 3 : 2;
            const index_t mlp = checked_mul(mats * d, d_ff, "hybrid layer: MLP weight elements");
            n = checked_add(n, checked_add(mlp, d, "hybrid layer: MLP parameter count"), "hybrid layer parameter count");
        }
        return n;
    }

    void validate(const mixer_config& mixer, index_t d_ff) const {
        require(std::isfinite(residual_multiplier) && residual_multiplier > 0.0,
                "hybrid_config.residual_multiplier must be a finite positive number, got ", residual_multiplier);
        for (std::size_t i = 0; i < layers.size(); ++i) {
            const auto& l = layers[i];
            require(l.mixer != hybrid_mixer::none || l.mlp != hybrid_mlp::none, "hybrid_config: layer ", i,
                    " has neither a mixer nor an MLP");
            require(l.mlp == hybrid_mlp::none || d_ff > 0, "hybrid_config: layer ", i,
                    " has an MLP, but model_config.d_ff is ", d_ff);
        }
        if (attention_layers() > 0) attention.validate(mixer.d_model);
        index_t total = 0;
        for (std::size_t i = 0; i < layers.size(); ++i)
            total = checked_add(total, layer_parameter_count(i, mixer, d_ff), "hybrid_config: parameter count");
    }
};

}  // namespace transmamba
