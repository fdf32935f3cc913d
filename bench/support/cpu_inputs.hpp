#pragma once
// Random, well-conditioned inputs for the CPU benchmarks (never zeros: they hide wrong indexing
// and can run faster than real data).
#include <transmamba/transmamba.hpp>

#include <random>
#include <vector>

namespace transmamba::bench {

template <class T>
std::vector<T> random_vector(std::size_t n, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> dist(lo, hi);
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(dist(rng));
    return v;
}

// x | B | C rows as the mixer lays them out, dt in [1e-3, 0.1], A in [-16, -1], D near 1.
template <class T>
struct ssm_operands {
    mixer_config cfg;
    index_t batch, L;
    std::vector<T> xbc, dt, A, D;

    ssm_operands(const mixer_config& c, index_t b, index_t len) : cfg(c), batch(b), L(len) {
        xbc = random_vector<T>(static_cast<std::size_t>(b * len * c.conv_dim()), 1);
        dt = random_vector<T>(static_cast<std::size_t>(b * len * c.nheads()), 2, 1e-3, 0.1);
        A = random_vector<T>(static_cast<std::size_t>(c.nheads()), 3, -16.0, -1.0);
        D = random_vector<T>(static_cast<std::size_t>(c.nheads()), 4, 0.5, 1.5);
    }
    ssm_inputs<T> inputs() const {
        const index_t cd = cfg.conv_dim(), h = cfg.nheads(), p = cfg.headdim, g = cfg.ngroups, n = cfg.d_state;
        return {tensor_view<const T, 4>(xbc.data(), {batch, L, h, p}, {L * cd, cd, p, 1}),
                tensor_view<const T, 4>(xbc.data() + cfg.d_inner(), {batch, L, g, n}, {L * cd, cd, n, 1}),
                tensor_view<const T, 4>(xbc.data() + cfg.d_inner() + g * n, {batch, L, g, n}, {L * cd, cd, n, 1}),
                tensor_view<const T, 3>(dt.data(), {batch, L, h}),
                A.data(),
                D.data()};
    }
};

inline mixer_config bench_config(index_t d_model, index_t headdim, index_t d_state, index_t ngroups, index_t chunk) {
    mixer_config c;
    c.d_model = d_model;
    c.headdim = headdim;
    c.d_state = d_state;
    c.ngroups = ngroups;
    c.chunk_size = chunk;
    return c;
}

}  // namespace transmamba::bench
