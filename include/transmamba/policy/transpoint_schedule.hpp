#pragma once
// A TransPoint schedule as data: the run-time form of the TransPoint policies that a checkpoint, a
// command line or a config file names (docs/checkpoints.md, "the transmamba object"). It is itself a
// transpoint_policy, so a stack or a language model runs with it directly.
//
//   fixed      one P for every layer                         transpoints = [P]
//   per_layer  layer i takes transpoints[i]                  one entry per TransMamba layer
//   cyclic     layer i takes transpoints[i mod size]         the paper's schedules (paper_schedule)
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"
#include "transmamba/policy/transpoint.hpp"

namespace transmamba {

enum class schedule_kind { fixed, per_layer, cyclic };

constexpr std::string_view schedule_kind_name(schedule_kind k) {
    switch (k) {
        case schedule_kind::fixed: return "fixed";
        case schedule_kind::per_layer: return "per_layer";
        case schedule_kind::cyclic: return "cyclic";
    }
    return "?";
}

constexpr std::optional<schedule_kind> parse_schedule_kind(std::string_view name) {
    if (name == "fixed") return schedule_kind::fixed;
    if (name == "per_layer") return schedule_kind::per_layer;
    if (name == "cyclic") return schedule_kind::cyclic;
    return std::nullopt;
}

struct transpoint_schedule {
    schedule_kind kind = schedule_kind::fixed;
    std::vector<index_t> transpoints{0};

    static transpoint_schedule fixed(index_t p) { return {schedule_kind::fixed, {p}}; }
    static transpoint_schedule per_layer(std::vector<index_t> points) { return {schedule_kind::per_layer, std::move(points)}; }
    static transpoint_schedule cyclic(std::vector<index_t> points) { return {schedule_kind::cyclic, std::move(points)}; }
    static transpoint_schedule from(const cyclic_transpoints& c) { return cyclic(c.table); }
    static transpoint_schedule from(const per_layer_transpoints& p) { return per_layer(p.values); }
    static transpoint_schedule from(const fixed_transpoint& f) { return fixed(f.value); }

    // Throws unless the schedule is well formed for a model with `num_layers` TransMamba layers
    // (layers that take a TransPoint): no negative P, a fixed schedule has one entry, a per-layer
    // schedule one per layer, a cyclic one at least one.
    void validate(index_t num_layers) const {
        for (std::size_t i = 0; i < transpoints.size(); ++i)
            require(transpoints[i] >= 0, "TransPoint schedule entry ", i, " is ", transpoints[i], " (must be >= 0)");
        switch (kind) {
            case schedule_kind::fixed:
                require(transpoints.size() == 1, "a fixed TransPoint schedule has exactly one entry, got ", transpoints.size());
                break;
            case schedule_kind::per_layer:
                require(static_cast<index_t>(transpoints.size()) == num_layers, "a per_layer TransPoint schedule needs ",
                        num_layers, " entries (one per TransMamba layer), got ", transpoints.size());
                break;
            case schedule_kind::cyclic:
                require(!transpoints.empty(), "a cyclic TransPoint schedule needs at least one entry");
                break;
        }
    }

    index_t operator()(index_t layer, index_t /*seqlen*/) const {
        require(!transpoints.empty(), "the TransPoint schedule is empty");
        require(layer >= 0, "TransPoint schedule asked for negative layer ", layer);
        switch (kind) {
            case schedule_kind::fixed: return transpoints.front();
            case schedule_kind::per_layer:
                require(layer < static_cast<index_t>(transpoints.size()), "the per_layer TransPoint schedule has ",
                        transpoints.size(), " entries, layer ", layer, " was asked for");
                return transpoints[static_cast<std::size_t>(layer)];
            case schedule_kind::cyclic:
                return transpoints[static_cast<std::size_t>(layer % static_cast<index_t>(transpoints.size()))];
        }
        return 0;
    }

    friend bool operator==(const transpoint_schedule&, const transpoint_schedule&) = default;
};

static_assert(transpoint_policy<transpoint_schedule>);

}  // namespace transmamba
