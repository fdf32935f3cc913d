// block/mixer_backward.hpp: the whole mixer's gradients (every parameter, the input u, the initial
// state, from a loss on the output and on the final state) against central finite differences of
// the float64 oracle, across TransPoints, group counts and policies; the identities at P = 0 (a
// Mamba2 layer's gradients) and P = L (an attention-only layer's); float against double;
// NaN-poisoned gradient buffers.
#include <doctest/doctest.h>

#include <transmamba/training.hpp>

#include "support/gradient_check.hpp"

#include <functional>
#include <string>
#include <vector>

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

// d_model 8, d_inner 16, h = 4 heads of 4, n = 4, chunk 4: tiny, so that the finite differences
// over every one of the ~1000 inputs stay fast under the sanitizers.
mixer_config grad_config(index_t ngroups) {
    mixer_config c = small_config(8, 4, 4, ngroups, 4);
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
                                double tol = gradient_tolerance) {
    double worst = 0;
    std::size_t i = 0;
    for_each_oracle_weight(w, [&](std::vector<double>& tensor) {
        const auto want = central_differences(tensor, loss);
        const double err = reference::max_relative_error(got.params[i], want);
        CAPTURE(weight_names[i]);
        CHECK(err < tol);
        if (getenv("GRAD_VERBOSE")) MESSAGE(std::string(weight_names[i]) << " " << err);
        worst = std::max(worst, err);
        ++i;
    });
    const double err_u = reference::max_relative_error(got.du, central_differences(u, loss));
    CHECK_MESSAGE(err_u < tol, "du");
    worst = std::max(worst, err_u);
    if (!init.empty()) {
        const double err_s = reference::max_relative_error(got.d_initial, central_differences(init, loss));
        CHECK_MESSAGE(err_s < tol, "d initial_state");
        worst = std::max(worst, err_s);
    }
    return worst;
}

}  // namespace

namespace {

template <class Policies>
double check_layer(index_t ngroups, index_t batch, index_t L, index_t P, bool with_state, std::uint64_t seed,
                   mixer_config cfg_override = {}, bool use_override = false) {
    const mixer_config cfg = use_override ? cfg_override : grad_config(ngroups);
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
    return compare_with_differences(got, w, u, init, loss);
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
            worst = std::max(worst, check_layer<paper_policies>(g, batch, L, P, /*with_state=*/(P + g) % 2 == 0, seed += 10));
        }
    MESSAGE("largest relative error of the mixer's gradients: " << worst);
}
