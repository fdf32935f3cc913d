// block/mixer_backward.hpp: the whole mixer's gradients (every parameter, the input u, the initial
// state, from a loss on the output and on the final state) against central finite differences of
// the float64 oracle, across TransPoints, group counts and policies; the identities at P = 0 (a
// Mamba2 layer's gradients) and P = L (an attention-only layer's); float against double;
// NaN-poisoned gradient buffers.
#include <doctest/doctest.h>

#include <transmamba/training.hpp>

#include "support/gradient_check.hpp"

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_block_mixer_backward {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

template <class Policies>
reference::variant variant_of() {
    using attention = typename Policies::attention;
    reference::variant v;
    v.gate_attention = attention::gate_by_z;
    v.d_skip_attention = attention::skip_D;
    v.rope = attention::position::rotary;
    if constexpr (attention::position::rotary) v.rope_theta = attention::position::theta;
    return v;
}

// d_model 4, d_inner 8, h = 4 heads of 2, n = 4, chunk 4: tiny, so that the finite differences
// over every one of the ~500 inputs stay fast under the sanitizers.
mixer_config grad_config(index_t ngroups) {
    mixer_config c = small_config(4, 2, 4, ngroups, 4);
    c.validate();
    return c;
}

// The library's gradients of L = <out, R> + <final_state, R_state> for one layer.
template <class T, class Policies>
struct library_gradients {
    std::vector<double> out, final_state, du, d_initial;
    std::vector<std::vector<double>> params;  // in the order of for_each_weight
};

template <class T, class Policies>
library_gradients<T, Policies> run_library(const mixer_config& cfg, index_t batch, index_t L, index_t P,
                                           const reference::mixer_weights& w, const std::vector<double>& u,
                                           const std::vector<double>& init, const std::vector<double>& R,
                                           const std::vector<double>& R_state) {
    using training = mixer_training<T, cpu, Policies>;
    mixer<T, cpu, Policies> m(cfg);
    load_weights(m.params(), w);
    const extents<3> shape{batch, L, cfg.d_model};
    const extents<4> state_shape{batch, cfg.nheads(), cfg.headdim, cfg.d_state};
    const std::size_t state_size = static_cast<std::size_t>(batch * cfg.nheads() * cfg.headdim * cfg.d_state);
    const auto ut = to_vector<T>(u), it = to_vector<T>(init), Rt = to_vector<T>(R), Rst = to_vector<T>(R_state);
    std::vector<T> out(u.size(), nan_value<T>()), fs(state_size, nan_value<T>());
    mixer_state_io<T> io;
    if (!init.empty()) io.initial_state = tensor_view<const T, 4>(it.data(), state_shape);
    io.final_state = tensor_view<T, 4>(fs.data(), state_shape);
    typename training::activations saved;
    workspace<cpu> ws;
    training::forward(m, tensor_view<const T, 3>(ut.data(), shape), tensor_view<T, 3>(out.data(), shape), P, saved, ws,
                      io);

    mixer_grads<T, cpu> grads(cfg);
    grads.for_each([](std::string_view, auto& buf, const std::vector<index_t>&) { buf.fill(nan_value<T>()); });
    std::vector<T> du(u.size(), nan_value<T>()), dinit(state_size, nan_value<T>());
    mixer_state_grads<T> sg;
    if (!R_state.empty()) sg.final_state = tensor_view<const T, 4>(Rst.data(), state_shape);
    sg.initial_state = tensor_view<T, 4>(dinit.data(), state_shape);
    training::backward(m, tensor_view<const T, 3>(ut.data(), shape), saved, tensor_view<const T, 3>(Rt.data(), shape),
                       tensor_view<T, 3>(du.data(), shape), grads, ws, sg);

    library_gradients<T, Policies> r{reference::to_double(out), reference::to_double(fs), reference::to_double(du),
                                     reference::to_double(dinit), {}};
    auto w_copy = w;
    for_each_weight(grads, w_copy, [&](auto& buf, const std::vector<double>&) {
        CHECK_MESSAGE(all_finite(buf.span()), "a parameter gradient was not fully written");
        r.params.push_back(reference::to_double(buf.data(), buf.size()));
    });
    CHECK_MESSAGE(all_finite(du), "du was not fully written");
    CHECK_MESSAGE(all_finite(dinit), "the initial-state gradient was not fully written");
    return r;
}

// The oracle's tensors in for_each_weight's order.
template <class F>
void for_each_oracle_weight(reference::mixer_weights& w, F&& put) {
    for (auto* t : {&w.in_proj, &w.conv_w, &w.conv_b, &w.dt_bias, &w.A_log, &w.D, &w.norm_w, &w.out_proj}) put(*t);
}

const char* const weight_names[] = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias",
                                    "A_log",          "D",             "norm.weight", "out_proj.weight"};

// Finite differences of loss() over every weight, u and the initial state; compared with `got`.
// Returns the largest relative error seen.
template <class Grads>
double compare_with_differences(const Grads& got, reference::mixer_weights& w, std::vector<double>& u,
                                std::vector<double>& init, const std::function<double()>& loss,
                                double step = 2e-4) {
    const double tol = gradient_tolerance;
    double worst = 0;
    std::size_t i = 0;
    for_each_oracle_weight(w, [&](std::vector<double>& tensor) {
        const auto want = central_differences(tensor, loss, step);
        const double err = gradient_error(got.params[i], want);
        const std::string name = weight_names[i];
        CAPTURE(name);
        CHECK(err < tol);
        if (getenv("GRAD_VERBOSE")) MESSAGE(std::string(weight_names[i]) << " " << err);
        worst = std::max(worst, err);
        ++i;
    });
    const double err_u = gradient_error(got.du, central_differences(u, loss, step));
    CHECK_MESSAGE(err_u < tol, "du");
    worst = std::max(worst, err_u);
    if (!init.empty()) {
        const double err_s = gradient_error(got.d_initial, central_differences(init, loss, step));
        CHECK_MESSAGE(err_s < tol, "d initial_state");
        worst = std::max(worst, err_s);
    }
    return worst;
}

}  // namespace

namespace {

template <class Policies>
double check_layer(const mixer_config& cfg, index_t batch, index_t L, index_t P, bool with_state, std::uint64_t seed,
                   double step = 2e-4) {
    const auto d = to_dims(cfg, batch, L);
    auto w = reference::random_weights(d, seed);
    auto u = reference::random_vector(static_cast<std::size_t>(batch * L * cfg.d_model), seed + 1);
    auto init = with_state ? random_state<double>(d, seed + 2) : std::vector<double>{};
    const auto R = reference::random_vector(u.size(), seed + 3);
    const auto R_state = with_state ? random_state<double>(d, seed + 4) : std::vector<double>{};
    const auto var = variant_of<Policies>();
    const auto loss = [&] {
        const auto r = reference::mixer_forward(d, var, w, u, int(P), init);
        return dot(r.out, R) + (R_state.empty() ? 0.0 : dot(r.final_state, R_state));
    };
    const auto got = run_library<double, Policies>(cfg, batch, L, P, w, u, init, R, R_state);
    const auto want = reference::mixer_forward(d, var, w, u, int(P), init);
    CHECK(reference::max_relative_error(got.out, want.out) < 1e-12);
    CHECK(reference::max_relative_error(got.final_state, want.final_state) < 1e-12);
    return compare_with_differences(got, w, u, init, loss, step);
}

}  // namespace

TEST_CASE("mixer backward: every gradient matches finite differences across TransPoints and groups") {
    const index_t batch = 2, L = 10;  // chunk 4: L is not a multiple of it
    std::uint64_t seed = 5000;
    double worst = 0;
    for (index_t g : {1, 2, 4})                  // 1, 2 and h groups
        for (index_t P : {0, 1, 4, 6, 9, 10}) {  // 0, 1, a chunk boundary, inside a chunk, L - 1, L
            CAPTURE(g);
            CAPTURE(P);
            worst = std::max(worst, check_layer<paper_policies>(grad_config(g), batch, L, P, /*with_state=*/(P + g) % 2 == 0, seed += 10));
        }
    MESSAGE("largest relative error of the mixer's gradients: " << worst);
}

TEST_CASE_TEMPLATE("mixer backward: the policies' gradients match finite differences", Policies,
                   paper_policies::with_scan<sequential_scan>, paper_policies::with_attention<z_gated_attention>,
                   paper_policies::with_attention<no_skip_attention>, paper_policies::with_attention<rope_attention>,
                   paper_policies::with_input_check<trusted_inputs>) {
    for (index_t P : {3, 10}) {
        CAPTURE(P);
        check_layer<Policies>(grad_config(2), 1, 10, P, /*with_state=*/true, 6100 + std::uint64_t(P));
    }
}

TEST_CASE("mixer backward: no gradient flows through a clamped time step") {
    // dt = softplus(...) falls between 1e-3 and 0.1 here: the limit clamps a good share of it on
    // both sides, and the finite differences see the flat parts. Their step is small (1e-6) so that
    // no time step crosses a limit within it: a dt_bias moves every token of its head at once.
    mixer_config cfg = grad_config(2);
    cfg.dt_min = 0.004;
    cfg.dt_max = 0.03;
    for (index_t P : {0, 5}) {
        CAPTURE(P);
        const std::uint64_t seed = 6200 + std::uint64_t(P);
        {  // the limit does clamp, on both sides (the seeds of check_layer)
            const auto d = to_dims(grad_config(2), 2, 9);
            const auto w = reference::random_weights(d, seed);
            const auto u = reference::random_vector(static_cast<std::size_t>(2 * 9 * cfg.d_model), seed + 1);
            const auto dt = reference::time_steps(d, w, reference::in_projection(d, w, u));
            CHECK(std::count_if(dt.begin(), dt.end(), [&](double v) { return v < cfg.dt_min; }) > 3);
            CHECK(std::count_if(dt.begin(), dt.end(), [&](double v) { return v > cfg.dt_max; }) > 3);
        }
        check_layer<paper_policies>(cfg, 2, 9, P, /*with_state=*/true, seed, 1e-6);
    }
}

TEST_CASE("mixer backward: P > L is read as L") {
    const mixer_config cfg = grad_config(1);
    const index_t L = 7;
    const auto d = to_dims(cfg, 1, L);
    const auto w = reference::random_weights(d, 6300);
    const auto u = reference::random_vector(static_cast<std::size_t>(L * cfg.d_model), 6301);
    const auto R = reference::random_vector(u.size(), 6302);
    const auto init = random_state<double>(d, 6303), R_state = random_state<double>(d, 6304);
    const auto at_L = run_library<double, paper_policies>(cfg, 1, L, L, w, u, init, R, R_state);
    const auto beyond = run_library<double, paper_policies>(cfg, 1, L, L + 5, w, u, init, R, R_state);
    CHECK(beyond.du == at_L.du);
    CHECK(beyond.d_initial == at_L.d_initial);
    CHECK(beyond.params == at_L.params);
}

TEST_CASE("mixer backward: at P = 0 the gradients are a Mamba2 layer's") {
    // The oracle's Mamba2 layer is written on its own (no attention, no converter); at P = 0 the
    // attention variant cannot matter either: every variant gives the same bits.
    const index_t batch = 2, L = 9;
    for (index_t g : {1, 4}) {
        CAPTURE(g);
        const mixer_config cfg = grad_config(g);
        const auto d = to_dims(cfg, batch, L);
        auto w = reference::random_weights(d, 6400 + std::uint64_t(g));
        auto u = reference::random_vector(static_cast<std::size_t>(batch * L * cfg.d_model), 6410);
        auto init = random_state<double>(d, 6411);
        const auto R = reference::random_vector(u.size(), 6412), R_state = random_state<double>(d, 6413);
        const auto loss = [&] {
            const auto r = reference::mamba2_forward(d, w, u, init);
            return dot(r.out, R) + dot(r.final_state, R_state);
        };
        const auto got = run_library<double, paper_policies>(cfg, batch, L, 0, w, u, init, R, R_state);
        compare_with_differences(got, w, u, init, loss);
        for (const auto& other :
             {run_library<double, paper_policies::with_attention<no_skip_attention>>(cfg, batch, L, 0, w, u, init, R, R_state).params,
              run_library<double, paper_policies::with_attention<rope_attention>>(cfg, batch, L, 0, w, u, init, R, R_state).params})
            CHECK(other == got.params);
    }
}

TEST_CASE("mixer backward: at P = L the gradients are an attention-only layer's") {
    // The Transformer layer of the shared weights: in_proj, conv, causal attention, the ungated norm,
    // out_proj. Nothing reaches dt_bias, A_log, the z and dt rows of in_proj or the initial state.
    const index_t batch = 2, L = 9;
    for (index_t g : {1, 2}) {
        CAPTURE(g);
        const mixer_config cfg = grad_config(g);
        const auto d = to_dims(cfg, batch, L);
        auto w = reference::random_weights(d, 6500 + std::uint64_t(g));
        auto u = reference::random_vector(static_cast<std::size_t>(batch * L * cfg.d_model), 6510);
        std::vector<double> no_state;
        const auto R = reference::random_vector(u.size(), 6512);
        const reference::variant var;
        const auto loss = [&] {
            const auto zxbcdt = reference::in_projection(d, w, u);
            const auto xBC = reference::conv_silu(d, w, zxbcdt);
            const auto y = reference::attention(d, var, reference::x_of(d, xBC), reference::B_of(d, xBC),
                                                reference::C_of(d, xBC), w.D, L);
            return dot(reference::out_projection(d, w, reference::gated_rmsnorm(d, var, w, y, zxbcdt, L)), R);
        };
        const auto init = random_state<double>(d, 6511);
        const auto got = run_library<double, paper_policies>(cfg, batch, L, L, w, u, init, R, {});
        compare_with_differences(got, w, u, no_state, loss);
        const auto zero = [](const std::vector<double>& v) { return std::all_of(v.begin(), v.end(), [](double e) { return e == 0; }); };
        CHECK(zero(got.params[3]));  // dt_bias
        CHECK(zero(got.params[4]));  // A_log
        CHECK(zero(got.d_initial));
        const index_t di = cfg.d_inner(), dm = cfg.d_model, dip = cfg.d_in_proj();
        for (index_t row = 0; row < dip; ++row) {
            if (row >= di && row < dip - cfg.nheads()) continue;  // x, B, C rows carry gradient
            for (index_t col = 0; col < dm; ++col) CHECK(got.params[0][std::size_t(row * dm + col)] == 0);
        }
    }
}

TEST_CASE("mixer backward: float agrees with double") {
    for (index_t P : {0, 6, 10}) {
        CAPTURE(P);
        const mixer_config cfg = grad_config(2);
        const index_t batch = 2, L = 10;
        const auto d = to_dims(cfg, batch, L);
        const auto w = rounded<float>(reference::random_weights(d, 6600));
        const auto u = rounded<float>(reference::random_vector(static_cast<std::size_t>(batch * L * cfg.d_model), 6601));
        const auto init = random_state<float>(d, 6602), R_state = random_state<float>(d, 6603);
        const auto R = rounded<float>(reference::random_vector(u.size(), 6604));
        const auto f = run_library<float, paper_policies>(cfg, batch, L, P, w, u, init, R, R_state);
        const auto g = run_library<double, paper_policies>(cfg, batch, L, P, w, u, init, R, R_state);
        double worst = reference::max_relative_error(f.du, g.du);
        worst = std::max(worst, reference::max_relative_error(f.d_initial, g.d_initial));
        for (std::size_t i = 0; i < g.params.size(); ++i) {
            CAPTURE(std::string(weight_names[i]));
            CHECK(reference::max_relative_error(f.params[i], g.params[i]) < 1e-4);
            worst = std::max(worst, reference::max_relative_error(f.params[i], g.params[i]));
        }
        CHECK(worst < 1e-4);
        MESSAGE("float against double, P = " << P << ": largest relative error " << worst);
    }
}

TEST_CASE("mixer backward: bad calls are rejected before anything is written") {
    const mixer_config cfg = grad_config(1);
    using training = mixer_training<double, cpu, paper_policies>;
    mixer<double, cpu> m(cfg);
    randomize(m.params(), 1);
    std::vector<double> u(2 * 5 * 4, 0.1), out(u.size()), du(u.size(), 7.0);
    const extents<3> shape{2, 5, 4};
    training::activations saved;
    workspace<cpu> ws;
    training::forward(m, tensor_view<const double, 3>(u.data(), shape), tensor_view<double, 3>(out.data(), shape), 2,
                      saved, ws);
    mixer_grads<double, cpu> grads(cfg);
    const std::vector<double> u_short(1 * 5 * 4, 0.1);
    CHECK_THROWS_WITH_AS(training::backward(m, tensor_view<const double, 3>(u_short.data(), {1, 5, 4}), saved,
                                            tensor_view<const double, 3>(out.data(), {1, 5, 4}),
                                            tensor_view<double, 3>(du.data(), {1, 5, 4}), grads, ws),
                         doctest::Contains("saved activations are of a pass over (batch 2, L 5)"), error);
    CHECK_THROWS_WITH_AS(training::backward(m, tensor_view<const double, 3>(u.data(), shape), saved,
                                            tensor_view<const double, 3>(out.data(), shape),
                                            tensor_view<double, 3>(du.data(), {2, 5, 3}), grads, ws),
                         doctest::Contains("tensor 'du' has shape (2, 5, 3), expected (2, 5, 4)"), error);
    mixer_grads<double, cpu> other(grad_config(2));
    CHECK_THROWS_WITH_AS(training::backward(m, tensor_view<const double, 3>(u.data(), shape), saved,
                                            tensor_view<const double, 3>(out.data(), shape),
                                            tensor_view<double, 3>(du.data(), shape), other, ws),
                         doctest::Contains("mixer_grads were made for another configuration"), error);
    CHECK(std::all_of(du.begin(), du.end(), [](double e) { return e == 7.0; }));
}

}  // namespace test_block_mixer_backward
