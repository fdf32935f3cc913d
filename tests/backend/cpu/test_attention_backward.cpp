// backend/cpu/attention_backward.hpp: causal attention's gradients (x, B, C, D) from the saved
// log-sum-exp against finite differences of reference::attention, for the attention variants, 1, 2
// and h groups, P from 1 to L and prefixes over more than one tile; the forward's log-sum-exp
// itself; the scratch grows linearly in P (no P x P matrix).
#include <doctest/doctest.h>

#include <transmamba/training.hpp>

#include "support/gradient_check.hpp"

#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_backend_cpu_attention_backward {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

template <class Variant>
reference::variant oracle_variant() {
    reference::variant v;
    v.gate_attention = Variant::gate_by_z;
    v.d_skip_attention = Variant::skip_D;
    v.rope = Variant::position::rotary;
    if constexpr (Variant::position::rotary) v.rope_theta = Variant::position::theta;
    v.scale = Variant::scale::value(4);  // the tests' d_state is 4
    return v;
}

template <class Variant>
double check_attention(index_t batch, index_t L, index_t h, index_t p, index_t g, index_t P, std::uint64_t seed) {
    const index_t n = 4;
    ssm_operands<double> op(batch, L, h, p, n, g, /*chunk=*/4, seed, /*strided=*/true);
    const auto& d = op.d;
    auto x = op.x, B = op.B, C = op.C, D = op.D;
    const auto R = reference::random_vector(op.y_size(), seed + 1);
    const auto var = oracle_variant<Variant>();
    const auto loss = [&] { return dot(reference::attention(d, var, x, B, C, D, int(P)), R); };

    // The forward pass keeps y and the log-sum-exp.
    std::vector<double> y(op.y_size(), 0.0), lse(static_cast<std::size_t>(batch * g * P), nan_value<double>());
    scratch_buffer forward_scratch(attention_kernel<Variant, cpu>::template scratch_bytes<double>(op.cfg, batch, P));
    attention_kernel<Variant, cpu>::run(cpu_context{}, op.cfg, op.in, P, tensor_view<double, 4>(y.data(), op.y_shape()),
                                        forward_scratch.span(), tensor_view<double, 3>(lse.data(), {batch, g, P}));
    CHECK(all_finite(lse));

    ssm_gradient_buffers<double> gb(d);
    using kernel = attention_backward_kernel<Variant, cpu>;
    scratch_buffer scratch(kernel::template scratch_bytes<double>(op.cfg, batch, P));
    kernel::run(cpu_context{}, op.cfg, op.in, P, tensor_view<const double, 4>(y.data(), op.y_shape()),
                tensor_view<const double, 3>(lse.data(), {batch, g, P}),
                tensor_view<const double, 4>(R.data(), op.y_shape()), gb.grads, scratch.span());
    CHECK(gb.pad_untouched());
    CHECK(gb.time_steps() == std::vector<double>(gb.time_steps().size(), 0.0));  // attention reads no dt

    double worst = 0;
    const auto expect = [&](const char* name, const std::vector<double>& got, std::vector<double>& v) {
        const double err = gradient_error(got, central_differences(v, loss));
        const std::string tensor = name;
        CAPTURE(tensor);
        if (std::getenv("GRAD_VERBOSE")) MESSAGE(tensor << " P " << P << " g " << g << " " << err);
        CHECK(err < gradient_tolerance);
        worst = std::max(worst, err);
    };
    expect("x", gb.x(), x);
    expect("B", gb.B(), B);
    expect("C", gb.C(), C);
    expect("D", gb.D_total(), D);
    return worst;
}

}  // namespace

using fixed_scale_attention = attention_variant<false, true, no_position_encoding, fixed_scale<0.3>>;

TEST_CASE_TEMPLATE("attention backward matches finite differences", Variant, paper_attention, no_skip_attention,
                   rope_attention, fixed_scale_attention) {
    // Every (groups, P) for the paper's variant; for the others, which differ from it only in the
    // D skip, the rotation or the scale, three of them.
    std::vector<std::pair<index_t, index_t>> cases{{1, 9}, {2, 6}, {4, 4}};
    if (std::is_same_v<Variant, paper_attention>) {
        cases.clear();
        for (index_t g : {1, 2, 4})
            for (index_t P : {1, 4, 6, 9}) cases.emplace_back(g, P);
    }
    double worst = 0;
    std::uint64_t seed = 8000;
    for (const auto& [g, P] : cases) {
        CAPTURE(g);
        CAPTURE(P);
        worst = std::max(worst, check_attention<Variant>(2, 9, 4, 3, g, P, seed += 10));
    }
    MESSAGE("largest relative error of the attention gradients: " << worst);
}

// The variants change nothing in the tiling (RoPE turns whole rows before it): the paper's one here.
TEST_CASE("attention backward over more than one tile of queries and keys") {
    static_assert(cpu_attention_tuning::query_tile == 64, "the prefix below straddles one tile");
    check_attention<paper_attention>(1, 68, 2, 2, 1, 67, 8567);
}

TEST_CASE("attention forward: the saved log-sum-exp is log sum_j exp(scale C_i . B_j) over j <= i") {
    const index_t batch = 2, L = 7, h = 4, p = 3, n = 4, g = 2, P = 6;
    ssm_operands<double> op(batch, L, h, p, n, g, 4, 8600, true);
    std::vector<double> y(op.y_size(), 0.0), lse(static_cast<std::size_t>(batch * g * P));
    scratch_buffer scratch(attention_kernel<paper_attention, cpu>::scratch_bytes<double>(op.cfg, batch, P));
    attention_kernel<paper_attention, cpu>::run(cpu_context{}, op.cfg, op.in, P, tensor_view<double, 4>(y.data(), op.y_shape()),
                                                scratch.span(), tensor_view<double, 3>(lse.data(), {batch, g, P}));
    double worst = 0;
    for (index_t b = 0; b < batch; ++b)
        for (index_t grp = 0; grp < g; ++grp)
            for (index_t i = 0; i < P; ++i) {
                double sum = 0;
                for (index_t j = 0; j <= i; ++j) {
                    double s = 0;
                    for (index_t e = 0; e < n; ++e) s += op.C[std::size_t(((b * L + i) * g + grp) * n + e)] * op.B[std::size_t(((b * L + j) * g + grp) * n + e)];
                    sum += std::exp(s / 2.0);  // scale 1/sqrt(4)
                }
                worst = std::max(worst, std::abs(lse[std::size_t((b * g + grp) * P + i)] - std::log(sum)));
            }
    CHECK(worst < 1e-13);
}

TEST_CASE("attention backward: the scratch grows linearly with the prefix") {
    const mixer_config cfg = kernel_config(4, 16, 16, 1, 64);
    using kernel = attention_backward_kernel<paper_attention, cpu>;
    const double at_2k = double(kernel::scratch_bytes<float>(cfg, 1, 2048));
    const double at_4k = double(kernel::scratch_bytes<float>(cfg, 1, 4096));
    CHECK(at_4k < 2.05 * at_2k);  // a P x P matrix would make it 4x
}

}  // namespace test_backend_cpu_attention_backward
