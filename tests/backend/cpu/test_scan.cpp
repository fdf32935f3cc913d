// The CPU scan kernels' own paths (backend/cpu/scan.hpp) against the oracle's float64 recurrence:
// row-wise for spans shorter than scan_tuning::min_tiled_span, register tiles over the transposed
// state (token by token for sequential_scan, blocks for chunked_ssd_scan) for longer ones. The shapes
// aim at the tiling's edges: headdim not a multiple of the packet width (padded rows), d_state not a
// multiple of the tile's columns, head counts that split unevenly into tasks, spans either side of the
// row-wise threshold, blocks cut by the range's end, and decays strong enough to underflow.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include "support/fixtures.hpp"

#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_backend_cpu_scan {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

template <class T>
struct scan_result {
    std::vector<T> y;
    std::vector<T> state;
};

template <class Scan, class T>
scan_result<T> run_scan(const ssm_operands<T>& ops, index_t t_begin, index_t t_end, const std::vector<double>& init) {
    using kernel = scan_kernel<Scan, cpu>;
    scan_result<T> r{std::vector<T>(ops.y_size(), nan_value<T>()), to_vector<T>(init)};
    scratch_buffer scratch(kernel::template scratch_bytes<T>(ops.cfg, ops.d.batch, ops.d.seqlen));
    kernel::run(cpu_context{}, ops.cfg, ops.in, t_begin, t_end, tensor_view<T, 4>(r.y.data(), ops.y_shape()),
                tensor_view<T, 4>(r.state.data(), ops.state_shape()), scratch.span());
    return r;
}

struct tiling_case {
    index_t batch, L, h, p, n, g, chunk, t_begin, t_end;
    bool strided;
    double a_lo = -1.5, a_hi = -0.05, dt_lo = 1e-3, dt_hi = 0.2;
};

constexpr index_t min_tiled = kernels::cpu::scan_tuning<float>::min_tiled_span;
static_assert(kernels::cpu::scan_tuning<double>::min_tiled_span == min_tiled);

const tiling_case cases[] = {
    // P = 0, inside, L over one sequence length; ggml's head shape (64 x 128) in small numbers of heads
    {1, 150, 3, 64, 128, 1, 64, 0, 150, true},
    {2, 150, 3, 64, 128, 1, 64, 61, 150, true},
    {2, 150, 3, 64, 128, 1, 64, 150, 150, true},
    // headdim not a multiple of any packet width: padded rows
    {2, 90, 5, 5, 16, 1, 16, 0, 90, false},
    {1, 70, 4, 20, 64, 2, 32, 3, 70, true},
    {1, 77, 2, 80, 32, 1, 256, 0, 77, false},  // 5 float packets of 16: one full slice and an edge
    {1, 40, 2, 1, 8, 2, 16, 0, 40, true},      // one channel per head, ngroups == nheads
    // d_state not a multiple of the tile's columns
    {2, 60, 3, 16, 13, 1, 16, 7, 60, true},
    {1, 50, 2, 32, 130, 2, 64, 0, 50, false},
    {1, 45, 2, 16, 1, 1, 7, 0, 45, true},
    // many heads, uneven tasks, groups crossing tasks
    {2, 40, 11, 16, 32, 1, 16, 0, 40, true},
    {1, 40, 12, 16, 16, 3, 16, 9, 40, false},
    {1, 33, 24, 16, 16, 24, 16, 0, 33, true},
    // spans either side of the row-wise threshold, starting anywhere
    {2, 30, 3, 64, 128, 1, 16, 0, min_tiled - 1, true},
    {2, 30, 3, 64, 128, 1, 16, 5, 5 + min_tiled, true},
    {2, 30, 3, 20, 13, 1, 16, 29, 30, false},
    {2, 30, 3, 20, 13, 1, 16, 11, 11 + min_tiled + 1, true},
    // chunks (blocks) of 1, 7 and longer than the span; blocks cut by the end of the range
    {1, 53, 2, 16, 32, 1, 1, 4, 53, true},
    {1, 53, 2, 16, 32, 1, 7, 4, 53, false},
    {1, 53, 2, 16, 32, 1, 512, 4, 53, true},
    // strong decays: a = exp(dt A) down to e^-30, products of a block underflow to zero
    {1, 64, 2, 16, 32, 1, 16, 0, 64, true, -30.0, -10.0, 0.5, 1.0},
    // weak decays over a long span: the state grows, errors could accumulate
    {1, 600, 2, 16, 32, 1, 64, 0, 600, false, -0.01, -0.001, 1e-3, 0.05},
};

template <class Scan, class T>
void check_case(const tiling_case& c, std::uint64_t seed) {
    CAPTURE(c.batch);
    CAPTURE(c.L);
    CAPTURE(c.h);
    CAPTURE(c.p);
    CAPTURE(c.n);
    CAPTURE(c.g);
    CAPTURE(c.chunk);
    CAPTURE(c.t_begin);
    CAPTURE(c.t_end);
    const ssm_operands<T> ops(c.batch, c.L, c.h, c.p, c.n, c.g, c.chunk, seed, c.strided, c.a_lo, c.a_hi, c.dt_lo,
                              c.dt_hi);
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
    if (c.t_begin == c.t_end) CHECK(reference::to_double(got.state) == init);
}

}  // namespace

TEST_CASE_TEMPLATE("cpu sequential_scan: every tiling edge matches the oracle", T, float, double) {
    std::uint64_t seed = 9100;
    for (const auto& c : cases) check_case<sequential_scan, T>(c, seed++);
}

TEST_CASE_TEMPLATE("cpu chunked_ssd_scan: every tiling edge matches the oracle", T, float, double) {
    std::uint64_t seed = 9200;
    for (const auto& c : cases) check_case<chunked_ssd_scan, T>(c, seed++);
}

TEST_CASE_TEMPLATE("cpu scan: token by token, one call per token, equals one call over the span", T, float,
                   double) {
    // The decoding pattern: spans of one token (row-wise) continue exactly where a tiled call ended.
    const ssm_operands<T> ops(2, 40, 3, 64, 128, 1, 16, 9300, true);
    const auto init = random_state<T>(ops.d, 9301);
    for (int which = 0; which < 2; ++which) {
        CAPTURE(which);
        auto run = [&](index_t a, index_t b, const std::vector<double>& s) {
            return which ? run_scan<chunked_ssd_scan, T>(ops, a, b, s) : run_scan<sequential_scan, T>(ops, a, b, s);
        };
        const auto whole = run(0, 40, init);
        auto state = run(0, 30, init).state;
        for (index_t t = 30; t < 40; ++t) {
            const auto one = run(t, t + 1, reference::to_double(state));
            CHECK(reference::max_relative_error(rows_of(one.y, 2, 40, 3 * 64, t, t + 1),
                                                rows_of(whole.y, 2, 40, 3 * 64, t, t + 1)) <= tolerance<T>());
            state = one.state;
        }
        CHECK(reference::max_relative_error(reference::to_double(state), reference::to_double(whole.state)) <=
              tolerance<T>());
    }
}

TEST_CASE("cpu scan: short sequences need no workspace, long ones say how much") {
    const auto cfg = kernel_config(4, 64, 128, 1, 64);
    CHECK(scan_kernel<sequential_scan, cpu>::scratch_bytes<float>(cfg, 3, min_tiled - 1) == 0);
    CHECK(scan_kernel<chunked_ssd_scan, cpu>::scratch_bytes<float>(cfg, 3, 1) == 0);
    // the transposed states of every head of the batch at least
    CHECK(scan_kernel<chunked_ssd_scan, cpu>::scratch_bytes<float>(cfg, 3, min_tiled) >= 3 * 4 * 64 * 128 * sizeof(float));
    CHECK(scan_kernel<sequential_scan, cpu>::scratch_bytes<double>(cfg, 1, 512) >= 4 * 64 * 128 * sizeof(double));
}

TEST_CASE("cpu scan: a workspace too small for a tiled span is an error, not an overrun") {
    const ssm_operands<float> ops(1, 20, 2, 16, 16, 1, 16, 9400, false);
    std::vector<float> y(ops.y_size(), -7.0f), state(ops.state_size(), 0.0f);
    scratch_buffer scratch(64);
    using kernel = scan_kernel<chunked_ssd_scan, cpu>;
    const auto run = [&] {
        kernel::run(cpu_context{}, ops.cfg, ops.in, 0, 20, tensor_view<float, 4>(y.data(), ops.y_shape()),
                    tensor_view<float, 4>(state.data(), ops.state_shape()), scratch.span());
    };
    CHECK_THROWS_WITH_AS(run(), doctest::Contains("workspace too small"), error);
    CHECK(all_equal(y, -7.0f));
}

}  // namespace test_backend_cpu_scan
