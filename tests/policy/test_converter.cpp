// converter_kernel<exact_converter, cpu> against the oracle (SPEC.md section 3, paper eq. 8-9):
//   S_{P-1} = sum_{j<P} (prod_{m=j+1}^{P-1} a_m) dt_j x_j B_j^T
// from zeros it equals reference::converter_state; from any initial state it equals the state the
// recurrence reaches after tokens 0..P-1 (the converter is exact).
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include "support/fixtures.hpp"

#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_policy_converter {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

template <class T>
std::vector<T> run_converter(const ssm_operands<T>& ops, index_t P, const std::vector<double>& init) {
    using kernel = converter_kernel<exact_converter, cpu>;
    std::vector<T> state = init.empty() ? std::vector<T>(ops.state_size(), T(0)) : to_vector<T>(init);
    scratch_buffer scratch(kernel::template scratch_bytes<T>(ops.cfg, ops.d.batch, ops.d.seqlen));
    kernel::run(cpu_context{}, ops.cfg, ops.in, P, tensor_view<T, 4>(state.data(), ops.state_shape()), scratch.span());
    return state;
}

struct converter_shape {
    index_t h, p, n, g, chunk;
    bool strided;
};

const converter_shape shapes[] = {
    {2, 16, 16, 1, 16, true},
    {4, 16, 64, 2, 16, false},
    {2, 64, 32, 2, 64, true},  // ngroups == nheads
    {1, 128, 16, 1, 16, false},
    {2, 16, 128, 1, 64, true},
};

}  // namespace

TEST_CASE_TEMPLATE("converter_kernel<exact_converter, cpu> from zeros matches reference::converter_state", T, float,
                   double) {
    std::uint64_t seed = 10000;
    for (const auto& s : shapes) {
        const index_t Q = s.chunk;
        for (index_t P : {index_t(1), Q - 1, Q, Q + 1, 3 * Q + 5}) {
            CAPTURE(s.h);
            CAPTURE(s.p);
            CAPTURE(s.n);
            CAPTURE(s.g);
            CAPTURE(Q);
            CAPTURE(P);
            const index_t L = P + 3;  // tokens after P exist and must not be read
            const ssm_operands<T> ops(2, L, s.h, s.p, s.n, s.g, Q, seed++, s.strided);
            const auto want = reference::converter_state(ops.d, ops.x, ops.B, ops.dt, ops.A, int(P));
            const auto got = reference::to_double(run_converter<T>(ops, P, {}));
            CHECK(reference::max_relative_error(got, want) <= tolerance<T>());
        }
    }
}

TEST_CASE_TEMPLATE("converter from a random initial state equals the recurrence's state after P tokens", T, float,
                   double) {
    std::uint64_t seed = 20000;
    for (const auto& s : shapes) {
        const index_t Q = s.chunk;
        for (index_t P : {index_t(1), Q - 1, Q, Q + 1, 3 * Q + 5}) {
            CAPTURE(s.h);
            CAPTURE(s.n);
            CAPTURE(s.g);
            CAPTURE(Q);
            CAPTURE(P);
            const index_t L = P + 5;
            const ssm_operands<T> ops(2, L, s.h, s.p, s.n, s.g, Q, seed++, s.strided);
            const auto init = random_state<T>(ops.d, seed++);
            const auto want =
                reference::ssm_recurrence(ops.d, ops.x, ops.B, ops.C, ops.dt, ops.A, ops.D, init, 0, int(P)).final_state;
            const auto got = reference::to_double(run_converter<T>(ops, P, init));
            CHECK(reference::max_relative_error(got, want) <= tolerance<T>());
        }
    }
}

TEST_CASE_TEMPLATE("converter: P = 0 leaves the state as it was", T, float, double) {
    const ssm_operands<T> ops(2, 10, 2, 16, 16, 1, 16, 30000, true);
    const auto init = random_state<T>(ops.d, 30001);
    CHECK(reference::to_double(run_converter<T>(ops, 0, init)) == init);
}

TEST_CASE_TEMPLATE("converter: a long prefix (P = 3001) does not drift from the recurrence", T, float, double) {
    // Slow decays (|A| dt small) so that tokens thousands of steps back, and the initial state,
    // still weigh in the final state: a drifting cumulative sum would show.
    const index_t P = 3001;
    const ssm_operands<T> ops(1, P, 2, 16, 16, 1, 64, 40000, true, /*A in*/ -0.05, -0.01, /*dt in*/ 1e-3, 0.05);
    const auto init = random_state<T>(ops.d, 40001);
    const auto want = reference::ssm_recurrence(ops.d, ops.x, ops.B, ops.C, ops.dt, ops.A, ops.D, init, 0, int(P));
    const auto got = reference::to_double(run_converter<T>(ops, P, init));
    CHECK(reference::max_relative_error(got, want.final_state) <= tolerance<T>());
    // the initial state really does survive the prefix (else its decay would be untested)
    const auto without_init =
        reference::ssm_recurrence(ops.d, ops.x, ops.B, ops.C, ops.dt, ops.A, ops.D, {}, 0, int(P)).final_state;
    CHECK(reference::max_relative_error(without_init, want.final_state) > 1e-3);
}

TEST_CASE("converter: a state that is not contiguous is rejected") {
    const ssm_operands<double> ops(1, 8, 2, 16, 16, 1, 16, 50000, false);
    std::vector<double> state(2 * ops.state_size(), -1.0);
    const auto sh = ops.state_shape();
    const tensor_view<double, 4> strided(state.data(), sh, {sh[1] * sh[2] * sh[3] * 2, sh[2] * sh[3] * 2, sh[3] * 2, 2});
    using kernel = converter_kernel<exact_converter, cpu>;
    scratch_buffer scratch(kernel::scratch_bytes<double>(ops.cfg, 1, 8));
    CHECK_THROWS_WITH_AS(kernel::run(cpu_context{}, ops.cfg, ops.in, 5, strided, scratch.span()),
                         doctest::Contains("state must be contiguous"), error);
    CHECK(all_equal(state, -1.0));
}

}  // namespace test_policy_converter
