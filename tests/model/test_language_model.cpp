// model/language_model.hpp: embeddings, the stack and the LM head against a float64 oracle composed
// from tests/reference (embedding rows, reference::residual_block per layer with the paper's variant,
// reference::rmsnorm for norm_f, the LM-head product) at several TransPoints and schedules; token id
// checks; parameter names as transformers writes them.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "reference/reference.hpp"
#include "support/bridge.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_model_language_model {

using namespace transmamba;

namespace {

language_model_config small_lm(index_t ngroups, bool tied, index_t layers = 3) {
    language_model_config c;
    c.backbone.mixer = testing::small_config(/*d_model=*/32, /*headdim=*/8, /*d_state=*/16, ngroups, /*chunk=*/8);
    c.backbone.num_layers = layers;
    c.vocab_size = 50;
    c.tie_word_embeddings = tied;
    return c;
}

// Every parameter of the model as doubles, by checkpoint name.
template <class Model>
std::map<std::string, std::vector<double>> parameters_of(const Model& m) {
    std::map<std::string, std::vector<double>> p;
    m.for_each_parameter([&](const std::string& name, const auto& buf, const std::vector<index_t>&) {
        p[name] = reference::to_double(buf.data(), buf.size());
    });
    return p;
}

reference::mixer_weights mixer_weights_of(std::map<std::string, std::vector<double>>& p, const std::string& prefix) {
    reference::mixer_weights w;
    w.in_proj = p.at(prefix + "in_proj.weight");
    w.conv_w = p.at(prefix + "conv1d.weight");  // (conv_dim, 1, d_conv) is (conv_dim, d_conv) flat
    w.conv_b = p.at(prefix + "conv1d.bias");
    w.dt_bias = p.at(prefix + "dt_bias");
    w.A_log = p.at(prefix + "A_log");
    w.D = p.at(prefix + "D");
    w.norm_w = p.at(prefix + "norm.weight");
    w.out_proj = p.at(prefix + "out_proj.weight");
    return w;
}

// The float64 oracle of a mixer-only language model (the Mamba2 pattern); layer i at points[i].
std::vector<double> oracle_logits(std::map<std::string, std::vector<double>> p, const language_model_config& c,
                                  const std::vector<std::int64_t>& ids, index_t batch, index_t L,
                                  const std::vector<index_t>& points, const std::function<bool(index_t)>& is_mlp = {}) {
    const index_t d = c.backbone.mixer.d_model, V = c.vocab_size;
    const auto& emb = p.at("backbone.embeddings.weight");
    std::vector<double> u(static_cast<std::size_t>(batch * L * d));
    for (index_t r = 0; r < batch * L; ++r)
        for (index_t k = 0; k < d; ++k) u[std::size_t(r * d + k)] = emb[std::size_t(ids[std::size_t(r)] * d + k)];
    const auto dims = testing::to_dims(c.backbone.mixer, batch, L);
    const index_t blocks = is_mlp ? 2 * c.backbone.num_layers : c.backbone.num_layers;
    std::size_t layer = 0;
    for (index_t i = 0; i < blocks; ++i) {
        const std::string prefix = "backbone.layers." + std::to_string(i) + ".";
        if (is_mlp && is_mlp(i)) {
            reference::mlp_weights w{p.at(prefix + "mlp.gate_proj.weight"), p.at(prefix + "mlp.up_proj.weight"),
                                     p.at(prefix + "mlp.down_proj.weight"), p.at(prefix + "norm.weight")};
            u = reference::mlp_block(w, int(d), int(c.backbone.d_ff), c.backbone.mixer.norm_eps, u, int(batch * L));
            continue;
        }
        u = reference::residual_block(dims, reference::variant{}, mixer_weights_of(p, prefix + "mixer."),
                                      p.at(prefix + "norm.weight"), u, int(points[layer++]));
    }
    u = reference::rmsnorm(u, p.at("backbone.norm_f.weight"), int(d), c.backbone.mixer.norm_eps);
    const auto& head = c.tie_word_embeddings ? emb : p.at("lm_head.weight");
    std::vector<double> logits(static_cast<std::size_t>(batch * L * V));
    for (index_t r = 0; r < batch * L; ++r)
        for (index_t v = 0; v < V; ++v) {
            double acc = 0;
            for (index_t k = 0; k < d; ++k) acc += u[std::size_t(r * d + k)] * head[std::size_t(v * d + k)];
            logits[std::size_t(r * V + v)] = acc;
        }
    return logits;
}

std::vector<std::int64_t> random_ids(index_t n, index_t vocab, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
    for (auto& id : ids) id = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(vocab));
    ids.front() = 0;
    ids.back() = vocab - 1;  // both ends of the vocabulary
    return ids;
}

template <class T>
double tolerance() {
    return std::is_same_v<T, double> ? 1e-10 : 1e-4;
}

template <class T>
void check_against_oracle(const language_model_config& cfg, std::uint64_t seed) {
    language_model<T, cpu> model(cfg);
    randomize(model, seed);
    const index_t batch = 2, L = 21, V = cfg.vocab_size, layers = cfg.backbone.num_layers;
    const auto ids = random_ids(batch * L, V, seed + 1);
    const auto params = parameters_of(model);
    std::vector<typename language_model<T, cpu>::logits_type> logits(static_cast<std::size_t>(batch * L * V));
    workspace<cpu> ws;
    const tensor_view<const std::int64_t, 2> in(ids.data(), {batch, L});
    const tensor_view<T, 3> out(logits.data(), {batch, L, V});

    struct run {
        std::string name;
        transpoint_schedule schedule;
    };
    const std::vector<run> runs{
        {"P = 0 (Mamba2)", transpoint_schedule::fixed(0)},
        {"P = 7 (not a chunk multiple)", transpoint_schedule::fixed(7)},
        {"P = 16 (a chunk multiple)", transpoint_schedule::fixed(16)},
        {"P = L (Transformer)", transpoint_schedule::fixed(L)},
        {"P > L", transpoint_schedule::fixed(1000)},
        {"per layer", transpoint_schedule::per_layer({3, 0, 21})},
        {"cyclic", transpoint_schedule::cyclic({12, 5})},
    };
    std::size_t capacity = 0;
    for (const auto& r : runs) {
        CAPTURE(r.name);
        model.forward(in, out, r.schedule, ws);
        std::vector<index_t> points;
        for (index_t i = 0; i < layers; ++i) points.push_back(resolve_transpoint(r.schedule, i, L));
        const auto want = oracle_logits(params, cfg, ids, batch, L, points);
        const double err = reference::max_relative_error(reference::to_double(logits), want);
        CAPTURE(err);
        CHECK(err < tolerance<T>());
        if (capacity == 0) capacity = ws.capacity();
        CHECK(ws.capacity() == capacity);  // the workspace grew once
    }
}

}  // namespace

TEST_CASE("language_model matches the float64 oracle at several TransPoints (double and float, tied and untied)") {
    SUBCASE("double, ngroups 2, untied") { check_against_oracle<double>(small_lm(2, false), 11); }
    SUBCASE("double, ngroups 1, tied") { check_against_oracle<double>(small_lm(1, true), 12); }
    SUBCASE("float, ngroups 2, tied") { check_against_oracle<float>(small_lm(2, true), 13); }
    SUBCASE("float, ngroups 1, untied") { check_against_oracle<float>(small_lm(1, false), 14); }
}

TEST_CASE("language_model with the paper's pattern (TransMamba and MLP blocks) matches the oracle") {
    auto cfg = small_lm(2, false, 2);
    cfg.backbone.d_ff = 48;
    language_model<double, cpu, paper_pattern> model(cfg);
    randomize(model, 21);
    CHECK(model.num_transpoint_layers() == 2);
    const index_t batch = 1, L = 13, V = cfg.vocab_size;
    const auto ids = random_ids(batch * L, V, 22);
    std::vector<double> logits(static_cast<std::size_t>(batch * L * V));
    workspace<cpu> ws;
    model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}), tensor_view<double, 3>(logits.data(), {batch, L, V}),
                  transpoint_schedule::per_layer({5, 9}), ws);
    const auto want = oracle_logits(parameters_of(model), cfg, ids, batch, L, {5, 9}, [](index_t i) { return i % 2 == 1; });
    CHECK(reference::max_relative_error(logits, want) < 1e-10);
}

TEST_CASE("language_model parameters carry transformers' Mamba2ForCausalLM names") {
    language_model<float, cpu> untied(small_lm(1, false, 2));
    std::vector<std::string> names;
    std::map<std::string, std::vector<index_t>> shapes;
    untied.for_each_parameter([&](const std::string& name, const auto&, const std::vector<index_t>& shape) {
        names.push_back(name);
        shapes[name] = shape;
    });
    const std::vector<std::string> layer{"norm.weight",       "mixer.in_proj.weight", "mixer.conv1d.weight",
                                         "mixer.conv1d.bias", "mixer.dt_bias",        "mixer.A_log",
                                         "mixer.D",           "mixer.norm.weight",    "mixer.out_proj.weight"};
    std::vector<std::string> want{"backbone.embeddings.weight"};
    for (int i = 0; i < 2; ++i)
        for (const auto& n : layer) want.push_back("backbone.layers." + std::to_string(i) + "." + n);
    want.push_back("backbone.norm_f.weight");
    want.push_back("lm_head.weight");
    CHECK(names == want);
    CHECK(shapes["backbone.embeddings.weight"] == std::vector<index_t>{50, 32});
    CHECK(shapes["lm_head.weight"] == std::vector<index_t>{50, 32});
    CHECK(shapes["backbone.layers.1.mixer.conv1d.weight"] == std::vector<index_t>{64 + 2 * 16, 1, 4});

    language_model<float, cpu> tied(small_lm(1, true, 2));
    names.clear();
    tied.for_each_parameter([&](const std::string& name, const auto&, const std::vector<index_t>&) { names.push_back(name); });
    want.pop_back();
    CHECK(names == want);
    CHECK(&tied.lm_head() == &tied.embeddings());
}

TEST_CASE("language_model checks token ids, shapes and weights before writing the logits") {
    const auto cfg = small_lm(1, false, 2);
    language_model<float, cpu> model(cfg);
    randomize(model, 5);
    const index_t batch = 2, L = 4, V = cfg.vocab_size;
    std::vector<std::int64_t> ids{1, 2, 3, 4, 5, 6, 7, 8};
    std::vector<float> logits(static_cast<std::size_t>(batch * L * V), -7.0f);
    workspace<cpu> ws;
    const tensor_view<float, 3> out(logits.data(), {batch, L, V});
    auto message = [&](const std::function<void()>& f) -> std::string {
        try {
            f();
        } catch (const error& e) {
            return e.what();
        }
        return "(no error)";
    };
    ids[6] = 50;
    auto msg = message([&] { model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}), out, all_ssm{}, ws); });
    CHECK(msg.find("token id 50 at position (batch 1, token 2) of 'input_ids' is out of range [0, 50)") != std::string::npos);
    ids[6] = -1;
    msg = message([&] { model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}), out, all_ssm{}, ws); });
    CHECK(msg.find("token id -1 at position (batch 1, token 2)") != std::string::npos);
    ids[6] = 7;
    msg = message([&] {
        model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}), tensor_view<float, 3>(logits.data(), {batch, L, V - 1}),
                      all_ssm{}, ws);
    });
    CHECK(msg.find("tensor 'logits' has shape (2, 4, 49), expected (2, 4, 50)") != std::string::npos);
    msg = message([&] {
        model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}), out, per_layer_transpoints{1}, ws);
    });
    CHECK(msg.find("per_layer_transpoints has 1 entries, layer 1 was asked for") != std::string::npos);
    model.lm_head().data()[17] = std::numeric_limits<float>::infinity();
    msg = message([&] { model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}), out, all_ssm{}, ws); });
    CHECK(msg.find("'lm_head.weight' holds a non-finite value at flat index 17") != std::string::npos);
    for (float v : logits) CHECK(v == -7.0f);  // nothing was written
    model.lm_head().data()[17] = 0.5f;
    CHECK_NOTHROW(model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}), out, all_ssm{}, ws));

    language_model_config bad = cfg;
    bad.vocab_size = 0;
    msg = message([&] { language_model<float, cpu> m(bad); });
    CHECK(msg.find("vocab_size must be positive") != std::string::npos);
}

}  // namespace test_model_language_model
