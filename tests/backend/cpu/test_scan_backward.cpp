// backend/cpu/scan_backward.hpp: the reverse-time recurrence's gradients (x, B, C, dt, A, D and the
// state before the span, from a loss on y and on the state after it) against finite differences of
// reference::ssm_recurrence, across spans that start at 0, inside a chunk, on a chunk boundary and
// at the end, with 1, 2 and h groups.
#include <doctest/doctest.h>

#include <transmamba/training.hpp>

#include "support/gradient_check.hpp"

#include <string>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_backend_cpu_scan_backward {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

template <class Scan>
double check_scan(index_t g, index_t t_begin, std::uint64_t seed) {
    const index_t batch = 2, L = 11, h = 4, p = 3, n = 5, chunk = 4;  // L is not a multiple of the chunk
    ssm_operands<double> op(batch, L, h, p, n, g, chunk, seed, /*strided=*/true);
    const auto& d = op.d;
    auto x = op.x, B = op.B, C = op.C, dt = op.dt, A = op.A, D = op.D;
    auto init = random_state<double>(d, seed + 1);
    const auto R = reference::random_vector(op.y_size(), seed + 2), R_state = random_state<double>(d, seed + 3);
    const auto loss = [&] {
        const auto r = reference::ssm_recurrence(d, x, B, C, dt, A, D, init, int(t_begin), int(L));
        return dot(r.y, R) + dot(r.final_state, R_state);
    };

    // The forward pass's saved states: the state before t_begin + i * chunk.
    const index_t blocks = kernels::cpu::scan_blocks(t_begin, L, chunk);
    const std::size_t state = op.state_size();
    std::vector<double> block_states(static_cast<std::size_t>(batch * blocks) * state / batch);
    for (index_t blk = 0; blk < blocks; ++blk) {
        const auto s = reference::ssm_recurrence(d, x, B, C, dt, A, D, init, int(t_begin), int(t_begin + blk * chunk)).final_state;
        const std::size_t per_seq = state / batch;
        for (index_t b = 0; b < batch; ++b)
            std::copy_n(s.begin() + b * per_seq, per_seq, block_states.begin() + (b * blocks + blk) * per_seq);
    }
    ssm_gradient_buffers<double> gb(d);
    std::vector<double> dstate = R_state;
    using kernel = scan_backward_kernel<Scan, cpu>;
    scratch_buffer scratch(kernel::template scratch_bytes<double>(op.cfg, batch, L));
    kernel::run(cpu_context{}, op.cfg, op.in, t_begin, L,
                tensor_view<const double, 5>(block_states.data(), {batch, blocks, h, p, n}),
                tensor_view<const double, 4>(R.data(), op.y_shape()), tensor_view<double, 4>(dstate.data(), op.state_shape()),
                gb.grads, scratch.span());
    CHECK(gb.pad_untouched());

    double worst = 0;
    const auto expect = [&](const char* name, const std::vector<double>& got, std::vector<double>& v) {
        const double err = gradient_error(got, central_differences(v, loss));
        const std::string tensor = name;
        CAPTURE(tensor);
        CHECK(err < gradient_tolerance);
        worst = std::max(worst, err);
    };
    expect("x", gb.x(), x);
    expect("B", gb.B(), B);
    expect("C", gb.C(), C);
    expect("dt", gb.time_steps(), dt);
    expect("A", gb.A_total(), A);
    expect("D", gb.D_total(), D);
    expect("initial state", dstate, init);
    return worst;
}

}  // namespace

TEST_CASE_TEMPLATE("scan backward matches finite differences of the recurrence", Scan, chunked_ssd_scan, sequential_scan) {
    double worst = 0;
    std::uint64_t seed = 7000;
    for (index_t g : {1, 2, 4})
        for (index_t t_begin : {0, 3, 4, 10, 11}) {  // 0, inside a chunk, a chunk boundary, L - 1, L (empty)
            CAPTURE(g);
            CAPTURE(t_begin);
            worst = std::max(worst, check_scan<Scan>(g, t_begin, seed += 10));
        }
    MESSAGE("largest relative error of the scan's gradients: " << worst);
}

}  // namespace test_backend_cpu_scan_backward
