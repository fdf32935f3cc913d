// The CUDA backward kernels against the CPU ones run in float64 on the same inputs (rounded to
// the storage type first): the GEMMs of the backward, the projection's (gated RMSNorm, time steps,
// conv1d + SiLU), the blocks' (RMSNorm, SwiGLU), the embedding scatter-add and the cross-entropy
// loss. Every output is poisoned with NaN first, so an element a kernel forgot cannot pass.
// Bounds: float storage 1e-5 of the largest element (1e-4 for sums over many rows), bf16 storage
// 2e-2 (outputs stored in bf16 round to 8 bits of mantissa).
#include <doctest/doctest.h>

#include <transmamba/backend/cpu/block_backward.hpp>
#include <transmamba/backend/cpu/embedding_backward.hpp>
#include <transmamba/backend/cpu/loss.hpp>
#include <transmamba/backend/cpu/projection_backward.hpp>
#include <transmamba/backend/cuda.cuh>
#include <transmamba/backend/cuda/backward.cuh>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "reference/reference.hpp"
#include "support/bridge.hpp"

using namespace transmamba;
using bf16 = __nv_bfloat16;
using gpu = transmamba::cuda;  // plain `cuda` is ambiguous with libcu++'s namespace

namespace {

using gtraits = backend_traits<gpu>;

// Host values of storage type T drawn in [lo, hi), and the same numbers in double.
template <class T>
struct host_values {
    std::vector<T> stored;
    std::vector<double> exact;
};
template <class T>
host_values<T> random_values(std::size_t n, std::uint64_t seed, double lo = -1, double hi = 1) {
    host_values<T> v;
    for (double x : reference::random_vector(n, seed, lo, hi)) {
        const T s = kernels::cuda::from_float<T>(static_cast<float>(x));
        v.stored.push_back(s);
        v.exact.push_back(kernels::cuda::to_float(s));
    }
    return v;
}
template <class T>
device_buffer<T> upload(const std::vector<T>& host) {
    device_buffer<T> d(host.size());
    gtraits::copy_from_host(host.data(), d.data(), host.size(), {});
    return d;
}
template <class T>
std::vector<double> download(const device_buffer<T>& d) {
    std::vector<T> host(d.size());
    gtraits::copy_to_host(d.data(), host.data(), d.size(), {});
    gtraits::synchronize({});
    std::vector<double> out;
    for (const T& v : host) out.push_back(kernels::cuda::to_float(v));
    return out;
}
template <class T>
std::vector<T> download_raw(const device_buffer<T>& d) {
    std::vector<T> host(d.size());
    gtraits::copy_to_host(d.data(), host.data(), d.size(), {});
    gtraits::synchronize({});
    return host;
}
template <class T>
device_buffer<T> poisoned(std::size_t n) {
    device_buffer<T> d(n);
    gtraits::fill({}, d.data(), n, kernels::cuda::from_float<T>(std::numeric_limits<float>::quiet_NaN()));
    return d;
}
// Columns [c0, c1) of a (rows, stride) matrix.
inline std::vector<double> columns(const std::vector<double>& m, index_t rows, index_t stride, index_t c0, index_t c1) {
    std::vector<double> out;
    for (index_t r = 0; r < rows; ++r)
        for (index_t c = c0; c < c1; ++c) out.push_back(m[std::size_t(r * stride + c)]);
    return out;
}
inline double rel_error(const std::vector<double>& got, const std::vector<double>& want) {
    return reference::max_relative_error(got, want);
}

template <class T>
constexpr double storage_tolerance() {  // an output stored in T
    return std::is_same_v<T, float> ? 1e-5 : 2e-2;
}

// GEMMs: dA = dC W and dW = dC^T X at leading dimensions wider than the matrices.
template <class TA, class TC>
void check_gemms(std::uint64_t seed) {
    const index_t m = 37, n = 29, k = 21, pad = 3;
    const auto dC = random_values<TA>(std::size_t(m * (n + pad)), seed);
    const auto W = random_values<TA>(std::size_t(n * (k + pad)), seed + 1);
    const auto X = random_values<TA>(std::size_t(m * (k + pad)), seed + 2);
    auto ddC = upload(dC.stored), dW = upload(W.stored), dX = upload(X.stored);
    auto nn = poisoned<TC>(std::size_t(m * (k + pad)));
    auto tn = poisoned<TC>(std::size_t(n * (k + pad)));
    gtraits::gemm_nn({}, m, n, k, ddC.data(), n + pad, dW.data(), k + pad, nn.data(), k + pad);
    gtraits::gemm_tn({}, m, n, k, ddC.data(), n + pad, dX.data(), k + pad, tn.data(), k + pad);
    std::vector<double> want_nn(static_cast<std::size_t>(m * (k + pad)), 0.0), want_tn(static_cast<std::size_t>(n * (k + pad)), 0.0);
    backend_traits<cpu>::gemm_nn({}, m, n, k, dC.exact.data(), n + pad, W.exact.data(), k + pad, want_nn.data(), k + pad);
    backend_traits<cpu>::gemm_tn({}, m, n, k, dC.exact.data(), n + pad, X.exact.data(), k + pad, want_tn.data(), k + pad);
    const double tol = std::is_same_v<TC, float> ? 1e-5 : 2e-2;
    CHECK(rel_error(columns(download(nn), m, k + pad, 0, k), columns(want_nn, m, k + pad, 0, k)) < tol);
    CHECK(rel_error(columns(download(tn), n, k + pad, 0, k), columns(want_tn, n, k + pad, 0, k)) < tol);
    // The padding columns are the caller's: left as they were (NaN).
    CHECK(std::isnan(download(nn)[std::size_t(k)]));
    // A sum over no rows is zero, not left unwritten.
    auto empty = poisoned<TC>(std::size_t(n * k));
    gtraits::gemm_tn({}, 0, n, k, ddC.data(), n, dX.data(), k, empty.data(), k);
    for (double v : download(empty)) REQUIRE(v == 0.0);
}

}  // namespace

TEST_CASE("cuda backward gemms: gemm_nn and gemm_tn equal the CPU's in float64") {
    check_gemms<float, float>(1);
    check_gemms<bf16, float>(2);
    check_gemms<bf16, bf16>(3);
}

namespace {

mixer_config projection_config() {
    auto c = testing::small_config(32, 8, 8, 2);
    c.dt_min = 0.05;  // some time steps clamp at either end (the raw values below spread over both)
    c.dt_max = 1.5;
    return c;
}

template <class T>
void check_projection_backward(index_t batch, index_t L, index_t P, std::uint64_t seed) {
    using cpu_kernel = projection_backward_kernel<mamba2_projection, cpu>;
    using gpu_kernel = projection_backward_kernel<mamba2_projection, gpu>;
    const auto c = projection_config();
    const index_t rows = batch * L, d = c.d_inner(), dip = c.d_in_proj(), h = c.nheads(), cd = c.conv_dim();
    CAPTURE(P);
    const auto zx = random_values<float>(std::size_t(rows * dip), seed, -3, 3);
    const auto y = random_values<float>(std::size_t(rows * d), seed + 1);
    const auto norm_w = random_values<T>(std::size_t(d), seed + 2, 0.5, 1.5);
    const auto dout = random_values<float>(std::size_t(rows * d), seed + 3);
    auto g_zx = upload(zx.stored), g_y = upload(y.stored), g_dout = upload(dout.stored);
    auto g_w = upload(norm_w.stored);

    SUBCASE("gated rmsnorm") {
        for (bool gate_attention : {false, true}) {
            CAPTURE(gate_attention);
            auto dy = poisoned<float>(std::size_t(rows * d));
            auto dzx = poisoned<float>(std::size_t(rows * dip));
            auto dw = poisoned<T>(std::size_t(d));
            auto xhat = poisoned<float>(std::size_t(rows * d));
            gpu_kernel::gated_rmsnorm_backward(cuda_context{}, c, batch, L, P, gate_attention, g_y.data(), g_zx.data(),
                                               g_w.data(), g_dout.data(), dy.data(), dzx.data(), dw.data(), xhat.data());
            std::vector<double> want_dy(static_cast<std::size_t>(rows * d)), want_dzx(static_cast<std::size_t>(rows * dip)), want_dw(static_cast<std::size_t>(d)),
                want_xhat(static_cast<std::size_t>(rows * d));
            cpu_kernel::gated_rmsnorm_backward(cpu_context{}, c, batch, L, P, gate_attention, y.exact.data(),
                                               zx.exact.data(), norm_w.exact.data(), dout.exact.data(), want_dy.data(),
                                               want_dzx.data(), want_dw.data(), want_xhat.data());
            CHECK(rel_error(download(dy), want_dy) < 1e-5);
            CHECK(rel_error(columns(download(dzx), rows, dip, 0, d), columns(want_dzx, rows, dip, 0, d)) < 1e-5);
            CHECK(rel_error(download(dw), want_dw) < (std::is_same_v<T, float> ? 1e-5 : 2e-2));
        }
    }
    SUBCASE("time steps") {
        const auto dt_bias = random_values<T>(std::size_t(h), seed + 4, -1, 1);
        const auto A_log = random_values<T>(std::size_t(h), seed + 5, 0, 2);
        const auto ddt = random_values<float>(std::size_t(rows * h), seed + 6);
        const auto dA = random_values<float>(std::size_t(batch * h), seed + 7);
        const auto dD = random_values<float>(std::size_t(batch * h), seed + 8);
        auto g_bias = upload(dt_bias.stored), g_alog = upload(A_log.stored);
        auto g_ddt = upload(ddt.stored), g_dA = upload(dA.stored), g_dD = upload(dD.stored);
        auto dzx = poisoned<float>(std::size_t(rows * dip));
        auto dbias = poisoned<T>(std::size_t(h)), dalog = poisoned<T>(std::size_t(h)), dd = poisoned<T>(std::size_t(h));
        gpu_kernel::time_steps_backward(cuda_context{}, c, batch, rows, g_zx.data(), g_bias.data(), g_alog.data(),
                                        g_ddt.data(), g_dA.data(), g_dD.data(), dzx.data(), dbias.data(), dalog.data(),
                                        dd.data());
        std::vector<double> want_dzx(static_cast<std::size_t>(rows * dip)), want_bias(static_cast<std::size_t>(h)), want_alog(static_cast<std::size_t>(h)),
            want_d(static_cast<std::size_t>(h));
        cpu_kernel::time_steps_backward(cpu_context{}, c, batch, rows, zx.exact.data(), dt_bias.exact.data(),
                                        A_log.exact.data(), ddt.exact.data(), dA.exact.data(), dD.exact.data(),
                                        want_dzx.data(), want_bias.data(), want_alog.data(), want_d.data());
        const auto want_raw = columns(want_dzx, rows, dip, dip - h, dip);
        index_t clamped = 0;
        for (double v : want_raw) clamped += v == 0.0;
        CHECK(clamped > 0);                                      // the limit is exercised ...
        CHECK(clamped < static_cast<index_t>(want_raw.size()));  // ... and so is the softplus
        CHECK(rel_error(columns(download(dzx), rows, dip, dip - h, dip), want_raw) < 1e-5);
        const double tol = std::is_same_v<T, float> ? 1e-5 : 2e-2;
        CHECK(rel_error(download(dbias), want_bias) < tol);
        CHECK(rel_error(download(dalog), want_alog) < tol);
        CHECK(rel_error(download(dd), want_d) < tol);
    }
    SUBCASE("conv1d + silu") {
        const auto conv_w = random_values<T>(std::size_t(cd * c.d_conv), seed + 9, -0.5, 0.5);
        const auto conv_b = random_values<T>(std::size_t(cd), seed + 10, -0.1, 0.1);
        const auto dxbc = random_values<float>(std::size_t(rows * cd), seed + 11);
        auto g_cw = upload(conv_w.stored), g_cb = upload(conv_b.stored);
        auto g_dxbc = upload(dxbc.stored);
        auto dzx = poisoned<float>(std::size_t(rows * dip));
        auto dcw = poisoned<T>(std::size_t(cd * c.d_conv)), dcb = poisoned<T>(std::size_t(cd));
        auto dpre = poisoned<float>(std::size_t(rows * cd));
        gpu_kernel::conv_silu_backward(cuda_context{}, c, batch, L, g_zx.data(), g_cw.data(), g_cb.data(), g_dxbc.data(),
                                       dzx.data(), dcw.data(), dcb.data(), dpre.data());
        std::vector<double> want_dzx(static_cast<std::size_t>(rows * dip)), want_cw(static_cast<std::size_t>(cd * c.d_conv)),
            want_cb(static_cast<std::size_t>(cd)), want_dpre(static_cast<std::size_t>(rows * cd));
        cpu_kernel::conv_silu_backward(cpu_context{}, c, batch, L, zx.exact.data(), conv_w.exact.data(),
                                       conv_b.exact.data(), dxbc.exact.data(), want_dzx.data(), want_cw.data(),
                                       want_cb.data(), want_dpre.data());
        CHECK(rel_error(columns(download(dzx), rows, dip, d, d + cd), columns(want_dzx, rows, dip, d, d + cd)) < 1e-5);
        const double tol = std::is_same_v<T, float> ? 1e-5 : 2e-2;
        CHECK(rel_error(download(dcw), want_cw) < tol);
        CHECK(rel_error(download(dcb), want_cb) < tol);
    }
}

}  // namespace

TEST_CASE_TEMPLATE("cuda projection backward equals the CPU kernels in float64", T, float, bf16) {
    check_projection_backward<T>(2, 13, 5, 10);
    check_projection_backward<T>(1, 40, 0, 20);
    check_projection_backward<T>(3, 7, 7, 30);
}

TEST_CASE_TEMPLATE("cuda block backward: rmsnorm (added into dx) and swiglu equal the CPU kernels", T, float, bf16) {
    const index_t rows = 45, width = 72, d_ff = 40;
    const auto x = random_values<T>(std::size_t(rows * width), 40, -2, 2);
    const auto w = random_values<T>(std::size_t(width), 41, 0.5, 1.5);
    const auto dy = random_values<T>(std::size_t(rows * width), 42);
    const auto dx0 = random_values<T>(std::size_t(rows * width), 43);  // a residual branch already there
    auto g_x = upload(x.stored), g_w = upload(w.stored), g_dy = upload(dy.stored), g_dx = upload(dx0.stored);
    auto dw = poisoned<T>(std::size_t(width));
    auto inv = poisoned<float>(std::size_t(rows));
    block_backward_kernel<gpu>::rmsnorm_backward(cuda_context{}, rows, width, g_x.data(), g_w.data(), 1e-5, g_dy.data(),
                                                 g_dx.data(), dw.data(), inv.data());
    std::vector<double> want_dx = dx0.exact, want_dw(static_cast<std::size_t>(width)), want_inv(static_cast<std::size_t>(rows));
    block_backward_kernel<cpu>::rmsnorm_backward(cpu_context{}, rows, width, x.exact.data(), w.exact.data(), 1e-5,
                                                 dy.exact.data(), want_dx.data(), want_dw.data(), want_inv.data());
    CHECK(rel_error(download(g_dx), want_dx) < storage_tolerance<T>());
    CHECK(rel_error(download(dw), want_dw) < storage_tolerance<T>());

    const auto gu = random_values<T>(std::size_t(rows * 2 * d_ff), 44, -4, 4);
    const auto da = random_values<T>(std::size_t(rows * d_ff), 45);
    auto g_gu = upload(gu.stored), g_da = upload(da.stored);
    auto dgu = poisoned<T>(std::size_t(rows * 2 * d_ff));
    block_backward_kernel<gpu>::swiglu_backward(cuda_context{}, rows, d_ff, g_gu.data(), g_da.data(), dgu.data());
    std::vector<double> want_dgu(static_cast<std::size_t>(rows * 2 * d_ff));
    block_backward_kernel<cpu>::swiglu_backward(cpu_context{}, rows, d_ff, gu.exact.data(), da.exact.data(),
                                                want_dgu.data());
    CHECK(rel_error(download(dgu), want_dgu) < storage_tolerance<T>());
}

TEST_CASE_TEMPLATE("cuda embedding backward: a deterministic scatter-add equal to the CPU's", T, float, bf16) {
    const index_t rows = 300, width = 40, vocab = 37;
    std::vector<std::int64_t> ids(static_cast<std::size_t>(rows));
    const auto draw = reference::random_vector(ids.size(), 50, 0, 1);
    for (std::size_t i = 0; i < ids.size(); ++i)  // skewed: id 3 a third of the tokens, some ids never
        ids[i] = draw[i] < 0.33 ? 3 : static_cast<std::int64_t>(draw[i] * double(vocab - 5));
    const auto drows = random_values<T>(std::size_t(rows * width), 51);
    const auto table0 = random_values<T>(std::size_t(vocab * width), 52);  // added into
    auto g_ids = upload(ids);
    auto g_drows = upload(drows.stored);
    using kernel = embedding_backward_kernel<gpu>;
    device_buffer<std::int64_t> scratch(kernel::scratch_elements(rows, vocab));
    std::vector<std::vector<T>> runs;
    for (int run = 0; run < 2; ++run) {
        auto table = upload(table0.stored);
        kernel::scatter_add(cuda_context{}, rows, width, vocab, g_ids.data(), g_drows.data(), table.data(), scratch.data());
        runs.push_back(download_raw(table));
    }
    std::vector<double> want = table0.exact;
    std::vector<std::int64_t> cpu_scratch(embedding_backward_kernel<cpu>::scratch_elements(rows, vocab));
    embedding_backward_kernel<cpu>::scatter_add(cpu_context{}, rows, width, vocab, ids.data(), drows.exact.data(),
                                                want.data(), cpu_scratch.data());
    std::vector<double> got;
    for (const T& v : runs[0]) got.push_back(kernels::cuda::to_float(v));
    CHECK(rel_error(got, want) < (std::is_same_v<T, float> ? 1e-5 : 2e-2));
    CHECK(std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(T)) == 0);  // bit-reproducible
}

TEST_CASE("cuda cross-entropy: loss, argmax and dlogits equal the CPU kernel's, ignored tokens") {
    const index_t rows = 41, ignore = -100;
    for (index_t vocab : {index_t(7), index_t(300), index_t(1031)}) {
        CAPTURE(vocab);
        const auto logits = random_values<float>(std::size_t(rows * vocab), 60 + vocab, -6, 6);
        std::vector<std::int64_t> targets(static_cast<std::size_t>(rows));
        for (index_t r = 0; r < rows; ++r) targets[std::size_t(r)] = r % 5 == 2 ? ignore : (r * 7919) % vocab;
        std::vector<float> tied = logits.stored;  // row 0: a tie for the largest logit (the first wins)
        tied[3] = tied[5] = 9.0f;
        const std::vector<double> tied_exact(tied.begin(), tied.end());
        const auto g_targets = upload(targets);
        const float scale = 1.0f / 33.0f;
        for (bool gradient : {false, true}) {
            CAPTURE(gradient);
            auto g_logits = upload(tied);
            auto row_loss = poisoned<float>(std::size_t(rows));
            device_buffer<std::int64_t> argmax(static_cast<std::size_t>(rows));
            gtraits::fill({}, argmax.data(), argmax.size(), std::int64_t(-1));
            loss_kernel<gpu>::cross_entropy(cuda_context{}, rows, vocab, g_logits.data(), g_targets.data(), ignore, scale,
                                            gradient, row_loss.data(), argmax.data());
            std::vector<double> want_logits = tied_exact, want_loss(static_cast<std::size_t>(rows));
            std::vector<std::int64_t> want_argmax(static_cast<std::size_t>(rows));
            loss_kernel<cpu>::cross_entropy(cpu_context{}, rows, vocab, want_logits.data(), targets.data(), ignore,
                                            double(scale), gradient, want_loss.data(), want_argmax.data());
            CHECK(rel_error(download(row_loss), want_loss) < 1e-5);
            CHECK(download_raw(argmax) == want_argmax);
            CHECK(want_argmax[0] == 3);
            CHECK(rel_error(download(g_logits), want_logits) < 1e-5);  // unchanged, or dlogits
        }
    }
}
