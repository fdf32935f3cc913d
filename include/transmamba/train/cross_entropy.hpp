#pragma once
// The language-model loss over a batch's scored targets (tasks/token_batch.hpp: ignore_id marks
// the rest), from logits (rows, V):
//
//   loss     = (1 / S) sum over scored rows r of  logsumexp(logits_r) - logits_r[target_r]
//   dlogits_r = (softmax(logits_r) - onehot(target_r)) / S      on scored rows, 0 on the others
//   correct  = scored rows whose largest logit is the target (the first of equal maxima)
//
// S = the number of scored rows. Each row's terms are computed in double and the rows are summed in
// order, so the loss is the same bits at every thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "transmamba/core/error.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/core/tensor_view.hpp"
#include "transmamba/tasks/token_batch.hpp"

namespace transmamba {

struct loss_totals {
    double loss = 0;     // the mean over scored rows (0 when none is)
    index_t correct = 0;
    index_t scored = 0;
};

// dlogits may be empty (loss and accuracy only); else it has the logits' shape and every element
// is written.
template <class L>
loss_totals cross_entropy(tensor_view<const L, 2> logits, std::span<const std::int64_t> targets, tensor_view<L, 2> dlogits = {}) {
    const index_t rows = logits.extent(0), V = logits.extent(1);
    require(static_cast<index_t>(targets.size()) == rows, "cross_entropy: ", targets.size(), " targets for ", rows, " rows of logits");
    expect_contiguous(logits, "logits");
    const bool want_grad = dlogits.data() != nullptr;
    if (want_grad) {
        expect_shape(dlogits, "dlogits", {rows, V});
        expect_contiguous(dlogits, "dlogits");
    }
    index_t scored = 0;
    for (index_t r = 0; r < rows; ++r) {
        const auto t = targets[std::size_t(r)];
        if (t == ignore_id) continue;
        require(t >= 0 && t < V, "cross_entropy: target ", t, " of row ", r, " is outside the vocabulary [0, ", V, ")");
        ++scored;
    }
    std::vector<double> row_loss(static_cast<std::size_t>(rows), 0.0);
    std::vector<char> row_correct(static_cast<std::size_t>(rows), 0);
    const double inv = scored ? 1.0 / double(scored) : 0.0;
    parallel_for(rows, 12 * V, [&](index_t r, int) {
        const L* z = logits.data() + r * V;
        L* dz = want_grad ? dlogits.data() + r * V : nullptr;
        const auto t = targets[std::size_t(r)];
        if (t == ignore_id) {
            if (dz) std::fill_n(dz, V, L(0));
            return;
        }
        index_t best = 0;
        for (index_t v = 1; v < V; ++v)
            if (z[v] > z[best]) best = v;
        const double top = double(z[best]);
        double sum = 0;
        for (index_t v = 0; v < V; ++v) sum += std::exp(double(z[v]) - top);
        const double lse = top + std::log(sum);
        row_loss[std::size_t(r)] = lse - double(z[t]);
        row_correct[std::size_t(r)] = best == t;
        if (dz) {
            for (index_t v = 0; v < V; ++v) dz[v] = static_cast<L>(std::exp(double(z[v]) - lse) * inv);
            dz[t] = static_cast<L>((std::exp(double(z[t]) - lse) - 1.0) * inv);
        }
    });
    loss_totals out;
    out.scored = scored;
    double total = 0;
    for (index_t r = 0; r < rows; ++r) {
        total += row_loss[std::size_t(r)];
        out.correct += row_correct[std::size_t(r)];
    }
    out.loss = total * inv;
    require(std::isfinite(out.loss), "cross_entropy: the loss is not finite (", out.loss, "): the logits overflowed");
    return out;
}

}  // namespace transmamba
