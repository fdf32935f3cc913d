#pragma once
// Fixed-size KV cache pages for batched decoding (decode/batch.hpp). A page holds `page_tokens`
// tokens of one layer's cache: keys B (g*n per token), values x (h*p) and dt (h), the three arrays
// a decoding step and the Memory Converter read. Pages are interchangeable between layers and
// sequences, so one pool serves a whole batch: a sequence takes a page when its cache crosses a page
// boundary and gives its pages back when a layer converts (past the TransPoint the cache is not
// needed) or when it leaves. A released page is reused before a new one is allocated, so the pool
// holds as many pages as were ever in use at once, and the pages in use follow the tokens cached.
#include <cstddef>
#include <vector>

#include "transmamba/backend/traits.hpp"
#include "transmamba/core/checked_size.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/kv_page_table.hpp"
#include "transmamba/core/numeric.hpp"

namespace transmamba {

template <class T, class Backend>
class kv_page_pool {
public:
    using A = compute_t<T>;
    template <class U>
    using buffer = typename backend_traits<Backend>::template buffer<U>;

    // max_pages = 0: no limit but the machine's memory.
    kv_page_pool(const mixer_config& cfg, index_t page_tokens, index_t max_pages = 0)
        : page_tokens_(page_tokens),
          max_pages_(max_pages),
          key_elems_(cfg.ngroups * cfg.d_state),
          value_elems_(cfg.d_inner()),
          dt_elems_(cfg.nheads()) {
        require(page_tokens > 0, "kv_page_pool: page_tokens must be positive, got ", page_tokens);
        require(max_pages >= 0, "kv_page_pool: max_pages must be >= 0 (0: no limit), got ", max_pages);
        (void)checked_mul(page_tokens, key_elems_ + value_elems_ + dt_elems_, "kv_page_pool: elements of one page");
    }

    index_t page_tokens() const { return page_tokens_; }
    index_t max_pages() const { return max_pages_; }
    index_t pages_allocated() const { return static_cast<index_t>(pages_.size()); }
    index_t pages_in_use() const { return pages_allocated() - static_cast<index_t>(free_.size()); }
    // Whether `count` more pages can be taken now.
    bool can_take(index_t count) const {
        return max_pages_ == 0 || pages_in_use() + count <= max_pages_;
    }
    std::size_t page_bytes() const {
        return static_cast<std::size_t>(page_tokens_) *
               (static_cast<std::size_t>(key_elems_ + value_elems_) * sizeof(T) + static_cast<std::size_t>(dt_elems_) * sizeof(A));
    }
    std::size_t bytes_allocated() const { return page_bytes() * pages_.size(); }

    // Appends a page to `table`: a released one if any, else a new one; an error past max_pages.
    void extend(kv_page_table<T, A>& table) {
        require(can_take(1), "KV page pool exhausted: all ", max_pages_, " pages of ", page_tokens_,
                " tokens are in use (raise max_pages, or let sequences leave)");
        index_t id;
        if (!free_.empty()) {
            id = free_.back();
            free_.pop_back();
        } else {
            page p;
            p.keys.resize(static_cast<std::size_t>(page_tokens_ * key_elems_));
            p.values.resize(static_cast<std::size_t>(page_tokens_ * value_elems_));
            p.dts.resize(static_cast<std::size_t>(page_tokens_ * dt_elems_));
            pages_.push_back(std::move(p));
            id = pages_allocated() - 1;
        }
        page& p = pages_[std::size_t(id)];
        table.page_tokens = page_tokens_;
        table.keys.push_back(p.keys.data());
        table.values.push_back(p.values.data());
        table.dts.push_back(p.dts.data());
        table.ids.push_back(id);
    }
    // Gives every page of `table` back and empties it.
    void release(kv_page_table<T, A>& table) {
        for (index_t id : table.ids) free_.push_back(id);
        table.keys.clear();
        table.values.clear();
        table.dts.clear();
        table.ids.clear();
    }

private:
    struct page {
        buffer<T> keys, values;
        buffer<A> dts;
    };
    index_t page_tokens_, max_pages_;
    index_t key_elems_, value_elems_, dt_elems_;
    std::vector<page> pages_;
    std::vector<index_t> free_;
};

}  // namespace transmamba
