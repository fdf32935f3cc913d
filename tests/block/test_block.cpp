// block/block.hpp: mixer_block (u + mixer(rmsnorm(u) * norm.weight)) against
// reference::residual_block, mlp_block (SwiGLU) against reference::mlp_block, both loaded through
// for_each_parameter by checkpoint name (SPEC.md section 7).
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include "support/fixtures.hpp"

#include <array>
#include <string>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_block_block {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

model_config block_config(index_t d_model, index_t headdim, index_t d_state, index_t ngroups, index_t chunk,
                          index_t d_ff = 0) {
    model_config m;
    m.mixer = small_config(d_model, headdim, d_state, ngroups, chunk);
    m.d_ff = d_ff;
    return m;
}

// Runs a block in place on a copy of u (as T) and returns the result as doubles.
template <class Block>
std::vector<double> run_block(const Block& block, const std::vector<double>& u, extents<3> shape, index_t P) {
    using T = typename Block::value_type;
    auto hidden = to_vector<T>(u);
    workspace<cpu> ws;
    block.forward(tensor_view<T, 3>(hidden.data(), shape), P, ws.reserve(block.workspace_bytes(shape[0], shape[1])));
    return reference::to_double(hidden);
}

}  // namespace

TEST_CASE_TEMPLATE("mixer_block matches reference::residual_block", T, float, double) {
    struct block_case {
        index_t d_model, headdim, d_state, ngroups, chunk, batch, L;
    };
    std::uint64_t seed = 1;
    for (const auto& c : {block_case{32, 16, 32, 2, 16, 2, 40}, block_case{64, 64, 64, 1, 64, 1, 70},
                          block_case{32, 16, 16, 4, 16, 3, 9}}) {
        CAPTURE(c.d_model);
        CAPTURE(c.ngroups);
        CAPTURE(c.L);
        const auto cfg = block_config(c.d_model, c.headdim, c.d_state, c.ngroups, c.chunk);
        const auto d = to_dims(cfg.mixer, c.batch, c.L);
        const auto w = rounded<T>(reference::random_weights(d, seed += 10));
        const auto norm_w = rounded<T>(reference::random_vector(std::size_t(c.d_model), seed + 1, 0.5, 1.5));
        // hidden states of a larger scale than 1, as deep in a model: the RMSNorm must undo it
        const auto u = rounded<T>(reference::random_vector(std::size_t(c.batch * c.L * c.d_model), seed + 2, -4.0, 4.0));
        mixer_block<T, cpu> block(cfg);
        named_tensors tensors{{"norm.weight", norm_w}};
        add_mixer_tensors(tensors, "mixer.", w);
        load_by_name(block, tensors);
        for (index_t P : {index_t(0), index_t(5), c.chunk + 3, c.L}) {
            CAPTURE(P);
            const auto want = reference::residual_block(d, {}, w, norm_w, u, int(P));
            const auto got = run_block(block, u, {c.batch, c.L, c.d_model}, P);
            CHECK(reference::max_relative_error(got, want) <= tolerance<T>());
            // the mixer's contribution is not negligible next to the residual (so the check can fail)
            CHECK(reference::max_relative_error(u, want) > 1e-3);
        }
    }
}

TEST_CASE_TEMPLATE("mixer_block with z_gated_attention matches the oracle's gated variant", T, float, double) {
    const auto cfg = block_config(32, 16, 32, 2, 16);
    const auto d = to_dims(cfg.mixer, 2, 30);
    const auto w = rounded<T>(reference::random_weights(d, 100));
    const auto norm_w = rounded<T>(reference::random_vector(32, 101, 0.5, 1.5));
    const auto u = rounded<T>(reference::random_vector(2 * 30 * 32, 102));
    mixer_block<T, cpu, paper_policies::with_attention<z_gated_attention>> block(cfg);
    named_tensors tensors{{"norm.weight", norm_w}};
    add_mixer_tensors(tensors, "mixer.", w);
    load_by_name(block, tensors);
    reference::variant var;
    var.gate_attention = true;
    const auto want = reference::residual_block(d, var, w, norm_w, u, 21);
    CHECK(reference::max_relative_error(run_block(block, u, {2, 30, 32}, 21), want) <= tolerance<T>());
}

TEST_CASE_TEMPLATE("mixer_block returns the mixer's final state", T, float, double) {
    const auto cfg = block_config(32, 16, 32, 2, 16);
    const auto d = to_dims(cfg.mixer, 2, 30);
    const auto w = rounded<T>(reference::random_weights(d, 200));
    const auto norm_w = rounded<T>(reference::random_vector(32, 201, 0.5, 1.5));
    const auto u = rounded<T>(reference::random_vector(2 * 30 * 32, 202));
    mixer_block<T, cpu> block(cfg);
    named_tensors tensors{{"norm.weight", norm_w}};
    add_mixer_tensors(tensors, "mixer.", w);
    load_by_name(block, tensors);
    const auto hn = reference::rmsnorm(u, norm_w, 32, d.norm_eps);
    const auto want = reference::mixer_forward(d, {}, w, hn, 11);
    auto hidden = to_vector<T>(u);
    std::vector<T> fs(std::size_t(2 * 4 * 16 * 32), nan_value<T>());
    workspace<cpu> ws;
    block.forward(tensor_view<T, 3>(hidden.data(), {2, 30, 32}), 11, ws.reserve(block.workspace_bytes(2, 30)),
                  {{}, tensor_view<T, 4>(fs.data(), {2, 4, 16, 32})});
    CHECK(reference::max_relative_error(reference::to_double(fs), want.final_state) <= tolerance<T>());
}

TEST_CASE("mixer_block: parameter names and shapes, in order") {
    const auto cfg = block_config(32, 16, 32, 2, 16);  // d_inner 64, 4 heads, conv_dim 64 + 128
    mixer_block<float, cpu> block(cfg);
    std::vector<visited_parameter> got;
    block.for_each_parameter([&](const auto& name, auto&, const std::vector<index_t>& shape) {
        got.push_back({std::string(std::string_view(name)), shape});
    });
    const std::vector<visited_parameter> want = {
        {"norm.weight", {32}},
        {"mixer.in_proj.weight", {2 * 64 + 2 * 2 * 32 + 4, 32}},
        {"mixer.conv1d.weight", {192, 1, 4}},
        {"mixer.conv1d.bias", {192}},
        {"mixer.dt_bias", {4}},
        {"mixer.A_log", {4}},
        {"mixer.D", {4}},
        {"mixer.norm.weight", {64}},
        {"mixer.out_proj.weight", {32, 64}},
    };
    CHECK(got == want);
}

TEST_CASE("mixer_block: a short workspace or a wrong hidden size is an error, hidden untouched") {
    const auto cfg = block_config(32, 16, 32, 2, 16);
    mixer_block<float, cpu> block(cfg);
    randomize(block.mixer_layer().params(), 7);
    std::vector<float> hidden(2 * 10 * 32, 0.5f);
    const std::size_t need = block.workspace_bytes(2, 10);
    std::vector<std::byte> storage(need);
    CHECK_THROWS_WITH_AS(block.forward(tensor_view<float, 3>(hidden.data(), {2, 10, 32}), 3,
                                       workspace_span{storage.data(), need - 1}),
                         doctest::Contains("workspace too small"), error);
    CHECK(all_equal(hidden, 0.5f));
    CHECK_THROWS_WITH_AS(block.forward(tensor_view<float, 3>(hidden.data(), {2, 20, 16}), 3,
                                       workspace_span{storage.data(), need}),
                         doctest::Contains("tensor 'hidden'"), error);
    CHECK(all_equal(hidden, 0.5f));
    // a NaN in the hidden states is caught before anything is added, and named as the block's input
    hidden[5] = nan_value<float>();
    CHECK_THROWS_WITH_AS(block.forward(tensor_view<float, 3>(hidden.data(), {2, 10, 32}), 3,
                                       workspace_span{storage.data(), need}),
                         doctest::Contains("tensor 'hidden' holds a non-finite value at flat index 5"), error);
    hidden[5] = 0.5f;
    CHECK(all_equal(hidden, 0.5f));
}

TEST_CASE_TEMPLATE("mlp_block matches reference::mlp_block", T, float, double) {
    std::uint64_t seed = 300;
    for (auto [d_model, d_ff, batch, L] : {std::array<index_t, 4>{32, 96, 2, 17}, std::array<index_t, 4>{16, 40, 1, 1},
                                           std::array<index_t, 4>{64, 128, 3, 9}}) {
        CAPTURE(d_model);
        CAPTURE(d_ff);
        const auto cfg = block_config(d_model, 16, 16, 1, 16, d_ff);
        const auto mw = random_mlp_weights<T>(d_model, d_ff, seed += 10);
        const auto u = rounded<T>(reference::random_vector(std::size_t(batch * L * d_model), seed + 1, -3.0, 3.0));
        mlp_block<T, cpu> block(cfg);
        named_tensors tensors;
        add_mlp_tensors(tensors, "", mw);
        load_by_name(block, tensors);
        const auto want = reference::mlp_block(mw, int(d_model), int(d_ff), cfg.mixer.norm_eps, u, int(batch * L));
        const auto got = run_block(block, u, {batch, L, d_model}, 0);
        CHECK(reference::max_relative_error(got, want) <= tolerance<T>());
        CHECK(reference::max_relative_error(u, want) > 1e-3);
    }
}

TEST_CASE("mlp_block: parameter names and shapes, and d_ff = 0 is an error") {
    const auto cfg = block_config(32, 16, 16, 1, 16, 96);
    mlp_block<double, cpu> block(cfg);
    std::vector<visited_parameter> got;
    block.for_each_parameter([&](const auto& name, auto&, const std::vector<index_t>& shape) {
        got.push_back({std::string(std::string_view(name)), shape});
    });
    const std::vector<visited_parameter> want = {
        {"norm.weight", {32}},
        {"mlp.gate_proj.weight", {96, 32}},
        {"mlp.up_proj.weight", {96, 32}},
        {"mlp.down_proj.weight", {32, 96}},
    };
    CHECK(got == want);
    using mlp = mlp_block<double, cpu>;
    CHECK_THROWS_WITH_AS(mlp(block_config(32, 16, 16, 1, 16, 0)), doctest::Contains("d_ff > 0"), error);
}

}  // namespace test_block_block
