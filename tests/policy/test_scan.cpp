// scan_kernel<sequential_scan, cpu> and scan_kernel<chunked_ssd_scan, cpu> against the oracle's
// recurrence (SPEC.md section 3): S_t = a_t S_{t-1} + dt_t x_t B_t^T, y_t = S_t C_t + D x_t, over a
// token range [t_begin, t_end) from a random initial state. Rows outside the range must stay as the
// caller left them (NaN here), the final state must match too.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include "support/fixtures.hpp"

#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_policy_scan {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

template <class T>
struct scan_result {
    std::vector<T> y;      // (b, L, h, p), NaN outside the range
    std::vector<T> state;  // (b, h, p, n)
};

template <class Scan, class T>
scan_result<T> run_scan(const ssm_operands<T>& ops, index_t t_begin, index_t t_end, const std::vector<double>& init) {
    using kernel = scan_kernel<Scan, cpu>;
    scan_result<T> r{std::vector<T>(ops.y_size(), nan_value<T>()),
                     init.empty() ? std::vector<T>(ops.state_size(), T(0)) : to_vector<T>(init)};
    scratch_buffer scratch(kernel::template scratch_bytes<T>(ops.cfg, ops.d.batch, ops.d.seqlen));
    kernel::run(cpu_context{}, ops.cfg, ops.in, t_begin, t_end, tensor_view<T, 4>(r.y.data(), ops.y_shape()),
                tensor_view<T, 4>(r.state.data(), ops.state_shape()), scratch.span());
    return r;
}

struct scan_case {
    index_t batch, L, h, p, n, g, chunk, t_begin, t_end;
    bool strided;
};

// A spread of shapes rather than their product, to keep the suite fast: every headdim and d_state
// in {16, 64, 128}, ngroups 1, 2 and nheads, chunk 16 and 64, ranges starting inside a chunk,
// lengths that are not multiples of the chunk, L = 1 and an empty range.
const scan_case cases[] = {
    {2, 1, 2, 16, 16, 1, 16, 0, 1, false},
    {2, 1, 2, 16, 16, 2, 64, 0, 1, true},
    {2, 100, 4, 16, 16, 2, 16, 0, 100, true},
    {2, 150, 2, 64, 64, 1, 64, 37, 150, false},
    {2, 130, 4, 16, 128, 4, 64, 5, 117, true},  // ngroups == nheads
    {2, 70, 1, 128, 16, 1, 16, 0, 70, false},
    {2, 90, 2, 64, 128, 2, 16, 19, 83, true},  // ngroups == nheads, range inside chunks at both ends
    {2, 81, 4, 16, 64, 1, 64, 64, 81, false},   // starts on a chunk boundary, ends inside one
    {2, 40, 2, 16, 64, 2, 16, 23, 24, true},    // a single token
    {2, 33, 2, 16, 16, 1, 16, 33, 33, false},   // empty range at the end
    {2, 33, 2, 16, 16, 1, 16, 10, 10, true},    // empty range in the middle
};

template <class Scan, class T>
void check_against_oracle(const scan_case& c, std::uint64_t seed) {
    CAPTURE(c.L);
    CAPTURE(c.h);
    CAPTURE(c.p);
    CAPTURE(c.n);
    CAPTURE(c.g);
    CAPTURE(c.chunk);
    CAPTURE(c.t_begin);
    CAPTURE(c.t_end);
    CAPTURE(c.strided);
    const ssm_operands<T> ops(c.batch, c.L, c.h, c.p, c.n, c.g, c.chunk, seed, c.strided);
    const auto init = random_state<T>(ops.d, seed + 1000);
    const auto want = reference::ssm_recurrence(ops.d, ops.x, ops.B, ops.C, ops.dt, ops.A, ops.D, init,
                                                int(c.t_begin), int(c.t_end));
    const auto got = run_scan<Scan, T>(ops, c.t_begin, c.t_end, init);
    const index_t width = c.h * c.p;
    CHECK(reference::max_relative_error(rows_of(got.y, c.batch, c.L, width, c.t_begin, c.t_end),
                                        rows_of(want.y, c.batch, c.L, width, c.t_begin, c.t_end)) <= tolerance<T>());
    CHECK(rows_all_nan(got.y, c.batch, c.L, width, 0, c.t_begin));
    CHECK(rows_all_nan(got.y, c.batch, c.L, width, c.t_end, c.L));
    CHECK(reference::max_relative_error(reference::to_double(got.state), want.final_state) <= tolerance<T>());
    if (c.t_begin == c.t_end) CHECK(reference::to_double(got.state) == init);  // nothing read, nothing decayed
}

}  // namespace

TEST_CASE_TEMPLATE("scan_kernel<sequential_scan, cpu> matches the oracle's recurrence", T, float, double) {
    std::uint64_t seed = 100;
    for (const auto& c : cases) check_against_oracle<sequential_scan, T>(c, seed++);
}

TEST_CASE_TEMPLATE("scan_kernel<chunked_ssd_scan, cpu> matches the oracle's recurrence", T, float, double) {
    std::uint64_t seed = 200;
    for (const auto& c : cases) check_against_oracle<chunked_ssd_scan, T>(c, seed++);
}

TEST_CASE_TEMPLATE("scan: a zero initial state matches the oracle started from zeros", T, float, double) {
    const ssm_operands<T> ops(2, 75, 2, 16, 64, 1, 16, 300, true);
    const auto want = reference::ssm_recurrence(ops.d, ops.x, ops.B, ops.C, ops.dt, ops.A, ops.D, {}, 0, 75);
    for (int which = 0; which < 2; ++which) {
        CAPTURE(which);
        const auto got = which ? run_scan<chunked_ssd_scan, T>(ops, 0, 75, {}) : run_scan<sequential_scan, T>(ops, 0, 75, {});
        CHECK(reference::max_relative_error(reference::to_double(got.y), want.y) <= tolerance<T>());
        CHECK(reference::max_relative_error(reference::to_double(got.state), want.final_state) <= tolerance<T>());
    }
}

TEST_CASE_TEMPLATE("identity: chunked SSD equals the sequential scan", T, float, double) {
    // Same operands, several chunk sizes, including chunks longer than the range.
    std::uint64_t seed = 400;
    for (index_t chunk : {1, 7, 16, 64, 256}) {
        CAPTURE(chunk);
        ssm_operands<T> ops(2, 140, 4, 16, 32, 2, chunk, seed++, true);
        const auto init = random_state<T>(ops.d, seed++);
        const auto seq = run_scan<sequential_scan, T>(ops, 9, 140, init);
        const auto chk = run_scan<chunked_ssd_scan, T>(ops, 9, 140, init);
        const index_t w = 4 * 16;
        CHECK(reference::max_relative_error(rows_of(chk.y, 2, 140, w, 9, 140), rows_of(seq.y, 2, 140, w, 9, 140)) <=
              tolerance<T>());
        CHECK(reference::max_relative_error(reference::to_double(chk.state), reference::to_double(seq.state)) <=
              tolerance<T>());
        CHECK(rows_all_nan(chk.y, 2, 140, w, 0, 9));
    }
}

TEST_CASE_TEMPLATE("identity: a scan split in two continues through its state", T, float, double) {
    const ssm_operands<T> ops(2, 120, 2, 64, 16, 2, 16, 500, false);
    const auto init = random_state<T>(ops.d, 501);
    const index_t w = 2 * 64;
    for (int which = 0; which < 2; ++which) {
        CAPTURE(which);
        auto run = [&](index_t a, index_t b, const std::vector<double>& s) {
            return which ? run_scan<chunked_ssd_scan, T>(ops, a, b, s) : run_scan<sequential_scan, T>(ops, a, b, s);
        };
        const auto whole = run(0, 120, init);
        const auto first = run(0, 53, init);
        const auto second = run(53, 120, reference::to_double(first.state));
        CHECK(reference::max_relative_error(rows_of(first.y, 2, 120, w, 0, 53), rows_of(whole.y, 2, 120, w, 0, 53)) <=
              tolerance<T>());
        CHECK(reference::max_relative_error(rows_of(second.y, 2, 120, w, 53, 120),
                                            rows_of(whole.y, 2, 120, w, 53, 120)) <= tolerance<T>());
        CHECK(reference::max_relative_error(reference::to_double(second.state), reference::to_double(whole.state)) <=
              tolerance<T>());
    }
}

TEST_CASE_TEMPLATE("scan: strided views (x, B, C inside one wider row) give the contiguous result", T, float, double) {
    // The same numbers laid out both ways (the operands are drawn from the same seed).
    const ssm_operands<T> flat(2, 50, 4, 16, 16, 2, 16, 600, false);
    const ssm_operands<T> wide(2, 50, 4, 16, 16, 2, 16, 600, true);
    REQUIRE(wide.in.x.stride(1) != wide.in.x.extent(2) * wide.in.x.extent(3));  // really strided
    REQUIRE(flat.x == wide.x);
    const auto init = random_state<T>(flat.d, 601);
    for (int which = 0; which < 2; ++which) {
        CAPTURE(which);
        const auto a = which ? run_scan<chunked_ssd_scan, T>(flat, 3, 50, init) : run_scan<sequential_scan, T>(flat, 3, 50, init);
        const auto b = which ? run_scan<chunked_ssd_scan, T>(wide, 3, 50, init) : run_scan<sequential_scan, T>(wide, 3, 50, init);
        CHECK(reference::max_relative_error(rows_of(a.y, 2, 50, 64, 3, 50), rows_of(b.y, 2, 50, 64, 3, 50)) <=
              tolerance<T>());
        CHECK(reference::max_relative_error(reference::to_double(a.state), reference::to_double(b.state)) <=
              tolerance<T>());
    }
}

TEST_CASE("scan: a state that is not contiguous is rejected before anything is written") {
    const ssm_operands<double> ops(1, 8, 2, 16, 16, 1, 16, 700, false);
    std::vector<double> y(ops.y_size(), -7.0), state(2 * ops.state_size(), 0.0);
    const auto shape = ops.state_shape();
    // every other d_state column: a strided view
    const tensor_view<double, 4> strided(state.data(), shape, {shape[1] * shape[2] * shape[3] * 2,
                                                                shape[2] * shape[3] * 2, shape[3] * 2, 2});
    const tensor_view<double, 4> yv(y.data(), ops.y_shape());
    scratch_buffer scratch(scan_kernel<chunked_ssd_scan, cpu>::scratch_bytes<double>(ops.cfg, 1, 8));
    using chunked = scan_kernel<chunked_ssd_scan, cpu>;
    using sequential = scan_kernel<sequential_scan, cpu>;
    CHECK_THROWS_WITH_AS(chunked::run(cpu_context{}, ops.cfg, ops.in, 0, 8, yv, strided, scratch.span()),
                         doctest::Contains("state must be contiguous"), error);
    CHECK_THROWS_WITH_AS(sequential::run(cpu_context{}, ops.cfg, ops.in, 0, 8, yv, strided, scratch.span()),
                         doctest::Contains("state must be contiguous"), error);
    CHECK(all_equal(y, -7.0));
}

}  // namespace test_policy_scan
