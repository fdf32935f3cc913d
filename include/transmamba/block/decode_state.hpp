#pragma once
// What one mixer keeps between decoding steps of one sequence (SPEC.md section 5):
//   - the conv window: the in-projection rows of the last d_conv - 1 tokens (the conv's history);
//   - below the TransPoint, the KV cache: keys B once per group, values x per head, and dt per
//     head (the Memory Converter needs the decays of the prefix);
//   - from the TransPoint on, the SSM state (nheads, headdim, d_state); the cache is freed then,
//     so memory after the TransPoint does not grow with the sequence.
#include "transmamba/backend/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/kv_page_table.hpp"
#include "transmamba/core/numeric.hpp"

namespace transmamba {

template <class T, class Backend>
struct mixer_decode_state {
    using A = compute_t<T>;
    template <class U>
    using buffer = typename backend_traits<Backend>::template buffer<U>;

    index_t position = 0;    // tokens consumed so far
    index_t transpoint = 0;  // this layer's P for the sequence
    bool converted = false;  // the cache has been turned into the SSM state

    buffer<A> window;   // (d_conv - 1, d_in_proj): the in-projection rows of the last tokens, oldest first
    buffer<T> keys;     // (capacity, ngroups, d_state)
    buffer<T> values;   // (capacity, nheads, headdim)
    buffer<A> dts;      // (capacity, nheads)
    buffer<A> state;    // (nheads, headdim, d_state)
    // Batched decoding keeps the cache here instead of in keys/values/dts (which are then empty);
    // sessions leave it empty.
    kv_page_table<T, A> paged;

    // Sized for a sequence whose layer runs at `P`; `max_tokens` bounds the cache. The zero fills
    // run on the caller's stream, which the prefill that follows writes on: on another stream a
    // fill could land after the prefill's final state.
    void reset(const mixer_config& c, index_t P, index_t max_tokens,
               const typename backend_traits<Backend>::context& ctx = {}) {
        position = 0;
        transpoint = P;
        converted = P == 0;
        const auto cap = static_cast<std::size_t>(P < max_tokens ? P : max_tokens);
        window.resize(static_cast<std::size_t>((c.d_conv - 1) * c.d_in_proj()));
        keys.resize(cap * static_cast<std::size_t>(c.ngroups * c.d_state));
        values.resize(cap * static_cast<std::size_t>(c.nheads() * c.headdim));
        dts.resize(cap * static_cast<std::size_t>(c.nheads()));
        state.resize(static_cast<std::size_t>(c.nheads() * c.headdim * c.d_state));
        backend_traits<Backend>::fill(ctx, window.data(), window.size(), A(0));
        backend_traits<Backend>::fill(ctx, state.data(), state.size(), A(0));
    }
    index_t capacity(const mixer_config& c) const { return static_cast<index_t>(dts.size()) / c.nheads(); }
    // Frees the cache once the state has taken over.
    void release_cache() {
        keys.resize(0);
        values.resize(0);
        dts.resize(0);
    }
};

}  // namespace transmamba
