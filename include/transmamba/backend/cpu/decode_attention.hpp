#pragma once
// Decoding attention on the CPU: the newest token's query C (g, n) against the KV cache of tokens
// 0..len-1 (keys B (len, g, n), values x (len, h, p), the newest last). One softmax per group
// serves its h/g heads, as in prefill.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/kv_page_table.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/rotary.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/attention.hpp"

namespace transmamba {

template <attention_policy Variant>
struct decode_attention_kernel<Variant, cpu> {
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t len) {
        return static_cast<std::size_t>(len + 2 * cfg.d_state) * sizeof(T) + 3 * workspace_arena::alignment;
    }

    // y (h, p) = softmax(C B^T * scale) x + D x_newest  (D only for skip_D variants).
    template <class T>
    static void run(const cpu_context&, const mixer_config& cfg, const T* query, const T* keys, const T* values,
                    const compute_t<T>* D, index_t len, compute_t<T>* y, workspace_span span) {
        const index_t gn = cfg.ngroups * cfg.d_state, hp = cfg.d_inner();
        attend(cfg, query, [&](index_t j) { return keys + j * gn; }, [&](index_t j) { return values + j * hp; }, D, len,
               y, span);
    }
    // The same over a cache in pages (batched decoding): token j at its page's row.
    template <class T>
    static void run_paged(const cpu_context&, const mixer_config& cfg, const T* query,
                          const kv_page_table<T, compute_t<T>>& cache, const compute_t<T>* D, index_t len,
                          compute_t<T>* y, workspace_span span) {
        const index_t gn = cfg.ngroups * cfg.d_state, hp = cfg.d_inner();
        attend(cfg, query, [&](index_t j) { return cache.key_row(j, gn); },
               [&](index_t j) { return cache.value_row(j, hp); }, D, len, y, span);
    }

private:
    // key_row(j) -> the (g, n) keys of token j, value_row(j) -> its (h, p) values.
    template <class T, class KeyRow, class ValueRow>
    static void attend(const mixer_config& cfg, const T* query, KeyRow key_row, ValueRow value_row,
                       const compute_t<T>* D, index_t len, compute_t<T>* y, workspace_span span) {
        static_assert(std::is_same_v<T, compute_t<T>>, "the CPU backend computes in its storage type");
        workspace_arena arena(span);
        const index_t g = cfg.ngroups, n = cfg.d_state, p = cfg.headdim, hg = cfg.nheads() / g;
        T* scores = arena.take<T>(static_cast<std::size_t>(len));
        T* rq = arena.take<T>(static_cast<std::size_t>(n));
        T* rk = arena.take<T>(static_cast<std::size_t>(n));
        const T scale = static_cast<T>(Variant::scale::value(n));
        for (index_t grp = 0; grp < g; ++grp) {
            const T* q = query + grp * n;
            if constexpr (Variant::position::rotary) q = rotate(q, n, len - 1, rq);
            T mx = -std::numeric_limits<T>::infinity();
            for (index_t j = 0; j < len; ++j) {
                const T* k = key_row(j) + grp * n;
                if constexpr (Variant::position::rotary) k = rotate(k, n, j, rk);
                T dot = 0;
                for (index_t i = 0; i < n; ++i) dot += q[i] * k[i];
                scores[j] = dot * scale;
                mx = std::max(mx, scores[j]);
            }
            T sum = 0;
            for (index_t j = 0; j < len; ++j) sum += scores[j] = std::exp(scores[j] - mx);
            const T inv = T(1) / sum;
            for (index_t k = grp * hg; k < (grp + 1) * hg; ++k) {
                T* yk = y + k * p;
                std::fill_n(yk, p, T(0));
                for (index_t j = 0; j < len; ++j) {
                    const T w = scores[j] * inv;
                    const T* v = value_row(j) + k * p;
                    for (index_t i = 0; i < p; ++i) yk[i] += w * v[i];
                }
                if constexpr (Variant::skip_D) {
                    const T* x = value_row(len - 1) + k * p;
                    for (index_t i = 0; i < p; ++i) yk[i] += D[k] * x[i];
                }
            }
        }
    }

    // Rotate-half RoPE of one row at position t (the same rotation the prefill kernel applies).
    template <class T>
    static const T* rotate(const T* v, index_t n, index_t t, T* out) {
        const index_t half = n / 2;
        for (index_t i = 0; i < half; ++i) {
            const auto r = rope_rotate(v[i], v[i + half], rope_rotation(t, i, n, Variant::position::theta));
            out[i] = r.first;
            out[i + half] = r.second;
        }
        return out;
    }
};

}  // namespace transmamba
