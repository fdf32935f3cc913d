// decode_scan_kernel<cpu>: one token's state update for a batch of sequences against the oracle's
// recurrence over that one token (reference::ssm_recurrence with L = 1 from a random state).
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include "support/fixtures.hpp"

#include <limits>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_backend_cpu_decode_scan {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

template <class T>
void check_decode_scan(index_t batch, index_t h, index_t p, index_t n, index_t g, bool strided, std::uint64_t seed,
                       double bound) {
    CAPTURE(batch);
    CAPTURE(h);
    CAPTURE(p);
    CAPTURE(n);
    CAPTURE(g);
    CAPTURE(strided);
    ssm_operands<T> ops(batch, 1, h, p, n, g, 64, seed, strided);
    const auto S0 = random_state<T>(ops.d, seed + 11);
    const auto want = reference::ssm_recurrence(ops.d, ops.x, ops.B, ops.C, ops.dt, ops.A, ops.D, S0);

    std::vector<T> S = to_vector<T>(S0), y(ops.y_size(), nan_value<T>());
    decode_scan_kernel<cpu>::run(cpu_context{}, ops.cfg, ops.in, tensor_view<T, 4>(y.data(), ops.y_shape()),
                                 tensor_view<T, 4>(S.data(), ops.state_shape()));
    CHECK(reference::max_relative_error(std::vector<double>(y.begin(), y.end()), want.y) <= bound);
    CHECK(reference::max_relative_error(std::vector<double>(S.begin(), S.end()), want.final_state) <= bound);
}

}  // namespace

TEST_CASE_TEMPLATE("decode_scan<cpu>: one token of a batch equals the recurrence", T, float, double) {
    const double bound = std::is_same_v<T, float> ? 2e-6 : 1e-13;
    std::uint64_t seed = 900;
    check_decode_scan<T>(1, 4, 16, 32, 1, false, ++seed, bound);
    check_decode_scan<T>(3, 4, 16, 32, 2, true, ++seed, bound);
    check_decode_scan<T>(2, 8, 64, 128, 8, false, ++seed, bound);
    check_decode_scan<T>(5, 6, 32, 16, 3, true, ++seed, bound);
    check_decode_scan<T>(64, 8, 64, 128, 1, false, ++seed, bound);  // large enough for the threaded path
}

TEST_CASE("decode_scan<cpu>: bad shapes are a transmamba::error that names them") {
    ssm_operands<float> ops(2, 1, 4, 16, 32, 2, 64, 7, false);
    std::vector<float> S(ops.state_size()), y(ops.y_size());
    const tensor_view<float, 4> yv(y.data(), ops.y_shape()), Sv(S.data(), ops.state_shape());
    auto wrong = ops.cfg;
    wrong.d_state = 16;
    CHECK_THROWS_WITH_AS(decode_scan_kernel<cpu>::run(cpu_context{}, wrong, ops.in, yv, Sv),
                         doctest::Contains("do not match the configuration"), error);
    const tensor_view<float, 4> short_state(S.data(), {1, 4, 16, 32});
    CHECK_THROWS_WITH_AS(decode_scan_kernel<cpu>::run(cpu_context{}, ops.cfg, ops.in, yv, short_state),
                         doctest::Contains("state"), error);
    ssm_operands<float> two(2, 2, 4, 16, 32, 2, 64, 8, false);
    CHECK_THROWS_WITH_AS(decode_scan_kernel<cpu>::run(cpu_context{}, two.cfg, two.in,
                                                      tensor_view<float, 4>(y.data(), {2, 2, 4, 16}), Sv),
                         doctest::Contains("one token"), error);
}

}  // namespace test_backend_cpu_decode_scan
