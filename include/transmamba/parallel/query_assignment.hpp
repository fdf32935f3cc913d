#pragma once
// Which queries of the attention prefix t < P each rank computes (the rank layout policy of the
// attention part; docs/context_parallel.md). Every rank has the whole prefix's x, B, C after one
// all-gather, so any rank can compute any query; the policy only decides who does which.
//
// - contiguous_queries: each rank computes the prefix queries of its own token slice. No rows go
//   back, but the work is lopsided: causal query i reads i + 1 keys, so a slice's cost grows with its
//   position and the rank holding the end of the prefix does ~2x the mean while the others wait.
// - zigzag_queries (the default): the prefix is cut into 2R chunks and rank r computes chunks r and
//   2R - 1 - r. Chunk c costs ~(2c + 1) units of P^2 / (8 R^2), so each rank's pair costs the same
//   4R units: no rank idles. The price is one more all-gather, of the outputs y of the prefix, which
//   the owners of the tokens then pick their rows from.
#include <algorithm>
#include <array>
#include <concepts>

#include "transmamba/core/numeric.hpp"
#include "transmamba/parallel/token_slices.hpp"

namespace transmamba {

struct query_range {
    index_t begin = 0, end = 0;
    index_t size() const { return end > begin ? end - begin : 0; }
};

template <class Q>
concept query_assignment = requires(const token_slices& slices, index_t rank, index_t prefix) {
    { Q::returns_rows } -> std::convertible_to<bool>;  // outputs travel back to the tokens' owners
    { Q::assigned(slices, rank, prefix) } -> std::same_as<std::array<query_range, 2>>;
};

struct contiguous_queries {
    static constexpr bool returns_rows = false;
    static std::array<query_range, 2> assigned(const token_slices& slices, index_t rank, index_t prefix) {
        const token_slice s = slices.of(rank);
        return {query_range{std::min(s.begin, prefix), std::min(s.end, prefix)}, query_range{}};
    }
};

struct zigzag_queries {
    static constexpr bool returns_rows = true;
    // Chunk c of the 2R chunks of [0, prefix): near-equal, empty when prefix < 2R.
    static query_range chunk(index_t c, index_t ranks, index_t prefix) {
        return {c * prefix / (2 * ranks), (c + 1) * prefix / (2 * ranks)};
    }
    static index_t rank_of_chunk(index_t c, index_t ranks) { return c < ranks ? c : 2 * ranks - 1 - c; }
    static std::array<query_range, 2> assigned(const token_slices& slices, index_t rank, index_t prefix) {
        (void)slices.of(rank);  // range check
        const index_t R = slices.ranks;
        return {chunk(rank, R, prefix), chunk(2 * R - 1 - rank, R, prefix)};
    }
};

}  // namespace transmamba
