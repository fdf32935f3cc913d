#pragma once
// TransPoint policies (SPEC.md section 6): map (layer index, sequence length) to P, the number of
// leading tokens that a layer mixes by attention. A policy may return more than the sequence
// length, which means "all attention" (P = L); resolve_transpoint() applies that rule and rejects
// negative values, so every policy is read through it.
#include <algorithm>
#include <concepts>
#include <initializer_list>
#include <span>
#include <string_view>
#include <vector>

#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

template <class P>
concept transpoint_policy = requires(const P& p, index_t layer, index_t seqlen) {
    { p(layer, seqlen) } -> std::convertible_to<index_t>;
};

// The same P in every layer.
struct fixed_transpoint {
    index_t value = 0;
    constexpr index_t operator()(index_t, index_t) const { return value; }
};

// P = L: every layer is a Transformer layer.
struct all_attention {
    constexpr index_t operator()(index_t, index_t seqlen) const { return seqlen; }
};

// P = 0: every layer is a Mamba2 layer.
struct all_ssm {
    constexpr index_t operator()(index_t, index_t) const { return 0; }
};

// P = floor(L * numerator / denominator), e.g. {1, 4} for a quarter of the sequence.
struct fraction_of_length {
    index_t numerator = 1;
    index_t denominator = 2;
    index_t operator()(index_t, index_t seqlen) const {
        require(denominator > 0 && numerator >= 0, "fraction_of_length ", numerator, "/", denominator,
                " is not a non-negative fraction");
        return seqlen * numerator / denominator;
    }
};

// One P per layer, in layer order; asking for a layer past the end is an error.
struct per_layer_transpoints {
    std::vector<index_t> values;
    per_layer_transpoints() = default;
    per_layer_transpoints(std::initializer_list<index_t> v) : values(v) {}
    explicit per_layer_transpoints(std::vector<index_t> v) : values(std::move(v)) {}
    index_t operator()(index_t layer, index_t) const {
        require(layer >= 0 && layer < static_cast<index_t>(values.size()), "per_layer_transpoints has ",
                values.size(), " entries, layer ", layer, " was asked for");
        return values[static_cast<std::size_t>(layer)];
    }
};

// Layer i takes table[i mod len]: the paper's schedules.
struct cyclic_transpoints {
    std::vector<index_t> table;
    cyclic_transpoints() = default;
    cyclic_transpoints(std::initializer_list<index_t> v) : table(v) {}
    explicit cyclic_transpoints(std::vector<index_t> v) : table(std::move(v)) {}
    index_t operator()(index_t layer, index_t) const {
        require(!table.empty(), "cyclic_transpoints: the table is empty");
        require(layer >= 0, "cyclic_transpoints: negative layer index ", layer);
        return table[static_cast<std::size_t>(layer % static_cast<index_t>(table.size()))];
    }
};

// The schedules the paper compares for training length 8192 (its V1..V9; V9 is its final choice).
inline cyclic_transpoints paper_schedule(std::string_view name) {
    if (name == "V1") return {2048};
    if (name == "V2") return {4096};
    if (name == "V3") return {6144};
    if (name == "V4") return {3072, 4096, 5120};
    if (name == "V5") return {2048, 3072, 4096};
    if (name == "V6") return {512, 1024, 2048};
    if (name == "V7") return {2048, 4096, 6144};
    if (name == "V8") return {0, 1024, 2048, 6144, 8192};
    if (name == "V9") return {0, 128, 256, 512, 1024, 2048, 4096, 8192};
    fail("unknown paper schedule '", name, "': expected one of V1 .. V9");
}

// The P a layer runs at: the policy's value, P > L read as L, negative rejected.
template <transpoint_policy Policy>
index_t resolve_transpoint(const Policy& policy, index_t layer, index_t seqlen) {
    const index_t p = static_cast<index_t>(policy(layer, seqlen));
    require(p >= 0, "TransPoint policy gave P = ", p, " for layer ", layer, " (P must be >= 0)");
    return std::min(p, seqlen);
}

}  // namespace transmamba
