#pragma once
// The view of one layer's paged KV cache that the decoding kernels read (the pages themselves
// belong to a pool, decode/kv_page_pool.hpp). Pointers into the backend's memory.
#include <cstddef>
#include <vector>

#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

// A KV cache in fixed-size pages (batched decoding, decode/kv_page_pool.hpp owns the pages): token j
// lies in page j / page_tokens at row j % page_tokens, keys (g*n), values (h*p) and dt (h) per row.
template <class T, class A>
struct kv_page_table {
    index_t page_tokens = 0;
    std::vector<T*> keys;    // per page: (page_tokens, ngroups, d_state)
    std::vector<T*> values;  // per page: (page_tokens, nheads, headdim)
    std::vector<A*> dts;     // per page: (page_tokens, nheads)
    std::vector<index_t> ids;  // the pages' numbers in their pool
    index_t pages() const { return static_cast<index_t>(keys.size()); }
    T* key_row(index_t j, index_t row_elems) const { return keys[std::size_t(j / page_tokens)] + j % page_tokens * row_elems; }
    T* value_row(index_t j, index_t row_elems) const {
        return values[std::size_t(j / page_tokens)] + j % page_tokens * row_elems;
    }
    A* dt_row(index_t j, index_t row_elems) const { return dts[std::size_t(j / page_tokens)] + j % page_tokens * row_elems; }
};

}  // namespace transmamba
