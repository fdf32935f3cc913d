#pragma once
// Moves the float64 oracle's weights and shapes into the library's types, so that every test
// compares the library with tests/reference on the same numbers.
#include <cstdint>
#include <vector>

#include <transmamba/transmamba.hpp>

#include "reference/reference.hpp"

namespace transmamba::testing {

inline reference::dims to_dims(const mixer_config& c, index_t batch, index_t L) {
    reference::dims d;
    d.batch = int(batch);
    d.seqlen = int(L);
    d.d_model = int(c.d_model);
    d.expand = int(c.expand);
    d.headdim = int(c.headdim);
    d.d_state = int(c.d_state);
    d.ngroups = int(c.ngroups);
    d.d_conv = int(c.d_conv);
    d.dt_min = c.dt_min;
    d.dt_max = c.dt_max;
    d.norm_eps = c.norm_eps;
    return d;
}

template <class T>
std::vector<T> from_double(const std::vector<double>& v) {
    return std::vector<T>(v.begin(), v.end());
}

// Visits each library parameter with the oracle's vector of the same tensor: the one pairing of
// names that every loader of oracle weights (CPU here, the rounded GPU one in tests/cuda) uses.
template <class Params, class Weights, class F>
void for_each_weight(Params& p, Weights& w, F&& put) {
    put(p.in_proj, w.in_proj);
    put(p.conv_weight, w.conv_w);
    put(p.conv_bias, w.conv_b);
    put(p.dt_bias, w.dt_bias);
    put(p.A_log, w.A_log);
    put(p.D, w.D);
    put(p.norm_weight, w.norm_w);
    put(p.out_proj, w.out_proj);
}

// Copies the oracle's weights into a CPU mixer's parameters (host memory).
template <class Params>
void load_weights(Params& p, const reference::mixer_weights& w) {
    for_each_weight(p, w, [](auto& buf, const std::vector<double>& src) {
        REQUIRE(buf.size() == src.size());
        for (std::size_t i = 0; i < src.size(); ++i) buf.data()[i] = static_cast<typename Params::value_type>(src[i]);
    });
}

// The relative-error bound each precision is held to against the float64 oracle.
template <class T>
constexpr double tolerance() {
    return std::is_same_v<T, double> ? 1e-11 : 2e-5;
}

inline mixer_config small_config(index_t d_model, index_t headdim, index_t d_state, index_t ngroups,
                                 index_t chunk = 16) {
    mixer_config c;
    c.d_model = d_model;
    c.expand = 2;
    c.headdim = headdim;
    c.d_state = d_state;
    c.ngroups = ngroups;
    c.chunk_size = chunk;
    return c;
}

}  // namespace transmamba::testing
