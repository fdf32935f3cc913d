#pragma once
// loss_kernel<cpu>: cross-entropy per token over the vocabulary, and its gradient.
//
//   loss_r = logsumexp(logits_r) - logits_r[target_r]
//   dlogits_r = scale (softmax(logits_r) - onehot(target_r))     (scale = 1 / counted tokens)
//
// for a token whose target is not `ignore`; an ignored token has loss 0 and a zero gradient row.
#include <cmath>
#include <cstdint>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/parallel.hpp"

namespace transmamba {

template <>
struct loss_kernel<cpu> {
    // logits (rows, vocab); targets (rows) in [0, vocab) or == ignore, checked by the caller.
    // row_loss (rows) and argmax (rows, the first index of the largest logit) are written for every
    // row. With `gradient`, logits is overwritten in place by dlogits.
    template <class A>
    static void cross_entropy(const cpu_context&, index_t rows, index_t vocab, A* logits, const std::int64_t* targets,
                              std::int64_t ignore, A scale, bool gradient, A* row_loss, std::int64_t* argmax) {
        parallel_for(rows, 12 * vocab, [&](index_t r, int) {  // one exp per logit
            A* l = logits + r * vocab;
            index_t best = 0;
            for (index_t v = 1; v < vocab; ++v)
                if (l[v] > l[best]) best = v;
            argmax[r] = best;
            const std::int64_t t = targets[r];
            if (t == ignore) {
                row_loss[r] = A(0);
                if (gradient) std::fill_n(l, vocab, A(0));
                return;
            }
            const A top = l[best];
            A sum = 0;
            for (index_t v = 0; v < vocab; ++v) sum += std::exp(l[v] - top);
            row_loss[r] = top + std::log(sum) - l[t];
            if (!gradient) return;
            const A norm = scale / sum;
            for (index_t v = 0; v < vocab; ++v) l[v] = std::exp(l[v] - top) * norm;
            l[t] -= scale;
        });
    }
};

}  // namespace transmamba
