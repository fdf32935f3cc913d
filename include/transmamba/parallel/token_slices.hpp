#pragma once
// Which tokens of a sequence each rank holds (docs/context_parallel.md): rank r of R holds the
// contiguous slice [r L / R, (r + 1) L / R). L need not divide by R: the slices then differ in length
// by one token, never more, so no rank carries padding. The SSM scan needs each rank's tokens to be
// one run of the sequence (a rank reduces them to one (decay, state) pair), hence contiguous slices;
// the attention prefix is re-balanced separately (query_assignment.hpp).
#include <algorithm>

#include "transmamba/core/error.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/tensor_view.hpp"  // index_t

namespace transmamba {

struct token_slice {
    index_t begin = 0, end = 0;
    index_t size() const { return end - begin; }
};

struct token_slices {
    index_t length = 0;  // L, tokens of each sequence
    index_t ranks = 0;   // R

    // Throws when the split is impossible: no rank, or a rank left without a token.
    token_slices(index_t L, index_t R) : length(L), ranks(R) {
        require(R >= 1, "context parallel: the number of ranks must be at least 1, got ", R);
        require(L >= 1, "context parallel: the sequence is empty (L = ", L, ")");
        require(L >= R, "context parallel: ", R, " ranks for a sequence of ", L,
                " tokens; every rank must hold at least one token (use at most L ranks)");
    }
    token_slice of(index_t rank) const {
        require(rank >= 0 && rank < ranks, "context parallel: rank ", rank, " out of range [0, ", ranks, ")");
        return {rank * length / ranks, (rank + 1) * length / ranks};
    }
    // The rank holding token t (0 <= t < L): the inverse of of().
    index_t owner(index_t t) const {
        index_t r = std::min(ranks - 1, t * ranks / length);  // within one step of the owner
        while (r > 0 && of(r).begin > t) --r;
        while (r + 1 < ranks && of(r).end <= t) ++r;
        return r;
    }
    // The longest slice: the row count of a padded per-rank slot in an all-gather.
    index_t longest() const { return (length + ranks - 1) / ranks; }
};

}  // namespace transmamba
