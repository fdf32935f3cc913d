#pragma once
// CPU kernels of the self-attention layer with its own Q/K/V projections (block/self_attention.hpp),
// the attention of layer-level hybrid checkpoints (docs/checkpoints.md, "Hybrid checkpoints"):
//
//   q, k = RoPE on their first rotary_dim channels per head (rotate-half, theta; none when 0)
//   o_i(head h) = sum_{j <= i} softmax_j(q_i(h) . k_j(kv(h)) * scale) v_j(kv(h)),  kv(h) = h / (H / KV)
//
// Grouped-query attention: H query heads share KV key/value heads in groups of H / KV, as
// transformers' repeat_kv does. Unlike the TransMamba mixer's attention (Q=C, K=B, V=x, one softmax
// per group serving its heads), every query head has a softmax of its own here.
#include <algorithm>
#include <cmath>
#include <limits>

#include "transmamba/core/numeric.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/core/rotary.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba::kernels::cpu {

// Sizes of one attention computation; `row_stride` elements separate the rows of q, k, v.
struct gqa_shape {
    index_t heads = 1;     // H
    index_t kv_heads = 1;  // KV, divides H
    index_t head_dim = 1;
    index_t rotary_dim = 0;  // channels of each head that RoPE turns (even; 0: no RoPE)
    double rope_theta = 10000.0;
    double scale = 1.0;
};

// Rotates the first rotary_dim channels of every head of `rows` rows in place; row r is the token
// at position first_position + r % seqlen (rows are (batch, seqlen) flattened).
template <class T>
void rope_rows(T* data, index_t rows, index_t seqlen, index_t first_position, index_t heads, index_t head_dim,
               index_t row_stride, index_t rotary_dim, double theta) {
    if (rotary_dim == 0) return;
    using A = compute_t<T>;
    const index_t half = rotary_dim / 2;
    parallel_for(rows, 12 * heads * rotary_dim, [&](index_t r, int) {
        const index_t t = first_position + r % seqlen;
        for (index_t i = 0; i < half; ++i) {
            const rotation rot = rope_rotation(t, i, rotary_dim, theta);
            for (index_t h = 0; h < heads; ++h) {
                T* v = data + r * row_stride + h * head_dim;
                const auto p = rope_rotate<A>(A(v[i]), A(v[i + half]), rot);
                v[i] = T(p.first);
                v[i + half] = T(p.second);
            }
        }
    });
}

namespace self_attention_detail {
// o (head_dim) = softmax over j < n of (q . k_j * scale) weighted v_j; k_j, v_j at rows j of
// `keys` / `values` (stride `kv_stride`), scores scratch of n entries.
template <class T, class A>
void attend_one(const T* q, const T* keys, const T* values, index_t kv_stride, index_t n, index_t head_dim, A scale,
                A* scores, T* o) {
    A most = -std::numeric_limits<A>::infinity();
    for (index_t j = 0; j < n; ++j) {
        const T* k = keys + j * kv_stride;
        A s = 0;
        for (index_t c = 0; c < head_dim; ++c) s += A(q[c]) * A(k[c]);
        scores[j] = s * scale;
        most = std::max(most, scores[j]);
    }
    A total = 0;
    for (index_t j = 0; j < n; ++j) {
        scores[j] = std::exp(scores[j] - most);
        total += scores[j];
    }
    const A inv = A(1) / total;
    for (index_t c = 0; c < head_dim; ++c) {
        A acc = 0;
        for (index_t j = 0; j < n; ++j) acc += scores[j] * A(values[j * kv_stride + c]);
        o[c] = T(acc * inv);
    }
}
}  // namespace self_attention_detail

// Causal prefill: q (batch*L, H*hd), k and v (batch*L, KV*hd) already rotated -> out (batch*L, H*hd);
// `scores` is scratch of batch * H * L entries (caller-owned: no allocation per call).
template <class T>
void causal_gqa_attention(const gqa_shape& s, index_t batch, index_t L, const T* q, const T* k, const T* v, T* out,
                          compute_t<T>* scores_scratch) {
    const index_t qw = s.heads * s.head_dim, kvw = s.kv_heads * s.head_dim, per_kv = s.heads / s.kv_heads;
    using A = compute_t<T>;
    parallel_for(batch * s.heads, L * L * s.head_dim, [&](index_t item, int) {
        const index_t b = item / s.heads, h = item % s.heads, g = h / per_kv;
        A* scores = scores_scratch + item * L;
        const T* keys = k + b * L * kvw + g * s.head_dim;
        const T* values = v + b * L * kvw + g * s.head_dim;
        for (index_t i = 0; i < L; ++i)
            self_attention_detail::attend_one(q + (b * L + i) * qw + h * s.head_dim, keys, values, kvw, i + 1, s.head_dim,
                                              A(s.scale), scores, out + (b * L + i) * qw + h * s.head_dim);
    });
}

// One query (H*hd) against a cache of n tokens (n, KV*hd) that already holds the query's own key
// and value -> out (H*hd); `scores` is scratch of H * n entries.
template <class T>
void decode_gqa_attention(const gqa_shape& s, index_t n, const T* q, const T* keys, const T* values, T* out,
                          compute_t<T>* scores_scratch) {
    using A = compute_t<T>;
    const index_t kvw = s.kv_heads * s.head_dim, per_kv = s.heads / s.kv_heads;
    parallel_for(s.heads, n * s.head_dim * 2, [&](index_t h, int) {
        const index_t g = h / per_kv;
        self_attention_detail::attend_one(q + h * s.head_dim, keys + g * s.head_dim, values + g * s.head_dim, kvw, n,
                                          s.head_dim, A(s.scale), scores_scratch + h * n, out + h * s.head_dim);
    });
}

}  // namespace transmamba::kernels::cpu
