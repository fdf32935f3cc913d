// Layer-level hybrid checkpoints written by transformers 5.17 (tests/data/make_hybrid_fixtures.py,
// run on the GPU machine with torch 2.11, on its CPU): Nemotron-H (Mamba2 with n_groups 2,
// attention without RoPE, relu^2 MLP layers), Bamba (attention with partial RoPE, SwiGLU MLPs) and
// the dense Granite 4.0 hybrid (full RoPE, embedding / residual / attention / logits multipliers,
// tied LM head, fused MLP input). Each loads and its float32 logits match transformers' float32
// logits (1e-4 relative to the largest logit), its float64 logits transformers' float64 forward;
// decoding (prefill + steps) gives the forward pass's logits, also with TransPoints on the Mamba2
// layers. Skipped with a message where a fixture directory is absent.
#include <doctest/doctest.h>

#include <transmamba/decode/session.hpp>
#include <transmamba/io.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "support/error_of.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_io_hybrid_fixtures {

using namespace transmamba;
namespace fs = std::filesystem;

namespace {

const fs::path data_dir = TRANSMAMBA_TEST_DATA_DIR;

template <class Model, class Policy>
std::vector<double> forward_logits(const Model& model, const std::vector<std::int64_t>& ids, index_t batch, index_t L,
                                   const Policy& policy) {
    using L_t = typename Model::logits_type;
    std::vector<L_t> logits(static_cast<std::size_t>(batch * L * model.vocab_size()));
    workspace<cpu> ws;
    model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}),
                  tensor_view<L_t, 3>(logits.data(), {batch, L, model.vocab_size()}), policy, ws);
    return std::vector<double>(logits.begin(), logits.end());
}

// max |a - b| / max |b|; NaN (and so a failed bound) when a holds a NaN.
double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
    REQUIRE(a.size() == b.size());
    double most = 0.0, scale = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const double d = std::abs(a[i] - b[i]);
        if (std::isnan(d)) return d;
        most = std::max(most, d);
        scale = std::max(scale, std::abs(b[i]));
    }
    return most / scale;
}

// Prefill of the first `prompt` tokens of sequence 0, then one step per token: every position's
// logits against the forward pass's.
template <class Model, class Policy>
double decode_error(const Model& model, const std::vector<std::int64_t>& ids, index_t L, index_t prompt,
                    const Policy& policy, const std::vector<double>& forward) {
    const index_t V = model.vocab_size();
    inference_session<Model> session(model, policy, L);
    std::vector<typename Model::logits_type> all;
    (void)session.prefill(std::span<const std::int64_t>(ids.data(), static_cast<std::size_t>(prompt)), &all);
    std::vector<double> decoded(all.begin(), all.end());
    for (index_t t = prompt; t < L; ++t) {
        const auto step = session.step(ids[static_cast<std::size_t>(t)]);
        decoded.insert(decoded.end(), step.begin(), step.end());
    }
    const std::vector<double> first(forward.begin(), forward.begin() + L * V);
    return relative_error(decoded, first);
}

struct fixture {
    const char* name;
    hybrid_architecture architecture;
    index_t mamba_layers;
    index_t attention_layers;
};

void check_fixture(const fixture& fx) {
    const std::string name = fx.name;
    CAPTURE(name);
    const fs::path dir = data_dir / fx.name;
    if (!fs::exists(dir / "model.safetensors")) {
        MESSAGE("skipped: fixture ", dir.string(), " is absent (tests/data/make_hybrid_fixtures.py makes it)");
        return;
    }
    const auto f = load_hybrid_checkpoint<float, cpu>(dir);
    const auto d = load_hybrid_checkpoint<double, cpu>(dir);
    CHECK(f.config.architecture == fx.architecture);
    CHECK(f.model.num_transpoint_layers() == fx.mamba_layers);
    CHECK(f.model.backbone().num_attention_layers() == fx.attention_layers);
    CHECK(!f.has_schedule);

    const safetensors_file expected(dir / "expected.safetensors");
    const auto& ids_info = expected.at("input_ids");
    REQUIRE(ids_info.shape.size() == 2);
    const index_t batch = ids_info.shape[0], L = ids_info.shape[1];
    const auto ids = expected.read<std::int64_t>("input_ids");
    const auto want32 = expected.read<double>("logits");
    const auto want64 = expected.read<double>("logits_f64");

    const auto got32 = forward_logits(f.model, ids, batch, L, f.schedule);
    const auto got64 = forward_logits(d.model, ids, batch, L, d.schedule);
    const double err32 = relative_error(got32, want32), err64 = relative_error(got64, want64);
    MESSAGE(name, ": float vs transformers float32 ", err32, ", double vs transformers float64 ", err64);
    CHECK(err32 < 1e-4);
    CHECK(err64 < 1e-6);  // transformers' float64 Mamba2 path keeps some float32 steps (docs/checkpoints.md)

    // Decoding equals the forward pass, at P = 0 and with TransPoints on the Mamba2 layers.
    CHECK(decode_error(d.model, ids, L, 5, d.schedule, got64) < 1e-12);
    const auto p7 = forward_logits(d.model, ids, batch, L, fixed_transpoint{7});
    CHECK(relative_error(p7, got64) > 1e-3);  // the schedule changes the Mamba2 layers
    CHECK(decode_error(d.model, ids, L, 3, fixed_transpoint{7}, p7) < 1e-12);
    CHECK(decode_error(f.model, ids, L, 1, f.schedule, got32) < 1e-5);

    // transformers' own greedy generate() (its decoding with its cache), where the fixture has one.
    if (expected.find("generated") != nullptr) {
        const auto generated = expected.read<std::int64_t>("generated");
        const index_t prompt = 5, total = static_cast<index_t>(generated.size());
        REQUIRE(total > prompt);
        inference_session<decltype(f.model)> session(f.model, f.schedule, total);
        auto logits = session.prefill(std::span<const std::int64_t>(generated.data(), static_cast<std::size_t>(prompt)));
        std::vector<std::int64_t> ours(generated.begin(), generated.begin() + prompt);
        while (static_cast<index_t>(ours.size()) < total) {
            ours.push_back(static_cast<std::int64_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
            if (static_cast<index_t>(ours.size()) < total) logits = session.step(ours.back());
        }
        CHECK(ours == generated);
    }
}

}  // namespace

TEST_CASE("hybrid fixtures: Nemotron-H loads and matches transformers") {
    check_fixture({"nemotron_h_tiny", hybrid_architecture::nemotron_h, 2, 1});
    // transformers' torch path floors dt at time_step_min (1e-3), its mamba_ssm path does not; the
    // fixture's dt reach below it, so following the kernels instead is visible in the logits.
    const fs::path dir = data_dir / "nemotron_h_tiny";
    if (!fs::exists(dir / "model.safetensors")) return;
    hybrid_load_options kernels;
    kernels.nemotron_dt_floor_at_time_step_min = false;
    const auto floored = load_hybrid_checkpoint<double, cpu>(dir);
    const auto unfloored = load_hybrid_checkpoint<double, cpu>(dir, kernels);
    CHECK(floored.model.config().backbone.mixer.dt_min == 1e-3);
    CHECK(unfloored.model.config().backbone.mixer.dt_min == 0.0);
    const safetensors_file expected(dir / "expected.safetensors");
    const auto ids = expected.read<std::int64_t>("input_ids");
    const auto want = expected.read<double>("logits_f64");
    CHECK(relative_error(forward_logits(unfloored.model, ids, 2, 12, unfloored.schedule), want) > 1e-4);
}
// Falcon-H1 (attention and Mamba2 in parallel in every layer, every muP multiplier != 1):
// falcon_h1_tiny as the released models (no Mamba norm, mamba_d_ssm 1.5 x hidden_size, head_dim
// != hidden / heads), and the two placements of mamba_rms_norm (before the gate, tied embeddings;
// after the gate).
TEST_CASE("hybrid fixtures: Falcon-H1 loads and matches transformers") {
    check_fixture({"falcon_h1_tiny", hybrid_architecture::falcon_h1, 3, 3});
    check_fixture({"falcon_h1_norm_before_gate_tiny", hybrid_architecture::falcon_h1, 2, 2});
    check_fixture({"falcon_h1_norm_after_gate_tiny", hybrid_architecture::falcon_h1, 2, 2});
}
TEST_CASE("hybrid fixtures: Bamba loads and matches transformers") {
    check_fixture({"bamba_tiny", hybrid_architecture::bamba, 2, 1});
}
TEST_CASE("hybrid fixtures: Granite 4.0 hybrid (dense) loads and matches transformers") {
    check_fixture({"granite_hybrid_tiny", hybrid_architecture::granite_hybrid, 2, 1});
}

}  // namespace test_io_hybrid_fixtures
