#pragma once
// embedding_kernel<cpu>: one row copy per token.
#include <algorithm>
#include <cstdint>

#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/backend/embedding.hpp"
#include "transmamba/core/parallel.hpp"

namespace transmamba {

template <>
struct embedding_kernel<cpu> {
    template <class T>
    static void gather(const cpu_context&, index_t rows, index_t width, const std::int64_t* ids, const T* table, T* out) {
        parallel_for(rows, width, [&](index_t r, int) { std::copy_n(table + ids[r] * width, width, out + r * width); });
    }
};

}  // namespace transmamba
