#pragma once
// embedding_backward_kernel<cpu>: dtable[ids[r]] += drows[r] for every token r. Repeated ids sum;
// the rows of one id are added in token order by one task (a counting sort groups them first), so
// the result is the same bits whatever the thread count, with no atomics.
#include <algorithm>
#include <cstdint>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/parallel.hpp"

namespace transmamba {

template <>
struct embedding_backward_kernel<cpu> {
    // Scratch the caller provides, in elements of std::int64_t: rows + vocab + 1.
    static std::size_t scratch_elements(index_t rows, index_t vocab) {
        return static_cast<std::size_t>(rows + vocab + 1);
    }

    // ids (rows) in [0, vocab), checked by the caller; drows (rows, width); dtable (vocab, width),
    // added into.
    template <class T>
    static void scatter_add(const cpu_context&, index_t rows, index_t width, index_t vocab, const std::int64_t* ids,
                            const T* drows, T* dtable, std::int64_t* scratch) {
        std::int64_t* start = scratch;        // (vocab + 1): the first slot of each id in `order`
        std::int64_t* order = scratch + vocab + 1;  // (rows): token indices grouped by id, in token order
        std::fill_n(start, vocab + 1, std::int64_t(0));
        for (index_t r = 0; r < rows; ++r) ++start[ids[r] + 1];
        for (index_t v = 0; v < vocab; ++v) start[v + 1] += start[v];
        for (index_t r = 0; r < rows; ++r) order[start[ids[r]]++] = r;
        for (index_t v = vocab; v > 0; --v) start[v] = start[v - 1];  // back to the first slots
        start[0] = 0;
        parallel_for(vocab, std::max<index_t>(1, rows / std::max<index_t>(1, vocab)) * width, [&](index_t v, int) {
            T* out = dtable + v * width;
            for (std::int64_t k = start[v]; k < start[v + 1]; ++k) {
                const T* in = drows + order[k] * width;
                for (index_t c = 0; c < width; ++c) out[c] += in[c];
            }
        });
    }
};

}  // namespace transmamba
