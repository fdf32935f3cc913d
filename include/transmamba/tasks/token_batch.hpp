#pragma once
// A batch of a training task: token ids (batch, L) and the target of every position (batch, L),
// ignore_id where no loss is taken (PyTorch's ignore_index convention, -100). targets[b][t] is the
// token the model should predict after reading ids[b][0..t].
#include <cstdint>
#include <vector>

#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

inline constexpr std::int64_t ignore_id = -100;

struct token_batch {
    index_t batch = 0, length = 0;
    std::vector<std::int64_t> ids, targets;  // row-major (batch, length)

    token_batch() = default;
    token_batch(index_t b, index_t L)
        : batch(b), length(L), ids(static_cast<std::size_t>(b * L), 0), targets(static_cast<std::size_t>(b * L), ignore_id) {}

    std::int64_t& id(index_t b, index_t t) { return ids[static_cast<std::size_t>(b * length + t)]; }
    std::int64_t& target(index_t b, index_t t) { return targets[static_cast<std::size_t>(b * length + t)]; }
    tensor_view<const std::int64_t, 2> id_view() const { return {ids.data(), {batch, length}}; }
    tensor_view<const std::int64_t, 2> target_view() const { return {targets.data(), {batch, length}}; }

    // Positions that carry a loss.
    index_t scored() const {
        index_t n = 0;
        for (auto t : targets) n += t != ignore_id;
        return n;
    }
};

}  // namespace transmamba
