#pragma once
// The owning parameters of one TransMamba mixer, named and shaped as a Mamba2 checkpoint names them
// (SPEC.md section 2), so that a P = 0 layer loads a Mamba2 layer unchanged.
#include <cmath>
#include <cstdint>
#include <random>
#include <string_view>
#include <vector>

#include "transmamba/backend/traits.hpp"
#include "transmamba/block/random_init.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

template <class T, class Backend>
struct mixer_params {
    using value_type = T;
    using backend = Backend;
    using buffer = typename backend_traits<Backend>::template buffer<T>;

    mixer_config config;
    buffer in_proj;      // in_proj.weight   (d_in_proj, d_model): rows [z, x, B, C, dt]
    buffer conv_weight;  // conv1d.weight    (conv_dim, 1, d_conv)
    buffer conv_bias;    // conv1d.bias      (conv_dim)
    buffer dt_bias;      // dt_bias          (nheads)
    buffer A_log;        // A_log            (nheads)
    buffer D;            // D                (nheads)
    buffer norm_weight;  // norm.weight      (d_inner)
    buffer out_proj;     // out_proj.weight  (d_model, d_inner)

    explicit mixer_params(const mixer_config& cfg) : config(cfg) {
        config.validate();
        for_each([](std::string_view, buffer& b, const std::vector<index_t>& shape) { b.resize(count(shape)); });
    }

    // Visits every parameter as (checkpoint name, buffer, shape): the one list that loaders, savers,
    // initialisers and checks all walk.
    template <class F>
    void for_each(F&& f) {
        visit(*this, f);
    }
    template <class F>
    void for_each(F&& f) const {
        visit(*this, f);
    }

    static std::size_t count(const std::vector<index_t>& shape) {
        std::size_t n = 1;
        for (auto e : shape) n *= static_cast<std::size_t>(e);
        return n;
    }

private:
    template <class Self, class F>
    static void visit(Self& self, F& f) {
        const auto& c = self.config;
        f("in_proj.weight", self.in_proj, std::vector<index_t>{c.d_in_proj(), c.d_model});
        f("conv1d.weight", self.conv_weight, std::vector<index_t>{c.conv_dim(), 1, c.d_conv});
        f("conv1d.bias", self.conv_bias, std::vector<index_t>{c.conv_dim()});
        f("dt_bias", self.dt_bias, std::vector<index_t>{c.nheads()});
        f("A_log", self.A_log, std::vector<index_t>{c.nheads()});
        f("D", self.D, std::vector<index_t>{c.nheads()});
        if (c.norm_placement != gated_norm::none) f("norm.weight", self.norm_weight, std::vector<index_t>{c.d_inner()});
        f("out_proj.weight", self.out_proj, std::vector<index_t>{c.d_model, c.d_inner()});
    }
};

// Reads a backend buffer into host memory (a copy for device backends, a copy on the host too, so
// that callers never alias parameters by accident).
template <class Backend, class Buffer>
auto to_host(const Buffer& buf, const typename backend_traits<Backend>::context& ctx = {}) {
    using T = std::remove_cvref_t<decltype(*buf.data())>;
    std::vector<T> host(buf.size());
    backend_traits<Backend>::copy_to_host(buf.data(), host.data(), buf.size(), ctx);
    backend_traits<Backend>::synchronize(ctx);
    return host;
}

// Throws naming the first parameter that holds a NaN or an infinity, with the element's index.
// Runs on the caller's stream: a check on the legacy default stream would not be ordered after a
// caller's non-blocking stream that wrote the weights.
template <class Params>
void check_finite(const Params& params, std::string_view owner = "mixer",
                  const typename backend_traits<typename Params::backend>::context& ctx = {}) {
    using traits = backend_traits<typename Params::backend>;
    params.for_each([&](std::string_view name, const auto& buf, const std::vector<index_t>&) {
        const index_t bad = traits::first_non_finite(ctx, buf.data(), buf.size());
        require(bad < 0, owner, " parameter '", name, "' holds a non-finite value at flat index ", bad);
    });
}

// Random weights in the ranges a trained Mamba2 layer has (block/random_init.hpp says which).
template <class T, class Backend>
void randomize(mixer_params<T, Backend>& params, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    params.for_each([&](std::string_view name, auto& buf, const std::vector<index_t>& shape) {
        fill_trained_range<Backend>(buf, name, shape, rng);
    });
    backend_traits<Backend>::synchronize({});
}

}  // namespace transmamba
