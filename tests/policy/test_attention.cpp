// attention_kernel<Variant, cpu> against the oracle's causal softmax attention (SPEC.md section 3):
// Q = C, K = B, V = x, one softmax per (group, query) shared by the group's heads, + D x unless the
// variant drops the skip, RoPE on C and B for rope_attention. Rows t >= P must stay untouched.
// (z_gated_attention runs this same kernel; its gate is applied in the mixer and tested there.)
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include "support/fixtures.hpp"

#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_policy_attention {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

using half_scale_attention = attention_variant<false, true, no_position_encoding, fixed_scale<0.5>>;

template <class Variant>
reference::variant oracle_variant() {
    reference::variant v;
    v.gate_attention = Variant::gate_by_z;
    v.d_skip_attention = Variant::skip_D;
    v.rope = Variant::position::rotary;
    if constexpr (Variant::position::rotary) v.rope_theta = Variant::position::theta;
    if constexpr (std::is_same_v<Variant, half_scale_attention>) v.scale = 0.5;
    return v;
}

template <class Variant, class T>
std::vector<T> run_attention(const ssm_operands<T>& ops, index_t P) {
    using kernel = attention_kernel<Variant, cpu>;
    std::vector<T> y(ops.y_size(), nan_value<T>());
    scratch_buffer scratch(kernel::template scratch_bytes<T>(ops.cfg, ops.d.batch, P));
    kernel::run(cpu_context{}, ops.cfg, ops.in, P, tensor_view<T, 4>(y.data(), ops.y_shape()), scratch.span());
    return y;
}

struct attention_case {
    index_t L, h, p, n, g, P;
    bool strided;
};

// P around the query tile (64): 1, 63, 64, 65 and 200 (several tiles, the last one partial);
// ngroups 1, 2 and nheads; L > P so that rows t >= P exist and must stay NaN.
const attention_case cases[] = {
    {5, 2, 16, 16, 1, 1, true},      {70, 4, 16, 32, 2, 63, false},  {66, 4, 16, 16, 4, 64, true},
    {67, 2, 32, 64, 1, 65, false},   {203, 4, 16, 16, 2, 200, true}, {130, 2, 64, 16, 2, 65, true},
    {64, 1, 16, 128, 1, 64, false},  // P = L: no row is left over
};

template <class Variant, class T>
void check_variant(std::uint64_t seed) {
    const auto var = oracle_variant<Variant>();
    for (const auto& c : cases) {
        CAPTURE(c.L);
        CAPTURE(c.h);
        CAPTURE(c.g);
        CAPTURE(c.n);
        CAPTURE(c.P);
        const ssm_operands<T> ops(2, c.L, c.h, c.p, c.n, c.g, 64, seed++, c.strided);
        const auto want = reference::attention(ops.d, var, ops.x, ops.B, ops.C, ops.D, int(c.P));
        const auto got = run_attention<Variant, T>(ops, c.P);
        const index_t w = c.h * c.p;
        CHECK(reference::max_relative_error(rows_of(got, 2, c.L, w, 0, c.P), rows_of(want, 2, c.L, w, 0, c.P)) <=
              tolerance<T>());
        CHECK(rows_all_nan(got, 2, c.L, w, c.P, c.L));
    }
}

}  // namespace

TEST_CASE_TEMPLATE("attention_kernel<paper_attention, cpu> matches the oracle", T, float, double) {
    check_variant<paper_attention, T>(1000);
}

TEST_CASE_TEMPLATE("attention_kernel<no_skip_attention, cpu> matches the oracle without D x", T, float, double) {
    check_variant<no_skip_attention, T>(2000);
}

TEST_CASE_TEMPLATE("attention_kernel<rope_attention, cpu> matches the oracle with RoPE on C and B", T, float, double) {
    check_variant<rope_attention, T>(3000);
}

TEST_CASE_TEMPLATE("attention_kernel with fixed_scale<0.5> matches the oracle at scale 0.5", T, float, double) {
    check_variant<half_scale_attention, T>(4000);
}

TEST_CASE_TEMPLATE("attention_kernel<z_gated_attention, cpu> is the paper kernel (the gate is the mixer's)", T, float,
                   double) {
    const ssm_operands<T> ops(2, 70, 4, 16, 16, 2, 64, 5000, true);
    const auto a = run_attention<z_gated_attention, T>(ops, 66);
    const auto b = run_attention<paper_attention, T>(ops, 66);
    CHECK(rows_of(a, 2, 70, 64, 0, 66) == rows_of(b, 2, 70, 64, 0, 66));
    CHECK(rows_all_nan(a, 2, 70, 64, 66, 70));
}

TEST_CASE("attention variants differ from each other (so each comparison above can fail)") {
    const ssm_operands<double> ops(1, 40, 2, 16, 16, 1, 64, 6000, false);
    const auto paper = rows_of(run_attention<paper_attention, double>(ops, 40), 1, 40, 32, 0, 40);
    CHECK(reference::max_relative_error(rows_of(run_attention<no_skip_attention, double>(ops, 40), 1, 40, 32, 0, 40),
                                        paper) > 1e-3);
    CHECK(reference::max_relative_error(rows_of(run_attention<rope_attention, double>(ops, 40), 1, 40, 32, 0, 40),
                                        paper) > 1e-3);
    CHECK(reference::max_relative_error(rows_of(run_attention<half_scale_attention, double>(ops, 40), 1, 40, 32, 0, 40),
                                        paper) > 1e-3);
}

TEST_CASE("attention_kernel: P = 0 writes nothing") {
    const ssm_operands<float> ops(2, 10, 2, 16, 16, 1, 64, 7000, true);
    const auto y = run_attention<paper_attention, float>(ops, 0);
    CHECK(rows_all_nan(y, 2, 10, 32, 0, 10));
}

TEST_CASE("attention_kernel<rope_attention>: an odd d_state is rejected naming it") {
    const ssm_operands<double> ops(1, 4, 1, 16, 15, 1, 64, 8000, false);
    std::vector<double> y(ops.y_size(), -3.0);
    using kernel = attention_kernel<rope_attention, cpu>;
    scratch_buffer scratch(kernel::scratch_bytes<double>(ops.cfg, 1, 4));
    CHECK_THROWS_WITH_AS(kernel::run(cpu_context{}, ops.cfg, ops.in, 4, tensor_view<double, 4>(y.data(), ops.y_shape()),
                                     scratch.span()),
                         doctest::Contains("even d_state, got 15"), error);
    CHECK(all_equal(y, -3.0));
}

}  // namespace test_policy_attention
