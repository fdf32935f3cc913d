// backend/cpu/converter_backward.hpp: the exact Memory Converter's gradients (x, B, dt, A of the
// prefix and the initial state, from a loss on the state at P) against finite differences of
// reference::converter_state plus the decayed initial state, for P at 0, 1, a chunk boundary,
// inside a chunk and L, with 1, 2 and h groups.
#include <doctest/doctest.h>

#include <transmamba/training.hpp>

#include "support/gradient_check.hpp"

#include <string>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_backend_cpu_converter_backward {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

// S at P = converter_state + (prod of the prefix's decays) S_init, as SPEC section 3 states it.
std::vector<double> state_at(const reference::dims& d, const std::vector<double>& x, const std::vector<double>& B,
                             const std::vector<double>& dt, const std::vector<double>& A,
                             const std::vector<double>& init, int P) {
    auto S = reference::converter_state(d, x, B, dt, A, P);
    const int h = d.nheads(), pn = d.headdim * d.d_state;
    for (int b = 0; b < d.batch; ++b)
        for (int k = 0; k < h; ++k) {
            double decay = 1;
            for (int m = 0; m < P; ++m) decay *= std::exp(dt[std::size_t((b * d.seqlen + m) * h + k)] * A[std::size_t(k)]);
            for (int e = 0; e < pn; ++e) S[std::size_t((b * h + k) * pn + e)] += decay * init[std::size_t((b * h + k) * pn + e)];
        }
    return S;
}

double check_converter(index_t g, index_t P, bool with_initial, std::uint64_t seed) {
    const index_t batch = 2, L = 9, h = 4, p = 3, n = 5, chunk = 4;
    ssm_operands<double> op(batch, L, h, p, n, g, chunk, seed, /*strided=*/true);
    const auto& d = op.d;
    auto x = op.x, B = op.B, dt = op.dt, A = op.A;
    auto init = with_initial ? random_state<double>(d, seed + 1) : std::vector<double>(op.state_size(), 0.0);
    const auto G = random_state<double>(d, seed + 2);
    const auto loss = [&] { return dot(state_at(d, x, B, dt, A, init, int(P)), G); };

    ssm_gradient_buffers<double> gb(d);
    std::vector<double> d_init(op.state_size(), nan_value<double>());
    using kernel = converter_backward_kernel<exact_converter, cpu>;
    scratch_buffer scratch(kernel::scratch_bytes<double>(op.cfg, batch, P));
    kernel::run(cpu_context{}, op.cfg, op.in, P,
                with_initial ? tensor_view<const double, 4>(init.data(), op.state_shape()) : tensor_view<const double, 4>{},
                tensor_view<const double, 4>(G.data(), op.state_shape()), gb.grads,
                tensor_view<double, 4>(d_init.data(), op.state_shape()), scratch.span());
    CHECK(gb.pad_untouched());
    CHECK(all_finite(d_init));
    // Rows t >= P are not the converter's: nothing is added there.
    CHECK(rows_of(gb.x(), batch, L, h * p, P, L) == std::vector<double>(std::size_t(batch * (L - P) * h * p), 0.0));

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
    expect("dt", gb.time_steps(), dt);
    expect("A", gb.A_total(), A);
    expect("initial state", d_init, init);
    CHECK(gb.C() == std::vector<double>(gb.C().size(), 0.0));  // C is not read at P
    return worst;
}

}  // namespace

TEST_CASE("converter backward matches finite differences of the exact converter") {
    double worst = 0;
    std::uint64_t seed = 7500;
    for (index_t g : {1, 2, 4})
        for (index_t P : {0, 1, 4, 6, 9}) {  // 0, 1, a chunk boundary, inside a chunk, L
            CAPTURE(g);
            CAPTURE(P);
            worst = std::max(worst, check_converter(g, P, /*with_initial=*/(P + g) % 2 == 1, seed += 10));
        }
    MESSAGE("largest relative error of the converter's gradients: " << worst);
}

}  // namespace test_backend_cpu_converter_backward
