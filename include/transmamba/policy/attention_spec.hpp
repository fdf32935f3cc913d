#pragma once
// An attention variant (policy/attention.hpp) described as data, so that a checkpoint can record
// which variant its weights were trained with and a loader can check it against the variant the
// model type was compiled with. The named variants are those of policy/attention.hpp.
#include <cmath>
#include <optional>
#include <string>
#include <string_view>

#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

struct attention_spec {
    bool gate_by_z = false;     // attention tokens gated by silu(z)
    bool skip_D = true;         // D * x added on attention tokens
    bool rope = false;          // RoPE on C and B in attention mode
    double rope_theta = 10000.0;
    double scale = 0.0;         // softmax scale; 0 means 1/sqrt(d_state)

    // The spec of a compile-time variant (an attention_policy of policy/attention.hpp), for a model
    // with state size d_state. Not constrained by the concept, so that this header does not include
    // policy/attention.hpp: the config parser (io/hf_config.hpp) holds an attention_spec and must
    // build with clang 14 for its fuzzer, and clang 14 rejects that header's double template
    // parameters. Every caller passes a mixer's attention policy, which the mixer checks.
    template <class A>
    static attention_spec of(index_t d_state) {
        attention_spec s;
        s.gate_by_z = A::gate_by_z;
        s.skip_D = A::skip_D;
        s.rope = A::position::rotary;
        if constexpr (A::position::rotary) s.rope_theta = A::position::theta;
        const double v = A::scale::value(d_state), standard = 1.0 / std::sqrt(static_cast<double>(d_state));
        s.scale = v == standard ? 0.0 : v;
        return s;
    }

    // "paper", "z_gated", "no_skip", "rope" (as in policy/attention.hpp), or nothing.
    static std::optional<attention_spec> named(std::string_view name) {
        attention_spec s;
        if (name == "paper") return s;
        if (name == "z_gated") {
            s.gate_by_z = true;
            return s;
        }
        if (name == "no_skip") {
            s.skip_D = false;
            return s;
        }
        if (name == "rope") {
            s.rope = true;
            return s;
        }
        return std::nullopt;
    }

    // The variant's name, or "" when it is none of the named ones.
    std::string name() const {
        for (const char* n : {"paper", "z_gated", "no_skip", "rope"})
            if (*named(n) == *this) return n;
        return "";
    }

    bool operator==(const attention_spec& o) const {
        return gate_by_z == o.gate_by_z && skip_D == o.skip_D && rope == o.rope && (!rope || rope_theta == o.rope_theta) &&
               scale == o.scale;
    }
};

}  // namespace transmamba
