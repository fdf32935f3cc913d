// projection_kernel<mamba2_projection, cpu> (conv1d + SiLU, time steps, gated grouped RMSNorm) against
// the oracle, and backend_traits<cpu>::gemm_nt against a naive loop.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include "support/fixtures.hpp"

#include <cmath>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_backend_cpu_projection {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

using projection = projection_kernel<mamba2_projection, cpu>;

struct projection_fixture {
    mixer_config cfg;
    reference::dims d;
    index_t batch, L;
    reference::mixer_weights w;  // rounded to the test's type
    std::vector<double> zxbcdt;  // (b, L, d_in_proj), rounded

    template <class T>
    static projection_fixture make(const mixer_config& cfg, index_t batch, index_t L, std::uint64_t seed,
                                   double lo = -2.0, double hi = 2.0) {
        projection_fixture f{cfg, to_dims(cfg, batch, L), batch, L, {}, {}};
        f.w = rounded<T>(reference::random_weights(f.d, seed));
        f.zxbcdt = rounded<T>(reference::random_vector(static_cast<std::size_t>(batch * L * cfg.d_in_proj()), seed + 1, lo, hi));
        return f;
    }
};

}  // namespace

TEST_CASE_TEMPLATE("projection: conv_silu matches reference::conv_silu", T, float, double) {
    std::uint64_t seed = 1;
    for (index_t d_conv : {4, 2, 1})
        for (index_t g : {1, 2})
            for (index_t L : {1, 3, 37}) {  // L < d_conv: every tap reads before the sequence start
                CAPTURE(d_conv);
                CAPTURE(g);
                CAPTURE(L);
                auto cfg = small_config(32, 16, 16, g);
                cfg.d_conv = d_conv;
                const auto f = projection_fixture::make<T>(cfg, 2, L, seed += 10);
                const auto zx = to_vector<T>(f.zxbcdt);
                const auto cw = to_vector<T>(f.w.conv_w), cb = to_vector<T>(f.w.conv_b);
                std::vector<T> xbc(static_cast<std::size_t>(2 * L * cfg.conv_dim()), nan_value<T>());
                projection::conv_silu(cpu_context{}, cfg, 2, L, zx.data(), cw.data(), cb.data(), xbc.data());
                const auto want = reference::conv_silu(f.d, f.w, f.zxbcdt);
                CHECK(reference::max_relative_error(reference::to_double(xbc), want) <= tolerance<T>());
            }
}

TEST_CASE_TEMPLATE("projection: time_steps matches reference::time_steps (softplus over a wide range)", T, float,
                   double) {
    const auto cfg = small_config(32, 8, 16, 2);  // 8 heads
    const index_t L = 50;
    // dt_raw in [-30, 30]: softplus must neither overflow nor lose the small tail
    const auto f = projection_fixture::make<T>(cfg, 2, L, 100, -30.0, 30.0);
    const auto zx = to_vector<T>(f.zxbcdt);
    const auto dt_bias = to_vector<T>(f.w.dt_bias), A_log = to_vector<T>(f.w.A_log), D = to_vector<T>(f.w.D);
    const index_t h = cfg.nheads();
    std::vector<T> dt(static_cast<std::size_t>(2 * L * h), nan_value<T>()), a(static_cast<std::size_t>(h)), dcoef(static_cast<std::size_t>(h));
    projection::time_steps(cpu_context{}, cfg, 2 * L, zx.data(), dt_bias.data(), A_log.data(), D.data(), dt.data(),
                           a.data(), dcoef.data());
    const auto want = reference::time_steps(f.d, f.w, f.zxbcdt);
    CHECK(reference::max_relative_error(reference::to_double(dt), want) <= tolerance<T>());
    // small time steps are accurate on their own scale, not only relative to the largest one
    for (std::size_t i = 0; i < want.size(); ++i)
        if (want[i] < 1e-6) CHECK(std::abs(double(dt[i]) - want[i]) <= 1e-5 * want[i]);
    CHECK(reference::max_relative_error(reference::to_double(a), reference::A_of(f.w)) <= tolerance<T>());
    CHECK(reference::to_double(dcoef) == f.w.D);
}

TEST_CASE_TEMPLATE("projection: time_steps clamps to [dt_min, dt_max]", T, float, double) {
    auto cfg = small_config(32, 8, 16, 1);
    cfg.dt_min = 0.01;
    cfg.dt_max = 0.1;
    const index_t L = 40, h = cfg.nheads();
    const auto f = projection_fixture::make<T>(cfg, 2, L, 200, -8.0, 4.0);
    const auto zx = to_vector<T>(f.zxbcdt);
    const auto dt_bias = to_vector<T>(f.w.dt_bias), A_log = to_vector<T>(f.w.A_log), D = to_vector<T>(f.w.D);
    std::vector<T> dt(static_cast<std::size_t>(2 * L * h)), a(static_cast<std::size_t>(h)), dcoef(static_cast<std::size_t>(h));
    projection::time_steps(cpu_context{}, cfg, 2 * L, zx.data(), dt_bias.data(), A_log.data(), D.data(), dt.data(),
                           a.data(), dcoef.data());
    const auto want = reference::time_steps(f.d, f.w, f.zxbcdt);
    CHECK(reference::max_relative_error(reference::to_double(dt), want) <= tolerance<T>());
    int low = 0, high = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
        low += want[i] == 0.01;
        high += want[i] == 0.1;
        CHECK(double(dt[i]) >= double(T(0.01)));
        CHECK(double(dt[i]) <= double(T(0.1)));
    }
    CHECK(low > 0);   // both limits were really exercised
    CHECK(high > 0);
}

TEST_CASE_TEMPLATE("projection: gated_rmsnorm matches the oracle, gate off on attention tokens", T, float, double) {
    std::uint64_t seed = 300;
    for (index_t g : {1, 2, 4})
        for (index_t P : {0, 1, 17, 30, 45}) {
            CAPTURE(g);
            CAPTURE(P);
            const auto cfg = small_config(32, 8, 16, g);  // 8 heads, d_inner 64, groups of 64/g channels
            const index_t L = 30, di = cfg.d_inner();
            const auto f = projection_fixture::make<T>(cfg, 2, L, seed += 10);
            const auto y = rounded<T>(reference::random_vector(static_cast<std::size_t>(2 * L * di), seed + 5));
            const auto zx = to_vector<T>(f.zxbcdt), yt = to_vector<T>(y), nw = to_vector<T>(f.w.norm_w);
            for (bool gate_attention : {false, true}) {
                CAPTURE(gate_attention);
                std::vector<T> v(static_cast<std::size_t>(2 * L * di), nan_value<T>());
                projection::gated_rmsnorm(cpu_context{}, cfg, 2, L, P, gate_attention, yt.data(), zx.data(), nw.data(),
                                          v.data());
                reference::variant var;
                var.gate_attention = gate_attention;
                const auto want = reference::gated_rmsnorm(f.d, var, f.w, y, f.zxbcdt, int(P));
                CHECK(reference::max_relative_error(reference::to_double(v), want) <= tolerance<T>());
            }
        }
}

TEST_CASE("projection: the gate and the grouping both change the result (the comparisons above can fail)") {
    const auto cfg1 = small_config(32, 8, 16, 1), cfg2 = small_config(32, 8, 16, 2);
    const index_t L = 10, di = cfg1.d_inner();
    const auto f = projection_fixture::make<double>(cfg1, 1, L, 400);
    const auto y = reference::random_vector(static_cast<std::size_t>(L * di), 401);
    std::vector<double> a(y.size()), b(y.size()), c(y.size());
    projection::gated_rmsnorm(cpu_context{}, cfg1, 1, L, 5, false, y.data(), f.zxbcdt.data(), f.w.norm_w.data(), a.data());
    projection::gated_rmsnorm(cpu_context{}, cfg1, 1, L, 5, true, y.data(), f.zxbcdt.data(), f.w.norm_w.data(), b.data());
    // cfg2 has the same d_in_proj layout up to the z columns, which is all gated_rmsnorm reads
    std::vector<double> zx2(static_cast<std::size_t>(L * cfg2.d_in_proj()));
    for (index_t r = 0; r < L; ++r)
        for (index_t ch = 0; ch < di; ++ch) zx2[std::size_t(r * cfg2.d_in_proj() + ch)] = f.zxbcdt[std::size_t(r * cfg1.d_in_proj() + ch)];
    projection::gated_rmsnorm(cpu_context{}, cfg2, 1, L, 5, false, y.data(), zx2.data(), f.w.norm_w.data(), c.data());
    // rows < 5 differ with the gate; rows >= 5 are gated either way
    CHECK(reference::max_relative_error(rows_of(a, 1, L, di, 0, 5), rows_of(b, 1, L, di, 0, 5)) > 1e-3);
    CHECK(rows_of(a, 1, L, di, 5, L) == rows_of(b, 1, L, di, 5, L));
    // one group vs two groups
    CHECK(reference::max_relative_error(c, a) > 1e-3);
}

TEST_CASE_TEMPLATE("backend_traits<cpu>::gemm_nt matches a naive loop, strided operands, padding untouched", T, float,
                   double) {
    std::uint64_t seed = 500;
    struct gemm_case {
        index_t m, n, k, lda, ldw, ldc;
    };
    for (const auto& c : {gemm_case{1, 1, 1, 1, 1, 1}, gemm_case{7, 5, 3, 3, 3, 5}, gemm_case{33, 17, 65, 70, 66, 20},
                          gemm_case{128, 96, 64, 64, 80, 100}, gemm_case{3, 200, 9, 11, 9, 203}}) {
        CAPTURE(c.m);
        CAPTURE(c.n);
        CAPTURE(c.k);
        const auto A = rounded<T>(reference::random_vector(static_cast<std::size_t>(c.m * c.lda), seed++));
        const auto W = rounded<T>(reference::random_vector(static_cast<std::size_t>(c.n * c.ldw), seed++));
        const auto At = to_vector<T>(A), Wt = to_vector<T>(W);
        std::vector<T> C(static_cast<std::size_t>(c.m * c.ldc), nan_value<T>());
        backend_traits<cpu>::gemm_nt(cpu_context{}, c.m, c.n, c.k, At.data(), c.lda, Wt.data(), c.ldw, C.data(), c.ldc);
        std::vector<double> want, got;
        for (index_t i = 0; i < c.m; ++i)
            for (index_t j = 0; j < c.n; ++j) {
                double acc = 0;
                for (index_t l = 0; l < c.k; ++l) acc += A[std::size_t(i * c.lda + l)] * W[std::size_t(j * c.ldw + l)];
                want.push_back(acc);
                got.push_back(double(C[std::size_t(i * c.ldc + j)]));
            }
        CHECK(reference::max_relative_error(got, want) <= tolerance<T>());
        bool padding_untouched = true;
        for (index_t i = 0; i < c.m; ++i)
            for (index_t j = c.n; j < c.ldc; ++j) padding_untouched &= std::isnan(double(C[std::size_t(i * c.ldc + j)]));
        CHECK(padding_untouched);
    }
}

// Falcon-H1's placements of the gated norm (core/config.hpp gated_norm), against a float64 loop
// written here: before the gate, rmsnorm_g(y) * w * silu(z); none, y * silu(z) (and y unchanged on
// ungated attention tokens).
TEST_CASE_TEMPLATE("projection: gated_rmsnorm before the gate and without a norm match a float64 loop", T, float, double) {
    const index_t L = 9, P = 4, g = 2;
    auto cfg = small_config(32, 8, 16, g);
    const index_t di = cfg.d_inner(), group = di / g, stride = cfg.d_in_proj();
    const auto f = projection_fixture::make<double>(cfg, 1, L, 700);
    const auto y = reference::random_vector(static_cast<std::size_t>(L * di), 701);
    const auto zx = to_vector<T>(rounded<T>(f.zxbcdt)), yt = to_vector<T>(rounded<T>(y)), nw = to_vector<T>(rounded<T>(f.w.norm_w));
    const auto silu = [](double v) { return v / (1.0 + std::exp(-v)); };
    std::vector<double> last;
    for (gated_norm placement : {gated_norm::before_gate, gated_norm::none}) {
        CAPTURE(static_cast<int>(placement));
        cfg.norm_placement = placement;
        std::vector<T> v(static_cast<std::size_t>(L * di), nan_value<T>());
        projection::gated_rmsnorm(cpu_context{}, cfg, 1, L, P, false, yt.data(), zx.data(), nw.data(), v.data());
        std::vector<double> want(v.size());
        for (index_t t = 0; t < L; ++t)
            for (index_t g0 = 0; g0 < di; g0 += group) {
                double ss = 0.0;
                for (index_t c = g0; c < g0 + group; ++c) ss += double(yt[std::size_t(t * di + c)]) * double(yt[std::size_t(t * di + c)]);
                const double inv = 1.0 / std::sqrt(ss / double(group) + cfg.norm_eps);
                for (index_t c = g0; c < g0 + group; ++c) {
                    const double yc = double(yt[std::size_t(t * di + c)]);
                    const double gate = t >= P ? silu(double(zx[std::size_t(t * stride + c)])) : 1.0;
                    want[std::size_t(t * di + c)] =
                        placement == gated_norm::none ? yc * gate : yc * inv * double(nw[std::size_t(c)]) * gate;
                }
            }
        const auto got = reference::to_double(v);
        CHECK(reference::max_relative_error(got, want) <= tolerance<T>());
        if (!last.empty()) CHECK(reference::max_relative_error(got, last) > 1e-2);  // the two placements differ
        last = got;
    }
}

}  // namespace test_backend_cpu_projection
