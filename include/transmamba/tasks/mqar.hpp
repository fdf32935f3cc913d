#pragma once
// Multi-query associative recall (MQAR; Arora et al., "Zoology", 2023): a sequence shows key-value
// pairs, then asks for some of the keys again; the model must answer each with its value. Only the
// answers carry a loss, so accuracy on them measures recall (chance: 1 / value_count()).
//
// Vocabulary: 0 is the filler, [1, 1 + K) the keys, [1 + K, vocab) the values, K = (vocab - 1) / 2.
// One sequence of length L with p pairs and q queries:
//
//   k1 v1 k2 v2 ... kp vp | 0 0 ki vi 0 0 0 0 kj vj ...      (L - 2p positions after the pairs)
//
// keys distinct, values uniform (repeats allowed); the queried keys are q distinct keys of the p, in
// random order, each at one of the (L - 2p) / 2 two-token slots after the pairs, chosen uniformly
// (Zoology draws the gaps from a power law; uniform slots keep the task's state simple and still
// spread the query distances over the whole range). The target at a query key is its value; the value
// itself follows in the input, as in Zoology's next-token form.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "transmamba/core/error.hpp"
#include "transmamba/tasks/stream_rng.hpp"
#include "transmamba/tasks/token_batch.hpp"

namespace transmamba {

struct mqar_task {
    static constexpr const char* name = "mqar";
    index_t vocab = 64;
    index_t length = 64;
    index_t pairs = 8;
    index_t queries = 8;

    index_t key_count() const { return (vocab - 1) / 2; }
    index_t value_count() const { return vocab - 1 - key_count(); }
    index_t vocab_size() const { return vocab; }
    index_t sequence_length() const { return length; }

    void validate() const {
        require(vocab >= 3, "mqar: the vocabulary needs a filler, keys and values: at least 3 tokens, got ", vocab);
        require(pairs >= 1, "mqar: at least one key-value pair, got ", pairs);
        require(pairs <= key_count(), "mqar: ", pairs, " pairs need as many distinct keys, but a vocabulary of ", vocab,
                " has ", key_count(), " keys (and ", value_count(), " values)");
        require(queries >= 1 && queries <= pairs, "mqar: the queries must be in [1, pairs = ", pairs, "], got ", queries);
        require(length >= 2 * pairs + 2 * queries, "mqar: a sequence of ", length, " tokens cannot hold ", pairs, " pairs and ",
                queries, " queries (it needs 2 * (pairs + queries) = ", 2 * (pairs + queries), ")");
    }

    // Row `row` of `out`, which is (batch, length) and already filled with 0 / ignore_id.
    void fill(stream_rng& rng, token_batch& out, index_t row) const {
        const auto keys = rng.distinct(key_count(), pairs);
        std::vector<std::int64_t> values(static_cast<std::size_t>(pairs));
        for (index_t i = 0; i < pairs; ++i) {
            values[std::size_t(i)] = 1 + key_count() + std::int64_t(rng.below(std::uint64_t(value_count())));
            out.id(row, 2 * i) = 1 + keys[std::size_t(i)];
            out.id(row, 2 * i + 1) = values[std::size_t(i)];
        }
        const auto asked = rng.distinct(pairs, queries);
        auto slots = rng.distinct((length - 2 * pairs) / 2, queries);
        std::sort(slots.begin(), slots.end());
        for (index_t j = 0; j < queries; ++j) {
            const index_t at = 2 * pairs + 2 * slots[std::size_t(j)];
            const auto pair = std::size_t(asked[std::size_t(j)]);
            out.id(row, at) = 1 + keys[pair];
            out.id(row, at + 1) = values[pair];
            out.target(row, at) = values[pair];
        }
    }
};

}  // namespace transmamba
