// backend/cpu/projection_backward.hpp and the projection GEMMs' backward (backend_traits<cpu>::
// gemm_nn / gemm_tn): each against finite differences of the float64 oracle's own piece: the in-
// and out-projections, the gated grouped RMSNorm (attention tokens not gated by z unless the
// variant says so), the time steps with and without the time-step limit, the causal conv1d + SiLU
// (sequences shorter than the conv too). Outputs are NaN-poisoned: every element must be written,
// and nothing outside its columns.
#include <doctest/doctest.h>

#include <transmamba/training.hpp>

#include "support/gradient_check.hpp"

#include <algorithm>
#include <string>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_backend_cpu_projection_backward {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

using kernel = projection_backward_kernel<mamba2_projection, cpu>;
using traits = backend_traits<cpu>;

struct layer_inputs {
    mixer_config cfg;
    reference::dims d;
    reference::mixer_weights w;
    std::vector<double> zxbcdt;
    layer_inputs(index_t ngroups, index_t batch, index_t L, std::uint64_t seed, index_t d_conv = 4)
        : cfg(small_config(8, 4, 4, ngroups, 4)) {
        cfg.d_conv = d_conv;
        d = to_dims(cfg, batch, L);
        w = reference::random_weights(d, seed);
        zxbcdt = reference::random_vector(static_cast<std::size_t>(batch * L * cfg.d_in_proj()), seed + 1, -2.0, 2.0);
    }
    index_t rows() const { return d.batch * d.seqlen; }
};

// Columns [c0, c0 + count) of a (rows, width) matrix.
std::vector<double> columns(const std::vector<double>& m, index_t width, index_t c0, index_t count) {
    std::vector<double> r;
    for (std::size_t row = 0; row < m.size() / std::size_t(width); ++row)
        for (index_t c = c0; c < c0 + count; ++c) r.push_back(m[row * std::size_t(width) + std::size_t(c)]);
    return r;
}

bool columns_all_nan(const std::vector<double>& m, index_t width, index_t c0, index_t count) {
    const auto v = columns(m, width, c0, count);
    return std::all_of(v.begin(), v.end(), [](double e) { return std::isnan(e); });
}

void expect_gradient(const char* name, const std::vector<double>& got, const std::vector<double>& want) {
    const std::string tensor = name;
    CAPTURE(tensor);
    CHECK(gradient_error(got, want) < gradient_tolerance);
}

}  // namespace

TEST_CASE("projection GEMMs: dX = dY W and dW = dY^T X of Y = X W^T") {
    layer_inputs li(2, 2, 5, 9000);
    auto& w = li.w;
    const index_t rows = li.rows(), dm = li.cfg.d_model, di = li.cfg.d_inner(), dip = li.cfg.d_in_proj();
    auto u = reference::random_vector(std::size_t(rows * dm), 9001);
    auto v = reference::random_vector(std::size_t(rows * di), 9002);
    const auto R_in = reference::random_vector(std::size_t(rows * dip), 9003);
    const auto R_out = reference::random_vector(std::size_t(rows * dm), 9004);

    std::vector<double> du(u.size(), nan_value<double>()), dw_in(w.in_proj.size(), nan_value<double>());
    traits::gemm_nn(cpu_context{}, rows, dip, dm, R_in.data(), dip, w.in_proj.data(), dm, du.data(), dm);
    traits::gemm_tn(cpu_context{}, rows, dip, dm, R_in.data(), dip, u.data(), dm, dw_in.data(), dm);
    const auto in_loss = [&] { return dot(reference::in_projection(li.d, w, u), R_in); };
    expect_gradient("u", du, central_differences(u, in_loss));
    expect_gradient("in_proj.weight", dw_in, central_differences(w.in_proj, in_loss));

    std::vector<double> dv(v.size(), nan_value<double>()), dw_out(w.out_proj.size(), nan_value<double>());
    traits::gemm_nn(cpu_context{}, rows, dm, di, R_out.data(), dm, w.out_proj.data(), di, dv.data(), di);
    traits::gemm_tn(cpu_context{}, rows, dm, di, R_out.data(), dm, v.data(), di, dw_out.data(), di);
    const auto out_loss = [&] { return dot(reference::out_projection(li.d, w, v), R_out); };
    expect_gradient("v", dv, central_differences(v, out_loss));
    expect_gradient("out_proj.weight", dw_out, central_differences(w.out_proj, out_loss));
}

TEST_CASE_TEMPLATE("gated RMSNorm backward matches finite differences", GateAttention, std::false_type, std::true_type) {
    std::uint64_t seed = 9100;
    for (index_t g : {1, 2, 4})
        for (index_t P : {0, 3, 7}) {  // all SSM, a split, all attention (L = 7)
            CAPTURE(g);
            CAPTURE(P);
            layer_inputs li(g, 2, 7, seed += 10);
            auto& w = li.w;
            auto zxbcdt = li.zxbcdt;
            const index_t rows = li.rows(), di = li.cfg.d_inner(), dip = li.cfg.d_in_proj();
            auto y = reference::random_vector(std::size_t(rows * di), seed + 1);
            const auto R = reference::random_vector(y.size(), seed + 2);
            reference::variant var;
            var.gate_attention = GateAttention::value;
            const auto loss = [&] { return dot(reference::gated_rmsnorm(li.d, var, w, y, zxbcdt, int(P)), R); };

            std::vector<double> dy(y.size(), nan_value<double>()), dz(zxbcdt.size(), nan_value<double>());
            std::vector<double> dnorm(w.norm_w.size(), nan_value<double>()), xhat(y.size());
            kernel::gated_rmsnorm_backward(cpu_context{}, li.cfg, 2, 7, P, GateAttention::value, y.data(), zxbcdt.data(),
                                           w.norm_w.data(), R.data(), dy.data(), dz.data(), dnorm.data(), xhat.data());
            CHECK(columns_all_nan(dz, dip, di, dip - di));  // only the z columns are the norm's
            expect_gradient("y", dy, central_differences(y, loss));
            expect_gradient("norm.weight", dnorm, central_differences(w.norm_w, loss));
            auto z = columns(zxbcdt, dip, 0, di);
            const auto want_z = central_differences(zxbcdt, loss);
            expect_gradient("z", columns(dz, dip, 0, di), columns(want_z, dip, 0, di));
            if (!GateAttention::value)  // attention tokens are not gated: z there has no gradient at all
                CHECK(rows_of(columns(dz, dip, 0, di), 2, 7, di, 0, P) == std::vector<double>(std::size_t(2 * P * di), 0.0));
        }
}

TEST_CASE("time steps backward: softplus, A = -exp(A_log), D, and zero gradient where the limit clamps") {
    std::uint64_t seed = 9200;
    for (const auto& limit : {std::pair{0.0, 1e300}, std::pair{0.3, 1.0}}) {
        CAPTURE(limit.first);
        layer_inputs li(2, 2, 6, seed += 10);
        li.cfg.dt_min = li.d.dt_min = limit.first;
        li.cfg.dt_max = li.d.dt_max = limit.second;
        auto& w = li.w;
        auto zxbcdt = li.zxbcdt;
        const index_t rows = li.rows(), h = li.cfg.nheads(), dip = li.cfg.d_in_proj(), batch = li.d.batch;
        for (auto& b : w.dt_bias) b = 0.0;  // dt = softplus(U(-2, 2)) in [0.13, 2.1]: [0.3, 1] cuts both ends
        const auto R = reference::random_vector(std::size_t(rows * h), seed + 1);
        const auto RA = reference::random_vector(std::size_t(batch * h), seed + 2);  // dL/dA per sequence
        const auto RD = reference::random_vector(std::size_t(batch * h), seed + 3);
        const auto summed = [&](const std::vector<double>& v) {
            std::vector<double> s(std::size_t(h), 0.0);
            for (index_t b = 0; b < batch; ++b)
                for (index_t k = 0; k < h; ++k) s[std::size_t(k)] += v[std::size_t(b * h + k)];
            return s;
        };
        const auto loss = [&] {
            return dot(reference::time_steps(li.d, w, zxbcdt), R) + dot(reference::A_of(w), summed(RA)) +
                   dot(w.D, summed(RD));
        };
        std::vector<double> draw(zxbcdt.size(), nan_value<double>()), dbias(std::size_t(h), nan_value<double>()),
            dA_log(std::size_t(h), nan_value<double>()), dD(std::size_t(h), nan_value<double>());
        kernel::time_steps_backward(cpu_context{}, li.cfg, batch, rows, zxbcdt.data(), w.dt_bias.data(), w.A_log.data(),
                                    R.data(), RA.data(), RD.data(), draw.data(), dbias.data(), dA_log.data(), dD.data());
        CHECK(columns_all_nan(draw, dip, 0, dip - h));  // only the dt columns are the time steps'
        const auto dt = reference::time_steps(li.d, w, zxbcdt);
        if (limit.first > 0) {
            CHECK(std::count(dt.begin(), dt.end(), limit.first) > 3);
            CHECK(std::count(dt.begin(), dt.end(), limit.second) > 3);
            for (std::size_t i = 0; i < dt.size(); ++i)
                if (dt[i] == limit.first || dt[i] == limit.second)
                    CHECK(draw[(i / std::size_t(h)) * std::size_t(dip) + std::size_t(dip - h) + i % std::size_t(h)] == 0.0);
        }
        const auto want_raw = central_differences(zxbcdt, loss, 1e-6);  // small: no dt crosses a limit within it
        expect_gradient("dt_raw", columns(draw, dip, dip - h, h), columns(want_raw, dip, dip - h, h));
        expect_gradient("dt_bias", dbias, central_differences(w.dt_bias, loss, 1e-6));
        expect_gradient("A_log", dA_log, central_differences(w.A_log, loss));
        expect_gradient("D", dD, central_differences(w.D, loss));
    }
}

TEST_CASE("conv1d + SiLU backward matches finite differences") {
    std::uint64_t seed = 9300;
    for (index_t d_conv : {4, 2})
        for (index_t L : {7, 2}) {  // L = 2 < d_conv = 4: taps before the sequence
            CAPTURE(d_conv);
            CAPTURE(L);
            layer_inputs li(2, 2, L, seed += 10, d_conv);
            li.w.conv_w = reference::random_vector(std::size_t(li.cfg.conv_dim() * d_conv), seed + 5, -0.5, 0.5);
            auto& w = li.w;
            auto zxbcdt = li.zxbcdt;
            const index_t rows = li.rows(), cd = li.cfg.conv_dim(), dip = li.cfg.d_in_proj(), di = li.cfg.d_inner();
            const auto R = reference::random_vector(std::size_t(rows * cd), seed + 1);
            const auto loss = [&] { return dot(reference::conv_silu(li.d, w, zxbcdt), R); };
            std::vector<double> din(zxbcdt.size(), nan_value<double>()), dw(w.conv_w.size(), nan_value<double>()),
                db(w.conv_b.size(), nan_value<double>()), dpre(R.size());
            kernel::conv_silu_backward(cpu_context{}, li.cfg, 2, L, zxbcdt.data(), w.conv_w.data(), w.conv_b.data(),
                                       R.data(), din.data(), dw.data(), db.data(), dpre.data());
            CHECK(columns_all_nan(din, dip, 0, di));               // z
            CHECK(columns_all_nan(din, dip, di + cd, dip - di - cd));  // dt
            const auto want = central_differences(zxbcdt, loss);
            expect_gradient("xBC input", columns(din, dip, di, cd), columns(want, dip, di, cd));
            expect_gradient("conv1d.weight", dw, central_differences(w.conv_w, loss));
            expect_gradient("conv1d.bias", db, central_differences(w.conv_b, loss));
        }
}

}  // namespace test_backend_cpu_projection_backward
