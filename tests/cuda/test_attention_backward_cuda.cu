// attention_backward_kernel<., cuda> against the CPU backward in float64
// (backend/cpu/attention_backward.hpp, itself checked against finite differences), and the
// log-sum-exp the CUDA forward keeps against the CPU forward's.
//
// Inputs are drawn in double and rounded to the storage type T (x, B, C) or to float (D, dy); the
// CPU reads the rounded values, so the error measured is the CUDA kernels' own arithmetic.
// Bounds (relative L2 error per gradient over rows t < P):
//   float: 1e-4 (3xTF32 products, float32 sums; the forward's y and lse in float)
//   bf16:  2e-2 (dy, P and dS rounded to bf16 before the tensor-core products)
// The gradient buffers hold x | B | C per token as the mixer lays them out. The kernel ADDS into
// them: rows t < P start at known values (the result minus them is compared), rows t >= P and dy's
// rows t >= P are NaN, and must stay NaN / must not leak into anything.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <transmamba/backend/cpu/attention.hpp>
#include <transmamba/backend/cpu/attention_backward.hpp>
#include <transmamba/backend/cuda/attention.cuh>
#include <transmamba/backend/cuda/attention_backward.cuh>

#include "reference/reference.hpp"

namespace test_cuda_attention_backward {

using namespace transmamba;

struct shape {
    index_t batch, L, prefix, h, p, n, g;
};

template <class T>
double round_to(double v) {
    return static_cast<double>(kernels::cuda::to_float(kernels::cuda::from_float<T>(static_cast<float>(v))));
}

template <class T>
const char* type_name() {
    return std::is_same_v<T, float> ? "float" : "bf16";
}

template <class T>
constexpr double grad_bound() {
    return std::is_same_v<T, float> ? 1e-4 : 2e-2;
}
template <class T>
constexpr double lse_bound() {
    return std::is_same_v<T, float> ? 1e-5 : 1e-4;
}

// Relative L2 error of got against want; any non-finite value in got makes it infinite.
double rel_error(const std::vector<double>& got, const std::vector<double>& want) {
    double e2 = 0, w2 = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
        e2 += (got[i] - want[i]) * (got[i] - want[i]);
        w2 += want[i] * want[i];
    }
    return w2 > 0 ? std::sqrt(e2 / w2) : std::sqrt(e2);
}

template <class T, class Variant>
void check_case(const shape& s, const char* variant, std::uint64_t seed) {
    const index_t b = s.batch, L = s.L, P = s.prefix, h = s.h, p = s.p, n = s.n, g = s.g;
    mixer_config cfg;
    cfg.expand = 1;
    cfg.d_model = h * p;
    cfg.headdim = p;
    cfg.d_state = n;
    cfg.ngroups = g;
    cfg.validate();
    const index_t hp = h * p, gn = g * n, width = hp + 2 * gn;
    const auto rows = static_cast<std::size_t>(b * L);
    const auto cells = rows * static_cast<std::size_t>(width);

    // x | B | C per token, rounded to T; D and dy rounded to float.
    auto xbc = reference::random_vector(cells, seed * 131 + 1);
    for (auto& e : xbc) e = round_to<T>(e);
    auto D = reference::random_vector(static_cast<std::size_t>(h), seed * 131 + 2, 0.5, 1.5);
    for (auto& e : D) e = static_cast<float>(e);
    auto dy = reference::random_vector(rows * static_cast<std::size_t>(hp), seed * 131 + 3);
    for (auto& e : dy) e = static_cast<float>(e);
    const auto base = reference::random_vector(cells, seed * 131 + 4, -0.25, 0.25);  // what the gradients start at
    const auto base_D = reference::random_vector(static_cast<std::size_t>(b * h), seed * 131 + 5, -0.25, 0.25);

    auto views = [&](auto* ptr) {
        using E = std::remove_pointer_t<decltype(ptr)>;
        return std::array<tensor_view<E, 4>, 3>{
            tensor_view<E, 4>(ptr, {b, L, h, p}, {L * width, width, p, 1}),
            tensor_view<E, 4>(ptr + hp, {b, L, g, n}, {L * width, width, n, 1}),
            tensor_view<E, 4>(ptr + hp + gn, {b, L, g, n}, {L * width, width, n, 1}),
        };
    };

    // ---- the CPU in double: forward (y, lse), backward into zeroed gradients ----
    std::vector<double> y_ref(rows * static_cast<std::size_t>(hp), 0.0), lse_ref(static_cast<std::size_t>(b * g * P));
    std::vector<double> grad_ref(cells, 0.0), dD_ref(static_cast<std::size_t>(b * h), 0.0);
    {
        const auto v = views(static_cast<const double*>(xbc.data()));
        ssm_inputs<double> in;
        in.x = v[0], in.B = v[1], in.C = v[2];
        in.D = D.data();
        const auto gv = views(grad_ref.data());
        const ssm_grads<double> gr{gv[0], gv[1], gv[2], {}, {}, tensor_view<double, 2>(dD_ref.data(), {b, h})};
        std::vector<std::byte> scratch(std::max(attention_kernel<Variant, cpu>::template scratch_bytes<double>(cfg, b, P),
                                                attention_backward_kernel<Variant, cpu>::template scratch_bytes<double>(cfg, b, P)) +
                                       256);
        const workspace_span span{scratch.data(), scratch.size()};
        attention_kernel<Variant, cpu>::run(cpu_context{}, cfg, in, P, tensor_view<double, 4>(y_ref.data(), {b, L, h, p}),
                                            span, tensor_view<double, 3>(lse_ref.data(), {b, g, P}));
        attention_backward_kernel<Variant, cpu>::run(cpu_context{}, cfg, in, P,
                                                     tensor_view<const double, 4>(y_ref.data(), {b, L, h, p}),
                                                     tensor_view<const double, 3>(lse_ref.data(), {b, g, P}),
                                                     tensor_view<const double, 4>(dy.data(), {b, L, h, p}), gr, span);
    }

    // ---- the GPU ----
    using traits = backend_traits<transmamba::cuda>;
    const cuda_context ctx{};
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<T> xbc_t(cells);
    for (std::size_t i = 0; i < cells; ++i) xbc_t[i] = kernels::cuda::from_float<T>(static_cast<float>(xbc[i]));
    std::vector<float> D_f(D.begin(), D.end()), dy_f(dy.size()), grad_f(cells), dD_f(base_D.begin(), base_D.end());
    for (std::size_t r = 0; r < rows; ++r) {
        const bool in_prefix = static_cast<index_t>(r) % L < P;
        for (index_t c = 0; c < hp; ++c) {
            const std::size_t i = r * static_cast<std::size_t>(hp) + static_cast<std::size_t>(c);
            dy_f[i] = in_prefix ? static_cast<float>(dy[i]) : nan;
        }
        for (index_t c = 0; c < width; ++c) {
            const std::size_t i = r * static_cast<std::size_t>(width) + static_cast<std::size_t>(c);
            grad_f[i] = in_prefix ? static_cast<float>(base[i]) : nan;
        }
    }
    device_buffer<T> xbc_d(cells);
    device_buffer<float> D_d(D_f.size()), y_d(rows * static_cast<std::size_t>(hp)), lse_d(lse_ref.size()),
        dy_d(dy_f.size()), grad_d(cells), dD_d(dD_f.size());
    traits::copy_from_host(xbc_t.data(), xbc_d.data(), cells, ctx);
    traits::copy_from_host(D_f.data(), D_d.data(), D_f.size(), ctx);
    traits::copy_from_host(dy_f.data(), dy_d.data(), dy_f.size(), ctx);
    traits::copy_from_host(grad_f.data(), grad_d.data(), cells, ctx);
    traits::copy_from_host(dD_f.data(), dD_d.data(), dD_f.size(), ctx);
    {
        std::vector<float> poison(rows * static_cast<std::size_t>(hp), nan);
        traits::copy_from_host(poison.data(), y_d.data(), poison.size(), ctx);
        std::vector<float> lse_poison(lse_ref.size(), nan);
        traits::copy_from_host(lse_poison.data(), lse_d.data(), lse_poison.size(), ctx);
    }
    const auto v = views(static_cast<const T*>(xbc_d.data()));
    ssm_inputs<T> in;
    in.x = v[0], in.B = v[1], in.C = v[2];
    in.D = D_d.data();
    const auto gv = views(grad_d.data());
    const ssm_grads<float> gr{gv[0], gv[1], gv[2], {}, {}, tensor_view<float, 2>(dD_d.data(), {b, h})};
    using forward = attention_kernel<Variant, transmamba::cuda>;
    using backward = attention_backward_kernel<Variant, transmamba::cuda>;
    device_buffer<std::byte> scratch(
        std::max(forward::template scratch_bytes<T>(cfg, b, P), backward::template scratch_bytes<T>(cfg, b, P)) + 256);
    const workspace_span span = align_span({scratch.data(), scratch.size()});
    forward::template run<T>(ctx, cfg, in, P, tensor_view<float, 4>(y_d.data(), {b, L, h, p}), span,
                             tensor_view<float, 3>(lse_d.data(), {b, g, P}));
    backward::template run<T>(ctx, cfg, in, P, tensor_view<const float, 4>(y_d.data(), {b, L, h, p}),
                              tensor_view<const float, 3>(lse_d.data(), {b, g, P}),
                              tensor_view<const float, 4>(dy_d.data(), {b, L, h, p}), gr, span);
    std::vector<float> lse_f(lse_ref.size());
    traits::copy_to_host(lse_d.data(), lse_f.data(), lse_f.size(), ctx);
    traits::copy_to_host(grad_d.data(), grad_f.data(), cells, ctx);
    traits::copy_to_host(dD_d.data(), dD_f.data(), dD_f.size(), ctx);
    traits::synchronize(ctx);

    // ---- compare ----
    std::vector<double> got[3], want[3];
    bool untouched = true;
    for (std::size_t r = 0; r < rows; ++r)
        for (index_t c = 0; c < width; ++c) {
            const std::size_t i = r * static_cast<std::size_t>(width) + static_cast<std::size_t>(c);
            if (static_cast<index_t>(r) % L >= P) {
                untouched = untouched && std::isnan(grad_f[i]);
                continue;
            }
            const int part = c < hp ? 0 : c < hp + gn ? 1 : 2;
            got[part].push_back(static_cast<double>(grad_f[i]) - static_cast<double>(static_cast<float>(base[i])));
            want[part].push_back(grad_ref[i]);
        }
    std::vector<double> got_D(dD_f.size());
    for (std::size_t i = 0; i < dD_f.size(); ++i)
        got_D[i] = static_cast<double>(dD_f[i]) - static_cast<double>(static_cast<float>(base_D[i]));
    std::vector<double> got_lse(lse_f.begin(), lse_f.end());
    const double e_x = rel_error(got[0], want[0]), e_B = rel_error(got[1], want[1]), e_C = rel_error(got[2], want[2]);
    const double e_D = Variant::skip_D ? rel_error(got_D, dD_ref) : 0.0, e_lse = rel_error(got_lse, lse_ref);
    std::printf("attention backward cuda %-5s %-18s b=%td L=%td P=%td h=%td p=%td n=%td g=%td: rel err dx %.2e dB %.2e "
                "dC %.2e dD %.2e lse %.2e (bounds %.0e, lse %.0e)\n",
                type_name<T>(), variant, b, L, P, h, p, n, g, e_x, e_B, e_C, e_D, e_lse, grad_bound<T>(), lse_bound<T>());
    INFO(type_name<T>(), " ", variant, " b=", b, " L=", L, " P=", P, " h=", h, " p=", p, " n=", n, " g=", g);
    CHECK(untouched);
    CHECK(e_lse < lse_bound<T>());
    CHECK(e_x < grad_bound<T>());
    CHECK(e_B < grad_bound<T>());
    CHECK(e_C < grad_bound<T>());
    CHECK(e_D < grad_bound<T>());
    if constexpr (!Variant::skip_D) {  // no D skip: dD is not touched
        for (std::size_t i = 0; i < dD_f.size(); ++i) CHECK(dD_f[i] == static_cast<float>(base_D[i]));
    }
}

// P = 1, a whole tile (64), one past it and other partial tiles; ngroups 1, 2 and h; d_state 16 to
// 128 (bf16 at 64 and 128 keeps its lse in the Hopper forward in a 90a build, the others in the
// mma.sync / SIMT forward); groups of one column chunk and of several (float: 64 columns a chunk,
// bf16: 256), so dK and dQ receive several ordered additions per key tile.
const std::vector<shape> shapes = {
    // batch, L, P, h, p, n, g
    {2, 70, 1, 4, 16, 32, 2},      // P = 1
    {2, 80, 64, 4, 64, 64, 1},     // one whole tile; g = 1, 256 columns
    {1, 150, 130, 4, 32, 128, 4},  // g = h, three tiles, the last one of two queries
    {2, 100, 65, 2, 64, 16, 2},    // one head per group, n = 16, P = one past a tile
    {1, 260, 257, 8, 64, 64, 2},   // g = 2, 256 columns, five tiles
    {1, 140, 140, 8, 64, 32, 1},   // g = 1, 512 columns: two chunks in bf16, eight in float
};

template <class T>
void check_all() {
    std::uint64_t seed = 1;
    for (const auto& s : shapes) check_case<T, paper_attention>(s, "paper_attention", seed++);
    check_case<T, rope_attention>(shapes[2], "rope_attention", seed++);
    check_case<T, rope_attention>(shapes[4], "rope_attention", seed++);
    check_case<T, no_skip_attention>(shapes[1], "no_skip_attention", seed++);
}

TEST_CASE("attention backward cuda: float matches the CPU backward in double") { check_all<float>(); }

TEST_CASE("attention backward cuda: bf16 matches the CPU backward in double") { check_all<__nv_bfloat16>(); }

// One small case of each storage type, for compute-sanitizer (memcheck, racecheck).
TEST_CASE("attention backward cuda: small, for the sanitizer") {
    check_case<float, paper_attention>({1, 70, 70, 4, 32, 32, 2}, "paper_attention", 77);
    check_case<__nv_bfloat16, rope_attention>({1, 70, 66, 4, 64, 64, 1}, "rope_attention", 78);
}

TEST_CASE("attention backward cuda: unsupported sizes are rejected with a transmamba::error") {
    mixer_config cfg;
    cfg.expand = 1;
    cfg.d_model = 128;
    cfg.headdim = 64;
    cfg.d_state = 48;
    ssm_inputs<__nv_bfloat16> in;
    const index_t width = 128 + 2 * 48;
    static const __nv_bfloat16 dummy[1] = {};
    in.x = tensor_view<const __nv_bfloat16, 4>(dummy, {1, 8, 2, 64}, {8 * width, width, 64, 1});
    in.B = tensor_view<const __nv_bfloat16, 4>(dummy, {1, 8, 1, 48}, {8 * width, width, 48, 1});
    in.C = in.B;
    using kernel = attention_backward_kernel<paper_attention, transmamba::cuda>;
    auto attempt = [&] {
        kernel::run<__nv_bfloat16>({}, cfg, in, 8, tensor_view<const float, 4>(nullptr, {1, 8, 2, 64}),
                                   tensor_view<const float, 3>(nullptr, {1, 1, 8}),
                                   tensor_view<const float, 4>(nullptr, {1, 8, 2, 64}), {}, {});
    };
    CHECK_THROWS_WITH_AS(attempt(), doctest::Contains("d_state must be one of 16, 32, 64, 128"), transmamba::error);
}

}  // namespace test_cuda_attention_backward
