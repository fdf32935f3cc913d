// model/language_model_backward.hpp, block/stack_backward.hpp, block/block_backward.hpp: the
// gradients of a whole language model's mean cross-entropy (every parameter, tied and untied, mixer
// and SwiGLU blocks, per-layer TransPoints, ignored targets, repeated ids) against central finite
// differences of a float64 oracle composed from tests/reference; the identities at P = 0 (a Mamba2
// model's gradients) and P = L (an attention-only model's); keep against recompute (the same bits);
// float against double; NaN-poisoned gradient buffers; bad calls.
#include <doctest/doctest.h>

#include <transmamba/training.hpp>

#include "support/gradient_check.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_model_language_model_backward {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

constexpr std::int64_t ignored = -100;

// A mixer block's mixer in the oracle: hn (b, L, d_model) at TransPoint P -> (b, L, d_model).
using oracle_mixer =
    std::function<std::vector<double>(const reference::dims&, const reference::mixer_weights&, const std::vector<double>&, int)>;

std::vector<double> transmamba_mixer(const reference::dims& d, const reference::mixer_weights& w,
                                     const std::vector<double>& hn, int P) {
    return reference::mixer_forward(d, reference::variant{}, w, hn, P).out;
}

// d_model 4, d_inner 8, 4 heads of 2, n = 4, chunk 4; vocab 7, so a batch of 2 x 10 repeats ids.
language_model_config tiny_lm(index_t ngroups, bool tied, index_t layers, index_t d_ff) {
    language_model_config c;
    c.backbone.mixer = small_config(4, 2, 4, ngroups, 4);
    c.backbone.num_layers = layers;
    c.backbone.d_ff = d_ff;
    c.vocab_size = 7;
    c.tie_word_embeddings = tied;
    c.validate();
    return c;
}

template <class Model>
named_tensors parameters_of(const Model& m) {
    named_tensors p;
    m.for_each_parameter([&](const std::string& name, const auto& buf, const std::vector<index_t>&) {
        p[name] = reference::to_double(buf.data(), buf.size());
    });
    return p;
}

reference::mixer_weights mixer_weights_of(const named_tensors& p, const std::string& prefix) {
    return {p.at(prefix + "in_proj.weight"), p.at(prefix + "conv1d.weight"), p.at(prefix + "conv1d.bias"),
            p.at(prefix + "dt_bias"),        p.at(prefix + "A_log"),         p.at(prefix + "D"),
            p.at(prefix + "norm.weight"),    p.at(prefix + "out_proj.weight")};
}

// The float64 oracle of a language model's loss: the embedding rows, the blocks (mixer blocks at
// points[i], MLP blocks where `with_mlp` puts them: every second block), norm_f, the LM head, the
// mean cross-entropy over the targets that are not `ignored`.
struct oracle_model {
    language_model_config cfg;
    bool with_mlp = false;
    index_t batch = 0, L = 0;
    std::vector<std::int64_t> ids, targets;
    std::vector<index_t> points;
    oracle_mixer mixer = transmamba_mixer;

    // The stack's output for input hidden states u (b, L, d_model).
    std::vector<double> stack(const named_tensors& p, std::vector<double> u) const {
        const index_t d = cfg.backbone.mixer.d_model;
        const auto dims = to_dims(cfg.backbone.mixer, batch, L);
        const index_t blocks = cfg.backbone.num_layers * (with_mlp ? 2 : 1);
        std::size_t layer = 0;
        for (index_t i = 0; i < blocks; ++i) {
            const std::string prefix = "backbone.layers." + std::to_string(i) + ".";
            if (with_mlp && i % 2 == 1) {
                const reference::mlp_weights w{p.at(prefix + "mlp.gate_proj.weight"), p.at(prefix + "mlp.up_proj.weight"),
                                               p.at(prefix + "mlp.down_proj.weight"), p.at(prefix + "norm.weight")};
                u = reference::mlp_block(w, int(d), int(cfg.backbone.d_ff), cfg.backbone.mixer.norm_eps, u,
                                         int(batch * L));
                continue;
            }
            const auto hn = reference::rmsnorm(u, p.at(prefix + "norm.weight"), int(d), cfg.backbone.mixer.norm_eps);
            const auto m = mixer(dims, mixer_weights_of(p, prefix + "mixer."), hn, int(points[layer++]));
            for (std::size_t k = 0; k < u.size(); ++k) u[k] += m[k];
        }
        return reference::rmsnorm(u, p.at("backbone.norm_f.weight"), int(d), cfg.backbone.mixer.norm_eps);
    }

    struct evaluation {
        double loss;
        index_t correct;  // counted tokens whose largest logit is the target's
    };
    double loss(const named_tensors& p) const { return evaluate(p).loss; }
    evaluation evaluate(const named_tensors& p) const {
        const index_t d = cfg.backbone.mixer.d_model, V = cfg.vocab_size;
        const auto& emb = p.at("backbone.embeddings.weight");
        std::vector<double> u(static_cast<std::size_t>(batch * L * d));
        for (index_t r = 0; r < batch * L; ++r)
            for (index_t k = 0; k < d; ++k) u[std::size_t(r * d + k)] = emb[std::size_t(ids[std::size_t(r)] * d + k)];
        const auto h = stack(p, u);
        const auto& head = cfg.tie_word_embeddings ? emb : p.at("lm_head.weight");
        double sum = 0;
        index_t counted = 0, correct = 0;
        std::vector<double> logits(static_cast<std::size_t>(V));
        for (index_t r = 0; r < batch * L; ++r) {
            const std::int64_t y = targets[std::size_t(r)];
            if (y == ignored) continue;
            double top = -1e300;
            index_t best = 0;
            for (index_t v = 0; v < V; ++v) {
                double acc = 0;
                for (index_t k = 0; k < d; ++k) acc += h[std::size_t(r * d + k)] * head[std::size_t(v * d + k)];
                logits[std::size_t(v)] = acc;
                if (acc > top) best = v;
                top = std::max(top, acc);
            }
            correct += best == y ? 1 : 0;
            double z = 0;
            for (double l : logits) z += std::exp(l - top);
            sum += top + std::log(z) - logits[std::size_t(y)];
            ++counted;
        }
        return {sum / double(counted), correct};
    }
};

std::vector<std::int64_t> random_tokens(index_t n, index_t vocab, std::uint64_t seed, double ignore_share = 0) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0, 1);
    std::vector<std::int64_t> t(static_cast<std::size_t>(n));
    for (auto& v : t) v = unit(rng) < ignore_share ? ignored : std::int64_t(rng() % std::uint64_t(vocab));
    return t;
}

struct library_result {
    loss_stats stats;
    named_tensors grads;
};

// The library's loss and gradients for the parameters `p`, the model in T.
template <class T, class Pattern, class Saving = keep_activations, class Policy>
library_result run_library(const oracle_model& o, const named_tensors& p, const Policy& policy) {
    language_model<T, cpu, Pattern> model(o.cfg);
    load_by_name(model, p);
    model_grads<T, cpu, Pattern> grads(o.cfg);
    grads.for_each_parameter([](const std::string&, auto& buf, const std::vector<index_t>&) { buf.fill(nan_value<T>()); });
    language_model_training<T, cpu, Pattern, Saving> training({.ignore_index = ignored});
    const tensor_view<const std::int64_t, 2> ids(o.ids.data(), {o.batch, o.L}), targets(o.targets.data(), {o.batch, o.L});
    library_result r{training.forward_backward(model, ids, targets, policy, grads), {}};
    grads.for_each_parameter([&](const std::string& name, const auto& buf, const std::vector<index_t>&) {
        CHECK_MESSAGE(all_finite(buf.span()), "the gradient of " << name << " was not fully written");
        r.grads[name] = reference::to_double(buf.data(), buf.size());
    });
    // forward_loss runs language_model::forward, whose scan takes the suffix in one call where the
    // training forward takes it block by block: the same function, to rounding.
    const loss_stats again = training.forward_loss(model, ids, targets, policy);
    CHECK(std::abs(again.loss - r.stats.loss) <= (std::is_same_v<T, double> ? 1e-13 : 1e-5) * r.stats.loss);
    CHECK(again.counted == r.stats.counted);
    return r;
}

// Every gradient of `got` against the finite differences of the oracle's loss; the largest error.
double compare_with_differences(const oracle_model& o, named_tensors p, const named_tensors& got) {
    double worst = 0;
    const auto loss = [&] { return o.loss(p); };
    REQUIRE(got.size() == p.size());
    for (auto& entry : p) {  // no structured binding: CAPTURE's lambda cannot take one before clang 16
        const std::string& name = entry.first;
        auto& tensor = entry.second;
        CAPTURE(name);
        const auto want = central_differences(tensor, loss);
        const auto& have = got.at(name);
        if (std::all_of(have.begin(), have.end(), [](double g) { return g == 0; })) {
            // A gradient that is zero by construction (A_log, dt_bias of a layer at P = L): the
            // differences find it to within their rounding, ~1e-12 of a loss of ~2.
            const double largest = std::abs(*std::max_element(want.begin(), want.end(), [](double a, double b) {
                return std::abs(a) < std::abs(b);
            }));
            CHECK(largest < 1e-9);
            continue;
        }
        const double err = gradient_error(have, want);
        CHECK(err < gradient_tolerance);
        if (getenv("GRAD_VERBOSE")) {
            MESSAGE(name << " " << err);
            if (getenv("GRAD_VERBOSE")[0] == '2')
                for (std::size_t i = 0; i < want.size(); ++i) MESSAGE(i << " " << have[i] << " " << want[i]);
        }
        worst = std::max(worst, err);
    }
    return worst;
}

template <class Pattern>
oracle_model make_case(const language_model_config& cfg, index_t batch, index_t L, std::vector<index_t> points,
                       std::uint64_t seed, double ignore_share) {
    oracle_model o;
    o.cfg = cfg;
    o.with_mlp = std::is_same_v<Pattern, paper_pattern>;
    o.batch = batch;
    o.L = L;
    o.ids = random_tokens(batch * L, cfg.vocab_size, seed, 0);
    o.targets = random_tokens(batch * L, cfg.vocab_size, seed + 1, ignore_share);
    o.targets[1] = ignored;  // at least one ignored, at least one counted
    o.targets[2] = 3;
    o.points = std::move(points);
    return o;
}

// randomize()'s trained ranges, except the SSM's decay: with A = -exp(A_log) in [-16, -1] and dt in
// [1e-3, 0.1] the cross-entropy's gradient in A_log falls to ~1e-7, where the finite differences'
// own rounding (~1e-12 of a loss of ~2) is a 1e-5 relative error. A in [-2, -0.5] and dt in
// [0.05, 0.3] keep every gradient well above it.
template <class Pattern>
named_tensors random_parameters(const language_model_config& cfg, std::uint64_t seed) {
    language_model<double, cpu, Pattern> model(cfg);
    randomize(model, seed);
    auto p = parameters_of(model);
    std::uint64_t stream = seed * 977;
    for (auto& [name, t] : p) {
        if (name.ends_with(".A_log")) {
            t = reference::random_vector(t.size(), ++stream, std::log(0.5), std::log(2.0));
        } else if (name.ends_with(".dt_bias")) {
            t = reference::random_vector(t.size(), ++stream, 0.05, 0.3);
            for (auto& v : t) v += std::log(-std::expm1(-v));  // softplus^-1
        }
    }
    return p;
}

}  // namespace

TEST_CASE("language model backward: every gradient matches finite differences") {
    // Mixer-only (the Mamba2 pattern) and the paper's pattern (mixer and SwiGLU blocks 1:1); tied
    // and untied; 1 and 2 groups; per-layer P at 0, inside a chunk (chunk 4) and L; a third of the
    // targets ignored; ids repeat (vocab 7, 20 tokens): the scatter-add sums.
    const index_t batch = 2, L = 10;
    double worst = 0;
    {
        const auto cfg = tiny_lm(/*ngroups=*/1, /*tied=*/true, /*layers=*/3, /*d_ff=*/0);
        const auto o = make_case<mamba2_pattern>(cfg, batch, L, {0, 6, 10}, 7000, 0.3);
        const auto p = random_parameters<mamba2_pattern>(cfg, 7001);
        const auto got = run_library<double, mamba2_pattern>(o, p, per_layer_transpoints{0, 6, 10});
        CHECK(std::abs(got.stats.loss - o.loss(p)) < 1e-12 * o.loss(p));
        CHECK(got.stats.counted == index_t(std::count_if(o.targets.begin(), o.targets.end(), [](auto t) { return t != ignored; })));
        CHECK(got.stats.correct == o.evaluate(p).correct);
        worst = std::max(worst, compare_with_differences(o, p, got.grads));
    }
    {
        const auto cfg = tiny_lm(/*ngroups=*/2, /*tied=*/false, /*layers=*/2, /*d_ff=*/6);
        const auto o = make_case<paper_pattern>(cfg, batch, L, {10, 3}, 7100, 0.3);
        const auto p = random_parameters<paper_pattern>(cfg, 7101);
        const auto got = run_library<double, paper_pattern>(o, p, per_layer_transpoints{10, 3});
        CHECK(std::abs(got.stats.loss - o.loss(p)) < 1e-12 * o.loss(p));
        worst = std::max(worst, compare_with_differences(o, p, got.grads));
    }
    MESSAGE("largest relative error of the language model's gradients: " << worst);
}

TEST_CASE("language model backward: at P = 0 the gradients are a Mamba2 model's") {
    // The oracle's Mamba2 layer is written on its own (recurrence on every token, no attention and
    // no converter).
    const auto cfg = tiny_lm(2, /*tied=*/true, /*layers=*/2, 0);
    auto o = make_case<mamba2_pattern>(cfg, 2, 9, {0, 0}, 7200, 0.2);
    o.mixer = [](const reference::dims& d, const reference::mixer_weights& w, const std::vector<double>& hn, int) {
        return reference::mamba2_forward(d, w, hn).out;
    };
    const auto p = random_parameters<mamba2_pattern>(cfg, 7201);
    const auto got = run_library<double, mamba2_pattern>(o, p, all_ssm{});
    MESSAGE("P = 0 against the Mamba2 oracle: largest relative error " << compare_with_differences(o, p, got.grads));
}

TEST_CASE("language model backward: at P = L the gradients are an attention-only model's") {
    // The Transformer layer of the shared weights (in_proj, conv, causal attention, the ungated
    // norm, out_proj): nothing reaches dt_bias, A_log or the z and dt rows of in_proj.
    const auto cfg = tiny_lm(1, /*tied=*/false, /*layers=*/1, /*d_ff=*/6);
    const index_t L = 9;
    auto o = make_case<paper_pattern>(cfg, 2, L, {L}, 7300, 0.2);
    o.mixer = [](const reference::dims& d, const reference::mixer_weights& w, const std::vector<double>& hn, int) {
        const reference::variant var;
        const auto zxbcdt = reference::in_projection(d, w, hn);
        const auto xBC = reference::conv_silu(d, w, zxbcdt);
        const auto y = reference::attention(d, var, reference::x_of(d, xBC), reference::B_of(d, xBC),
                                            reference::C_of(d, xBC), w.D, d.seqlen);
        return reference::out_projection(d, w, reference::gated_rmsnorm(d, var, w, y, zxbcdt, d.seqlen));
    };
    const auto p = random_parameters<paper_pattern>(cfg, 7301);
    const auto got = run_library<double, paper_pattern>(o, p, all_attention{});
    MESSAGE("P = L against the attention-only oracle: largest relative error " << compare_with_differences(o, p, got.grads));
    const auto zero = [](const std::vector<double>& v) { return std::all_of(v.begin(), v.end(), [](double e) { return e == 0; }); };
    CHECK(zero(got.grads.at("backbone.layers.0.mixer.dt_bias")));
    CHECK(zero(got.grads.at("backbone.layers.0.mixer.A_log")));
    const auto& mc = cfg.backbone.mixer;
    const auto& in_proj = got.grads.at("backbone.layers.0.mixer.in_proj.weight");
    for (index_t row = 0; row < mc.d_in_proj(); ++row) {
        if (row >= mc.d_inner() && row < mc.d_in_proj() - mc.nheads()) continue;  // x, B, C rows carry gradient
        for (index_t col = 0; col < mc.d_model; ++col) CHECK(in_proj[std::size_t(row * mc.d_model + col)] == 0);
    }
}

TEST_CASE("language model backward: recomputing the activations gives the same bits") {
    for (const bool tied : {true, false}) {
        CAPTURE(tied);
        const auto cfg = tiny_lm(2, tied, 2, 6);
        const auto o = make_case<paper_pattern>(cfg, 2, 10, {}, 7400, 0.3);
        const auto p = random_parameters<paper_pattern>(cfg, 7401);
        const per_layer_transpoints schedule{2, 7};
        const auto kept = run_library<double, paper_pattern, keep_activations>(o, p, schedule);
        const auto again = run_library<double, paper_pattern, recompute_activations>(o, p, schedule);
        CHECK(kept.stats.loss == again.stats.loss);
        CHECK(kept.grads == again.grads);
        const auto kept_f = run_library<float, paper_pattern, keep_activations>(o, p, schedule);
        const auto again_f = run_library<float, paper_pattern, recompute_activations>(o, p, schedule);
        CHECK(kept_f.grads == again_f.grads);
    }
}

TEST_CASE("language model backward: float agrees with double") {
    const auto cfg = tiny_lm(2, /*tied=*/true, 2, 6);
    const auto o = make_case<paper_pattern>(cfg, 2, 10, {}, 7500, 0.3);
    auto p = random_parameters<paper_pattern>(cfg, 7501);
    for (auto& [name, t] : p) t = rounded<float>(t);
    for (const auto& schedule : {per_layer_transpoints{0, 10}, per_layer_transpoints{5, 3}}) {
        const auto f = run_library<float, paper_pattern>(o, p, schedule);
        const auto g = run_library<double, paper_pattern>(o, p, schedule);
        CHECK(std::abs(f.stats.loss - g.stats.loss) < 1e-5 * g.stats.loss);
        double worst = 0;
        for (const auto& entry : g.grads) {
            const std::string& name = entry.first;
            const auto& want = entry.second;
            CAPTURE(name);
            const double err = reference::max_relative_error(f.grads.at(name), want);
            CHECK(err < 1e-4);
            worst = std::max(worst, err);
        }
        MESSAGE("float against double: largest relative error " << worst);
    }
}

TEST_CASE("stack backward: the input's gradient matches finite differences") {
    // du of the stack (the gradient the embeddings receive) for L = <stack(u), R>.
    const auto cfg = tiny_lm(1, true, 2, 6);
    const index_t batch = 2, L = 9, d = cfg.backbone.mixer.d_model;
    auto o = make_case<paper_pattern>(cfg, batch, L, {4, 9}, 7600, 0);
    const auto p = random_parameters<paper_pattern>(cfg, 7601);
    auto u = reference::random_vector(static_cast<std::size_t>(batch * L * d), 7602);
    const auto R = reference::random_vector(u.size(), 7603);
    language_model<double, cpu, paper_pattern> model(cfg);
    load_by_name(model, p);
    stack_training<double, cpu, paper_pattern> training;
    model_grads<double, cpu, paper_pattern> grads(cfg);
    std::vector<double> out(u.size(), nan_value<double>()), du(u.size(), nan_value<double>());
    const extents<3> shape{batch, L, d};
    training.forward(model.backbone(), tensor_view<const double, 3>(u.data(), shape), tensor_view<double, 3>(out.data(), shape),
                     per_layer_transpoints{4, 9});
    CHECK(reference::max_relative_error(out, o.stack(p, u)) < 1e-12);
    training.backward(model.backbone(), tensor_view<const double, 3>(R.data(), shape), tensor_view<double, 3>(du.data(), shape),
                      grads.backbone());
    const auto want = central_differences(u, [&] { return dot(o.stack(p, u), R); });
    const double err = gradient_error(du, want);
    CHECK(err < gradient_tolerance);
    MESSAGE("stack du: relative error " << err);
}

TEST_CASE("language model backward: for_each_parameter walks parameters and gradients together") {
    const auto cfg = tiny_lm(1, false, 1, 6);
    language_model<float, cpu, paper_pattern> model(cfg);
    randomize(model, 1);
    model_grads<float, cpu, paper_pattern> grads(cfg);
    grads.zero();
    std::vector<std::string> names, model_names;
    model.for_each_parameter([&](const std::string& name, const auto&, const std::vector<index_t>&) { model_names.push_back(name); });
    for_each_parameter(model, grads, [&](const std::string& name, std::span<float> param, std::span<float> grad) {
        names.push_back(name);
        CHECK(param.size() == grad.size());
        CHECK(std::all_of(grad.begin(), grad.end(), [](float g) { return g == 0; }));
        for (auto& v : param) v = 0.25f;  // an optimizer writes through the span
    });
    CHECK(names == model_names);
    CHECK(model.lm_head().data()[0] == 0.25f);
    CHECK(model.backbone().norm_f().data()[3] == 0.25f);
    model_grads<float, cpu, paper_pattern> other(tiny_lm(1, true, 1, 6));
    CHECK_THROWS_WITH_AS(for_each_parameter(model, other, [](const std::string&, std::span<float>, std::span<float>) {}),
                         doctest::Contains("model_grads were made for another configuration"), error);
}

TEST_CASE("language model backward: bad calls are rejected before anything is written") {
    const auto cfg = tiny_lm(1, true, 1, 0);
    language_model<double, cpu> model(cfg);
    randomize(model, 2);
    model_grads<double, cpu> grads(cfg);
    grads.for_each_parameter([](const std::string&, auto& buf, const std::vector<index_t>&) { buf.fill(7.0); });
    language_model_training<double, cpu> training;
    std::vector<std::int64_t> ids(2 * 5, 1), targets(2 * 5, 2);
    const tensor_view<const std::int64_t, 2> in(ids.data(), {2, 5});
    const auto call = [&](const std::vector<std::int64_t>& t, index_t L) {
        return training.forward_backward(model, in, tensor_view<const std::int64_t, 2>(t.data(), {2, L}), all_ssm{}, grads);
    };
    auto bad = targets;
    bad[7] = 7;
    CHECK_THROWS_WITH_AS(call(bad, 5), doctest::Contains("target 7 at position (batch 1, token 2)"), error);
    bad[7] = -1;
    CHECK_THROWS_WITH_AS(call(bad, 5), doctest::Contains("nor the ignore index -100"), error);
    CHECK_THROWS_WITH_AS(call(std::vector<std::int64_t>(10, ignored), 5), doctest::Contains("mean loss over no tokens"), error);
    CHECK_THROWS_WITH_AS(call(targets, 4), doctest::Contains("tensor 'targets' has shape (2, 4)"), error);
    auto bad_ids = ids;
    bad_ids[3] = 9;
    CHECK_THROWS_WITH_AS(training.forward_backward(model, tensor_view<const std::int64_t, 2>(bad_ids.data(), {2, 5}),
                                                   tensor_view<const std::int64_t, 2>(targets.data(), {2, 5}), all_ssm{}, grads),
                         doctest::Contains("token id 9"), error);
    model_grads<double, cpu> other(tiny_lm(1, false, 1, 0));
    CHECK_THROWS_WITH_AS(training.forward_backward(model, in, tensor_view<const std::int64_t, 2>(targets.data(), {2, 5}),
                                                   all_ssm{}, other),
                         doctest::Contains("model_grads were made for another configuration"), error);
    CHECK_THROWS_WITH_AS(training.forward_backward(model, in, tensor_view<const std::int64_t, 2>(targets.data(), {2, 5}),
                                                   fixed_transpoint{-1}, grads),
                         doctest::Contains("P = -1"), error);
    bool untouched = true;
    grads.for_each_parameter([&](const std::string&, const auto& buf, const std::vector<index_t>&) {
        untouched = untouched && std::all_of(buf.span().begin(), buf.span().end(), [](double e) { return e == 7.0; });
    });
    CHECK(untouched);
    stack_training<double, cpu, mamba2_pattern> stack_only;
    std::vector<double> g(2 * 5 * 4), dg(g.size());
    CHECK_THROWS_WITH_AS(stack_only.backward(model.backbone(), tensor_view<const double, 3>(g.data(), {2, 5, 4}),
                                             tensor_view<double, 3>(dg.data(), {2, 5, 4}), grads.backbone()),
                         doctest::Contains("needs a forward() of this stack first"), error);
}

TEST_CASE("language model backward: the same bits whatever the thread count") {
    // Every parallel_for forks (threshold 0), on 1 thread and on 2: the scatter-add, the norm
    // weights' column sums and the loss sum have a fixed order. (Eigen runs GEMMs this small on one
    // thread; at larger sizes its blocking follows the thread count: docs/training.md.)
    const auto cfg = tiny_lm(2, /*tied=*/true, 2, 6);
    const auto o = make_case<paper_pattern>(cfg, 2, 10, {}, 7700, 0.3);
    const auto p = random_parameters<paper_pattern>(cfg, 7701);
    const index_t threshold = parallel_min_work();
    const int threads = max_threads();
    set_parallel_min_work(0);
    set_max_threads(1);
    const auto one = run_library<double, paper_pattern>(o, p, per_layer_transpoints{3, 8});
    set_max_threads(2);
    const auto two = run_library<double, paper_pattern>(o, p, per_layer_transpoints{3, 8});
    set_max_threads(threads);
    set_parallel_min_work(threshold);
    CHECK(one.stats.loss == two.stats.loss);
    CHECK(one.grads == two.grads);
}

TEST_CASE("language model backward: gradient descent lowers the loss") {
    // Plain gradient descent on one batch, through for_each_parameter: the gradient is a descent
    // direction of the loss forward_loss measures, step after step.
    const auto cfg = tiny_lm(1, /*tied=*/false, 2, 6);
    language_model<float, cpu, paper_pattern> model(cfg);
    randomize(model, 7800);
    model_grads<float, cpu, paper_pattern> grads(cfg);
    language_model_training<float, cpu, paper_pattern, recompute_activations> training;
    const index_t batch = 2, L = 10;
    const auto ids = random_tokens(batch * L, cfg.vocab_size, 7801);
    const auto targets = random_tokens(batch * L, cfg.vocab_size, 7802, 0.3);
    const tensor_view<const std::int64_t, 2> in(ids.data(), {batch, L}), tg(targets.data(), {batch, L});
    const cyclic_transpoints schedule{0, 4};
    const double start = training.forward_loss(model, in, tg, schedule);
    double previous = start;
    for (int step = 0; step < 20; ++step) {
        training.forward_backward(model, in, tg, schedule, grads);
        for_each_parameter(model, grads, [](const std::string&, std::span<float> w, std::span<float> g) {
            for (std::size_t i = 0; i < w.size(); ++i) w[i] -= 0.1f * g[i];
        });
        const double now = training.forward_loss(model, in, tg, schedule);
        CHECK(now < previous);
        previous = now;
    }
    MESSAGE("20 steps of gradient descent: loss " << start << " -> " << previous);
    CHECK(previous < 0.8 * start);
}

}  // namespace test_model_language_model_backward
