// block/stack.hpp: stacks of blocks (SPEC.md section 7) against a composition of oracle blocks and
// the final reference::rmsnorm; TransPoint layer indices count only TransMamba blocks; parameter
// names are the checkpoint's; a failing policy leaves the output untouched.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include "support/fixtures.hpp"

#include <string>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_block_stack {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

model_config stack_config(index_t num_layers, index_t d_ff) {
    model_config m;
    m.mixer = small_config(32, 16, 32, 2, 16);  // 4 heads, 2 groups
    m.d_ff = d_ff;
    m.num_layers = num_layers;
    return m;
}

// Random weights for every block of a stack, by checkpoint name, and the oracle's view of them.
struct stack_weights {
    std::vector<reference::mixer_weights> mixers;
    std::vector<std::vector<double>> mixer_norms;
    std::vector<reference::mlp_weights> mlps;
    std::vector<double> norm_f;
    named_tensors tensors;
};

template <class T>
stack_weights make_weights(const model_config& cfg, bool with_mlp, std::uint64_t seed) {
    stack_weights s;
    const auto d = to_dims(cfg.mixer, 1, 1);
    index_t block = 0;
    for (index_t i = 0; i < cfg.num_layers; ++i) {
        s.mixers.push_back(rounded<T>(reference::random_weights(d, seed + 10 * std::uint64_t(i))));
        s.mixer_norms.push_back(
            rounded<T>(reference::random_vector(std::size_t(cfg.mixer.d_model), seed + 10 * std::uint64_t(i) + 1, 0.5, 1.5)));
        const std::string prefix = "layers." + std::to_string(block++) + ".";
        s.tensors[prefix + "norm.weight"] = s.mixer_norms.back();
        add_mixer_tensors(s.tensors, prefix + "mixer.", s.mixers.back());
        if (with_mlp) {
            s.mlps.push_back(random_mlp_weights<T>(cfg.mixer.d_model, cfg.d_ff, seed + 10 * std::uint64_t(i) + 2));
            add_mlp_tensors(s.tensors, "layers." + std::to_string(block++) + ".", s.mlps.back());
        }
    }
    s.norm_f = rounded<T>(reference::random_vector(std::size_t(cfg.mixer.d_model), seed + 999, 0.5, 1.5));
    s.tensors["norm_f.weight"] = s.norm_f;
    return s;
}

// The oracle: blocks in order, the i-th TransMamba block at points[i], then norm_f.
std::vector<double> oracle_stack(const model_config& cfg, const stack_weights& w, const std::vector<double>& u,
                                 index_t batch, index_t L, const std::vector<index_t>& points) {
    const auto d = to_dims(cfg.mixer, batch, L);
    auto h = u;
    for (std::size_t i = 0; i < w.mixers.size(); ++i) {
        h = reference::residual_block(d, {}, w.mixers[i], w.mixer_norms[i], h, int(points[i]));
        if (!w.mlps.empty())
            h = reference::mlp_block(w.mlps[i], d.d_model, int(cfg.d_ff), d.norm_eps, h, int(batch * L));
    }
    return reference::rmsnorm(h, w.norm_f, d.d_model, d.norm_eps);
}

template <class Stack, class Policy>
std::vector<double> run_stack(const Stack& s, const std::vector<double>& u, index_t batch, index_t L,
                              const Policy& policy) {
    using T = typename Stack::value_type;
    const auto ut = to_vector<T>(u);
    std::vector<T> out(ut.size(), nan_value<T>());
    workspace<cpu> ws;
    const index_t d = s.config().mixer.d_model;
    s.forward(tensor_view<const T, 3>(ut.data(), {batch, L, d}), tensor_view<T, 3>(out.data(), {batch, L, d}), policy, ws);
    return reference::to_double(out);
}

}  // namespace

TEST_CASE_TEMPLATE("stack<paper_pattern> matches oracle blocks + norm_f, P per TransMamba layer", T, float, double) {
    const auto cfg = stack_config(3, 64);
    const index_t batch = 2, L = 30;
    const auto w = make_weights<T>(cfg, true, 100);
    stack<T, cpu, paper_pattern> s(cfg);
    load_by_name(s, w.tensors);
    CHECK(s.num_blocks() == 6);
    CHECK(s.num_transpoint_layers() == 3);
    const auto u = rounded<T>(reference::random_vector(std::size_t(batch * L * 32), 101, -2.0, 2.0));
    // TransMamba layers 0, 1, 2 take 0, 5, 17 (17: inside the second chunk). Were the layer index
    // to count the MLP blocks too, blocks 0, 2, 4 would take table[0], table[2], table[4 mod 3].
    const cyclic_transpoints policy{0, 5, 17};
    const auto want = oracle_stack(cfg, w, u, batch, L, {0, 5, 17});
    const auto got = run_stack(s, u, batch, L, policy);
    CHECK(reference::max_relative_error(got, want) <= tolerance<T>());
    // the miscounted schedule gives a different result, so the check above can tell them apart
    const auto miscounted = oracle_stack(cfg, w, u, batch, L, {0, 17, 5});
    CHECK(reference::max_relative_error(miscounted, want) > 1e-4);
}

TEST_CASE_TEMPLATE("stack<mamba2_pattern> matches oracle blocks + norm_f, cyclic P with P > L", T, float, double) {
    const auto cfg = stack_config(3, 0);
    const index_t batch = 1, L = 40;
    const auto w = make_weights<T>(cfg, false, 200);
    stack<T, cpu, mamba2_pattern> s(cfg);
    load_by_name(s, w.tensors);
    CHECK(s.num_blocks() == 3);
    CHECK(s.num_transpoint_layers() == 3);
    const auto u = rounded<T>(reference::random_vector(std::size_t(batch * L * 32), 201, -2.0, 2.0));
    // a table shorter than the stack (layer 2 wraps to table[0]) holding a P beyond L
    const cyclic_transpoints policy{23, 100};
    const auto want = oracle_stack(cfg, w, u, batch, L, {23, 40, 23});
    CHECK(reference::max_relative_error(run_stack(s, u, batch, L, policy), want) <= tolerance<T>());
    // and the all-SSM policy gives the Mamba2 model
    const auto mamba2 = oracle_stack(cfg, w, u, batch, L, {0, 0, 0});
    CHECK(reference::max_relative_error(run_stack(s, u, batch, L, all_ssm{}), mamba2) <= tolerance<T>());
    CHECK(reference::max_relative_error(mamba2, want) > 1e-4);
}

TEST_CASE("stack: paper_pattern parameter names and shapes, exactly") {
    stack<float, cpu, paper_pattern> s(stack_config(2, 64));
    std::vector<visited_parameter> got;
    s.for_each_parameter([&](const auto& name, auto&, const std::vector<index_t>& shape) {
        got.push_back({std::string(std::string_view(name)), shape});
    });
    // d_model 32, d_inner 64, 4 heads, 2 groups of d_state 32: d_in_proj 260, conv_dim 192
    const std::vector<visited_parameter> want = {
        {"layers.0.norm.weight", {32}},
        {"layers.0.mixer.in_proj.weight", {260, 32}},
        {"layers.0.mixer.conv1d.weight", {192, 1, 4}},
        {"layers.0.mixer.conv1d.bias", {192}},
        {"layers.0.mixer.dt_bias", {4}},
        {"layers.0.mixer.A_log", {4}},
        {"layers.0.mixer.D", {4}},
        {"layers.0.mixer.norm.weight", {64}},
        {"layers.0.mixer.out_proj.weight", {32, 64}},
        {"layers.1.norm.weight", {32}},
        {"layers.1.mlp.gate_proj.weight", {64, 32}},
        {"layers.1.mlp.up_proj.weight", {64, 32}},
        {"layers.1.mlp.down_proj.weight", {32, 64}},
        {"layers.2.norm.weight", {32}},
        {"layers.2.mixer.in_proj.weight", {260, 32}},
        {"layers.2.mixer.conv1d.weight", {192, 1, 4}},
        {"layers.2.mixer.conv1d.bias", {192}},
        {"layers.2.mixer.dt_bias", {4}},
        {"layers.2.mixer.A_log", {4}},
        {"layers.2.mixer.D", {4}},
        {"layers.2.mixer.norm.weight", {64}},
        {"layers.2.mixer.out_proj.weight", {32, 64}},
        {"layers.3.norm.weight", {32}},
        {"layers.3.mlp.gate_proj.weight", {64, 32}},
        {"layers.3.mlp.up_proj.weight", {64, 32}},
        {"layers.3.mlp.down_proj.weight", {32, 64}},
        {"norm_f.weight", {32}},
    };
    CHECK(got == want);
}

TEST_CASE("stack: mamba2_pattern parameter names, exactly") {
    stack<double, cpu, mamba2_pattern> s(stack_config(2, 0));
    std::vector<std::string> got;
    s.for_each_parameter([&](const auto& name, auto&, const std::vector<index_t>&) {
        got.emplace_back(std::string_view(name));
    });
    const std::vector<std::string> want = {
        "layers.0.norm.weight",         "layers.0.mixer.in_proj.weight", "layers.0.mixer.conv1d.weight",
        "layers.0.mixer.conv1d.bias",   "layers.0.mixer.dt_bias",        "layers.0.mixer.A_log",
        "layers.0.mixer.D",             "layers.0.mixer.norm.weight",    "layers.0.mixer.out_proj.weight",
        "layers.1.norm.weight",         "layers.1.mixer.in_proj.weight", "layers.1.mixer.conv1d.weight",
        "layers.1.mixer.conv1d.bias",   "layers.1.mixer.dt_bias",        "layers.1.mixer.A_log",
        "layers.1.mixer.D",             "layers.1.mixer.norm.weight",    "layers.1.mixer.out_proj.weight",
        "norm_f.weight",
    };
    CHECK(got == want);
}

TEST_CASE("stack: a policy that throws leaves out untouched") {
    const auto cfg = stack_config(2, 64);
    const auto w = make_weights<float>(cfg, true, 300);
    stack<float, cpu, paper_pattern> s(cfg);
    load_by_name(s, w.tensors);
    const index_t L = 12;
    const auto u = to_vector<float>(reference::random_vector(std::size_t(L * 32), 301));
    const float sentinel = -777.25f;
    std::vector<float> out(u.size(), sentinel);
    workspace<cpu> ws;
    const tensor_view<const float, 3> uv(u.data(), {1, L, 32});
    const tensor_view<float, 3> ov(out.data(), {1, L, 32});
    // two TransMamba layers, one entry: layer 1 is past the end
    CHECK_THROWS_WITH_AS(s.forward(uv, ov, per_layer_transpoints{4}, ws),
                         doctest::Contains("per_layer_transpoints has 1 entries, layer 1 was asked for"), error);
    CHECK(all_equal(out, sentinel));
    // a negative P for the second layer names it
    CHECK_THROWS_WITH_AS(s.forward(uv, ov, per_layer_transpoints{4, -2}, ws), doctest::Contains("for layer 1"), error);
    CHECK(all_equal(out, sentinel));
    // mismatched shapes
    std::vector<float> small(u.size(), sentinel);  // room for L rows, viewed as L - 1
    CHECK_THROWS_WITH_AS(s.forward(uv, tensor_view<float, 3>(small.data(), {1, L - 1, 32}), all_ssm{}, ws),
                         doctest::Contains("tensor 'out'"), error);
    CHECK(all_equal(small, sentinel));
    // a good policy then runs (two entries: exactly enough, since MLP blocks take none)
    CHECK_NOTHROW(s.forward(uv, ov, per_layer_transpoints{4, 7}, ws));
    CHECK_FALSE(all_equal(out, sentinel));
}

}  // namespace test_block_stack
