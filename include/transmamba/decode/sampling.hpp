#pragma once
// Choosing the next token from one row of logits: greedy, or temperature / top-k / top-p sampling
// with a seeded generator, so that a run is reproducible from its seed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

struct sampling_options {
    double temperature = 0.0;  // 0: greedy (argmax)
    index_t top_k = 0;         // 0: no limit
    double top_p = 1.0;        // nucleus: the smallest set of tokens whose probability reaches top_p
    std::uint64_t seed = 0;

    void validate() const {
        require(temperature >= 0.0 && std::isfinite(temperature), "sampling temperature must be >= 0, got ", temperature);
        require(top_k >= 0, "sampling top_k must be >= 0, got ", top_k);
        require(top_p > 0.0 && top_p <= 1.0, "sampling top_p must be in (0, 1], got ", top_p);
    }
};

class sampler {
public:
    explicit sampler(const sampling_options& opt) : opt_(opt), rng_(opt.seed) { opt.validate(); }

    // One row of logits: float, or double (a language_model<double> session's logits_type).
    index_t next(std::span<const float> logits) { return choose(logits); }
    index_t next(std::span<const double> logits) { return choose(logits); }

private:
    template <class Real>
    index_t choose(std::span<const Real> logits) {
        require(!logits.empty(), "sampler: empty logits");
        for (std::size_t i = 0; i < logits.size(); ++i)
            require(std::isfinite(logits[i]), "sampler: logit ", i, " is not finite (", logits[i], ")");
        if (opt_.temperature == 0.0)
            return static_cast<index_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());

        // Candidates by descending logit; ties broken by the lower id, so the order is deterministic.
        order_.resize(logits.size());
        std::iota(order_.begin(), order_.end(), index_t(0));
        const auto by_logit = [&](index_t a, index_t b) {
            return logits[std::size_t(a)] > logits[std::size_t(b)] || (logits[std::size_t(a)] == logits[std::size_t(b)] && a < b);
        };
        std::size_t keep = logits.size();
        if (opt_.top_k > 0 && static_cast<std::size_t>(opt_.top_k) < keep) {
            keep = static_cast<std::size_t>(opt_.top_k);
            std::partial_sort(order_.begin(), order_.begin() + std::ptrdiff_t(keep), order_.end(), by_logit);
        } else {
            std::sort(order_.begin(), order_.end(), by_logit);
        }
        // Softmax of the kept candidates at the temperature, in double.
        probs_.resize(keep);
        const double top = logits[std::size_t(order_[0])];
        double sum = 0;
        for (std::size_t i = 0; i < keep; ++i) sum += probs_[i] = std::exp((logits[std::size_t(order_[i])] - top) / opt_.temperature);
        // Nucleus: cut after the smallest prefix reaching top_p (at least one token).
        double mass = 0;
        std::size_t nucleus = 0;
        while (nucleus < keep) {
            mass += probs_[nucleus++] / sum;
            if (mass >= opt_.top_p) break;
        }
        std::discrete_distribution<std::size_t> pick(probs_.begin(), probs_.begin() + std::ptrdiff_t(nucleus));
        return order_[pick(rng_)];
    }

    sampling_options opt_;
    std::mt19937_64 rng_;
    std::vector<index_t> order_;
    std::vector<double> probs_;
};

}  // namespace transmamba
