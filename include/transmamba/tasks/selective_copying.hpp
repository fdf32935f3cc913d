#pragma once
// Selective copying (Gu & Dao, "Mamba", 2023, section 3.1): a region of blanks holds a few data
// tokens at random places; after it come as many markers, and at the i-th marker the model must
// output the i-th data token. Content-aware selection (skip the blanks, keep the order) is what the
// task measures; accuracy is over the markers (chance: 1 / (vocab - 2)).
//
// Vocabulary: 0 the blank, 1 the marker, [2, vocab) the data. length = region + tokens:
//
//   0 0 d1 0 0 0 d2 0 d3 0 ... 0 | 1 1 1 ...        targets at the markers: d1 d2 d3 ...
#include <algorithm>
#include <cstdint>

#include "transmamba/core/error.hpp"
#include "transmamba/tasks/stream_rng.hpp"
#include "transmamba/tasks/token_batch.hpp"

namespace transmamba {

struct selective_copying_task {
    static constexpr const char* name = "selective-copying";
    index_t vocab = 16;
    index_t length = 64;  // region + tokens
    index_t tokens = 8;   // data tokens to copy

    index_t region() const { return length - tokens; }
    index_t vocab_size() const { return vocab; }
    index_t sequence_length() const { return length; }

    void validate() const {
        require(vocab >= 3, "selective copying: the vocabulary needs a blank, a marker and data: at least 3 tokens, got ", vocab);
        require(tokens >= 1, "selective copying: at least one data token, got ", tokens);
        require(length >= 2 * tokens, "selective copying: a sequence of ", length, " tokens cannot hold a region of ", tokens,
                " data tokens and ", tokens, " markers (it needs 2 * tokens = ", 2 * tokens, ")");
    }

    void fill(stream_rng& rng, token_batch& out, index_t row) const {
        auto places = rng.distinct(region(), tokens);
        std::sort(places.begin(), places.end());
        for (index_t i = 0; i < tokens; ++i) {
            const auto data = 2 + std::int64_t(rng.below(std::uint64_t(vocab - 2)));
            out.id(row, places[std::size_t(i)]) = data;
            out.id(row, region() + i) = 1;
            out.target(row, region() + i) = data;
        }
    }
};

}  // namespace transmamba
