#pragma once
// Random weights in the ranges a trained Mamba2 / TransMamba model has, for examples, benchmarks,
// tests and `transmamba init`: projections ~ U(-1, 1) / sqrt(fan_in), the conv ~ U(-0.5, 0.5) with a
// small bias, dt = softplus(dt_bias) log-uniform in [1e-3, 1e-1], A = exp(A_log) in [1, 16], D and
// the norm weights in [0.5, 1.5), embeddings ~ U(-1, 1). One rule per checkpoint name, used by every
// module that lists its parameters.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "transmamba/backend/traits.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

// The value of parameter `name` (a checkpoint name, with or without a prefix) for r in [0, 1).
inline double trained_parameter_value(std::string_view name, double fan_in, double r) {
    const auto is = [&](std::string_view leaf) {
        return name == leaf || (name.size() > leaf.size() && name.ends_with(leaf) && name[name.size() - leaf.size() - 1] == '.');
    };
    if (is("embeddings.weight")) return 2 * r - 1;
    if (is("conv1d.weight")) return r - 0.5;
    if (is("conv1d.bias")) return 0.2 * (r - 0.5);
    if (is("dt_bias")) {
        const double dt = std::exp(std::log(1e-3) + r * (std::log(1e-1) - std::log(1e-3)));
        return dt + std::log(-std::expm1(-dt));  // inverse softplus
    }
    if (is("A_log")) return std::log(1.0 + 15.0 * r);
    if (is("D") || is("norm.weight") || is("norm_f.weight") || is("mlp_norm.weight")) return 0.5 + r;
    return (2 * r - 1) / std::sqrt(fan_in);  // in_proj, out_proj, the MLP, lm_head
}

// Fills one parameter buffer of `Backend` by that rule.
template <class Backend, class Buffer>
void fill_trained_range(Buffer& buf, std::string_view name, const std::vector<index_t>& shape, std::mt19937_64& rng) {
    using T = std::remove_cvref_t<decltype(*buf.data())>;
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    const double fan_in = shape.size() >= 2 ? static_cast<double>(shape.back()) : 1.0;
    std::vector<T> host(buf.size());
    for (auto& v : host) v = static_cast<T>(trained_parameter_value(name, fan_in, unit(rng)));
    backend_traits<Backend>::copy_from_host(host.data(), buf.data(), host.size(), {});
}

// A module that lists its parameters as (name, buffer, shape): blocks, stacks, language models.
struct parameter_visitor_probe {
    template <class Name, class Buffer>
    void operator()(const Name&, Buffer&, const std::vector<index_t>&) const {}
};
template <class Module>
concept named_parameter_module = requires(Module& m) {
    typename Module::backend;
    m.for_each_parameter(parameter_visitor_probe{});
};

template <named_parameter_module Module>
void randomize(Module& parameters_owner, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    parameters_owner.for_each_parameter([&](const auto& name, auto& buf, const std::vector<index_t>& shape) {
        fill_trained_range<typename Module::backend>(buf, std::string_view(name), shape, rng);
    });
    backend_traits<typename Module::backend>::synchronize({});
}

}  // namespace transmamba
