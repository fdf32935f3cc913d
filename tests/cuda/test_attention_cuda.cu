// attention_kernel<., cuda> against the float64 oracle (reference::attention, SPEC.md section 3).
//
// Inputs are drawn in double, rounded to the storage type T, and the oracle reads the rounded
// values: the error measured is the kernel's own arithmetic. Bounds (relative L2 error over the
// rows t < P):
//   float:       1e-5  (SIMT kernel, float32 products, sums and softmax)
//   bf16, fp16:  5e-3  (tensor cores: scores and P V from 16-bit operands, float32 accumulation
//                       and statistics; P = softmax(S) is rounded to T before P V)
// x, B and C live in one row of conv_dim = h*p + 2*g*n channels per token, as the mixer lays them
// out. y is poisoned with NaN: rows t >= P must still be NaN afterwards, rows t < P finite.
#include <doctest/doctest.h>

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <transmamba/backend/cuda/attention.cuh>

#include "reference/reference.hpp"
#include "support/oracle_variant.hpp"

namespace {

using namespace transmamba;
using testing::oracle_variant;

struct shape {
    index_t batch, L, prefix, h, p, n, g;
};

using fixed_scale_attention = attention_variant<false, true, no_position_encoding, fixed_scale<2.0>>;

template <class T>
double round_to(double v) {
    return static_cast<double>(kernels::cuda::to_float(kernels::cuda::from_float<T>(static_cast<float>(v))));
}

template <class T>
const char* type_name() {
    if constexpr (std::is_same_v<T, float>) return "float";
    else if constexpr (std::is_same_v<T, __nv_bfloat16>) return "bf16";
    else return "fp16";
}

template <class T>
constexpr double bound() {
    return std::is_same_v<T, float> ? 1e-5 : 5e-3;
}

// Debug aid printed when a case fails: the worst element, and the error folded onto one 128 x 128
// tile (row t % 128, column c % 128, 8 x 8 blocks; batch 0), as log10 of the block's relative
// error: a wrong fragment, swizzle or mask layout shows as a pattern of blocks.
void print_error_map(const std::vector<float>& got, const std::vector<double>& want, const shape& s) {
    const index_t hp = s.h * s.p;
    double worst = -1;
    index_t wt = 0, wc = 0;
    std::vector<double> e2(256, 0.0), r2(256, 0.0);
    for (index_t t = 0; t < s.prefix; ++t)
        for (index_t c = 0; c < hp; ++c) {
            const std::size_t i = static_cast<std::size_t>(t * hp + c);
            const double d = std::isfinite(got[i]) ? std::abs(got[i] - want[i]) : 1e30;
            if (d > worst) worst = d, wt = t, wc = c;
            const std::size_t blk = static_cast<std::size_t>((t % 128) / 8 * 16 + (c % 128) / 8);
            e2[blk] += d * d;
            r2[blk] += want[i] * want[i];
        }
    const std::size_t wi = static_cast<std::size_t>(wt * hp + wc);
    std::printf("  worst |err| %.3e at t=%td c=%td: got %.6f want %.6f\n  log10 rel err by (t%%128/8 rows, c%%128/8 cols):\n",
                worst, wt, wc, double(got[wi]), want[wi]);
    for (int r = 0; r < 16; ++r) {
        std::printf("  ");
        for (int c = 0; c < 16; ++c) {
            const std::size_t blk = static_cast<std::size_t>(r * 16 + c);
            if (r2[blk] == 0) std::printf("  . ");
            else std::printf("%4.0f", std::log10(std::sqrt(e2[blk] / r2[blk]) + 1e-12));
        }
        std::printf("\n");
    }
}

// Runs one case; checks the NaN sentinel rows and returns the relative error.
template <class T, class Variant>
double check_case(const shape& s, const char* variant, std::uint64_t seed) {
    const index_t b = s.batch, L = s.L, h = s.h, p = s.p, n = s.n, g = s.g;
    mixer_config cfg;
    cfg.expand = 1;
    cfg.d_model = h * p;
    cfg.headdim = p;
    cfg.d_state = n;
    cfg.ngroups = g;
    cfg.validate();
    reference::dims d;
    d.batch = int(b);
    d.seqlen = int(L);
    d.d_model = int(h * p);
    d.expand = 1;
    d.headdim = int(p);
    d.d_state = int(n);
    d.ngroups = int(g);

    const auto rows = static_cast<std::size_t>(b * L);
    const auto hp = static_cast<std::size_t>(h * p), gn = static_cast<std::size_t>(g * n);
    auto x = reference::random_vector(rows * hp, seed * 101 + 1);
    auto B = reference::random_vector(rows * gn, seed * 101 + 2);
    auto C = reference::random_vector(rows * gn, seed * 101 + 3);
    auto D = reference::random_vector(static_cast<std::size_t>(h), seed * 101 + 4, 0.5, 1.5);
    for (auto* v : {&x, &B, &C})
        for (auto& e : *v) e = round_to<T>(e);
    for (auto& e : D) e = static_cast<double>(static_cast<float>(e));

    // [x | B | C] per token, conv_dim channels.
    const index_t width = h * p + 2 * g * n;
    std::vector<T> xbc(rows * static_cast<std::size_t>(width));
    for (std::size_t r = 0; r < rows; ++r) {
        T* row = xbc.data() + r * static_cast<std::size_t>(width);
        for (std::size_t c = 0; c < hp; ++c) row[c] = kernels::cuda::from_float<T>(float(x[r * hp + c]));
        for (std::size_t c = 0; c < gn; ++c) row[hp + c] = kernels::cuda::from_float<T>(float(B[r * gn + c]));
        for (std::size_t c = 0; c < gn; ++c) row[hp + gn + c] = kernels::cuda::from_float<T>(float(C[r * gn + c]));
    }
    std::vector<float> D_f(D.begin(), D.end());
    std::vector<float> y_host(rows * hp, std::numeric_limits<float>::quiet_NaN());

    using traits = backend_traits<transmamba::cuda>;
    const cuda_context ctx{};
    device_buffer<T> xbc_d(xbc.size());
    device_buffer<float> D_d(D_f.size()), y_d(y_host.size());
    traits::copy_from_host(xbc.data(), xbc_d.data(), xbc.size(), ctx);
    traits::copy_from_host(D_f.data(), D_d.data(), D_f.size(), ctx);
    traits::copy_from_host(y_host.data(), y_d.data(), y_host.size(), ctx);

    ssm_inputs<T> in;
    const T* base = xbc_d.data();
    in.x = tensor_view<const T, 4>(base, {b, L, h, p}, {L * width, width, p, 1});
    in.B = tensor_view<const T, 4>(base + h * p, {b, L, g, n}, {L * width, width, n, 1});
    in.C = tensor_view<const T, 4>(base + h * p + g * n, {b, L, g, n}, {L * width, width, n, 1});
    in.D = D_d.data();

    using kernel = attention_kernel<Variant, transmamba::cuda>;
    device_buffer<std::byte> scratch(kernel::template scratch_bytes<T>(cfg, b, s.prefix));
    kernel::template run<T>(ctx, cfg, in, s.prefix, tensor_view<float, 4>(y_d.data(), {b, L, h, p}),
                            align_span({scratch.data(), scratch.size()}));
    traits::copy_to_host(y_d.data(), y_host.data(), y_host.size(), ctx);
    traits::synchronize(ctx);

    const auto want = reference::attention(d, oracle_variant<Variant>(n), x, B, C, D, int(s.prefix));
    double err2 = 0, ref2 = 0;
    bool written = true, untouched = true;
    for (index_t bb = 0; bb < b; ++bb)
        for (index_t t = 0; t < L; ++t)
            for (std::size_t c = 0; c < hp; ++c) {
                const std::size_t i = static_cast<std::size_t>(bb * L + t) * hp + c;
                if (t < s.prefix) {
                    written = written && std::isfinite(y_host[i]);
                    err2 += (y_host[i] - want[i]) * (y_host[i] - want[i]);
                    ref2 += want[i] * want[i];
                } else {
                    untouched = untouched && std::isnan(y_host[i]);
                }
            }
    const double rel = std::sqrt(err2 / ref2);
    const bool sm90 = !std::is_same_v<T, float> && kernel::uses_sm90(n);
    std::printf("attention cuda %-5s %-22s b=%td L=%td P=%td h=%td p=%td n=%td g=%td (%s): rel err %.3e (bound %.0e)\n",
                type_name<T>(), variant, b, L, s.prefix, h, p, n, g, sm90 ? "sm90" : "mma.sync", rel, bound<T>());
    if (!(rel < bound<T>())) print_error_map(y_host, want, s);
    INFO(type_name<T>(), " ", variant, " b=", b, " L=", L, " P=", s.prefix, " h=", h, " p=", p, " n=", n, " g=", g);
    CHECK(written);
    CHECK(untouched);
    CHECK(rel < bound<T>());
    return rel;
}

// Shapes cover: n and p in {16, 64, 128}; g = 1, 2 and g = h; P = 1, 63, 64, 65, 300 (partial and
// whole query/key tiles); every CTA value width (64, 128, 256, 512) and a group wider than one CTA
// (1024 columns) or not a multiple of it (384 columns: a masked column tail).
const std::vector<shape> shapes = {
    // batch, L, P, h, p, n, g
    {2, 80, 65, 4, 64, 64, 1},      // 256 columns per group
    {1, 300, 300, 4, 16, 128, 2},   // 32 columns -> width 64
    {1, 70, 63, 2, 128, 16, 2},     // one head per group, 128 columns
    {2, 64, 64, 8, 64, 128, 1},     // 512 columns
    {1, 40, 1, 4, 16, 16, 4},       // P = 1, g = h
    {1, 130, 65, 4, 64, 128, 4},    // g = h, 64 columns
    {1, 200, 199, 16, 64, 64, 1},   // 1024 columns: two CTAs per group
    {1, 150, 130, 6, 64, 64, 1},    // 384 columns: masked tail
};

// The Hopper kernel (sm90/attention_sm90.cuh; in a 90a build on an H100/H200 every bf16 / fp16
// case with n = 64 or 128 runs it): 128-query and 128-key tiles, value widths 64 and 128. First a
// single tile (the debug case: a layout error shows in its error map), then L and P off the tile,
// several tiles and stages, ngroups 1, 2 and h, headdim 64 and 128, n 64 and 128.
const std::vector<shape> sm90_shapes = {
    // batch, L, P, h, p, n, g
    {1, 128, 128, 1, 64, 64, 1},     // one tile, width 64
    {1, 128, 100, 1, 128, 128, 1},   // one tile, width 128, P off the tile
    {2, 300, 257, 2, 128, 128, 1},   // g = 1: 256 columns, two slices; 3 key tiles (ring wraps)
    {1, 520, 390, 8, 64, 128, 8},    // g = h, p = 64
    {2, 200, 200, 4, 128, 64, 2},    // g = 2, n = 64, p = 128
    {1, 333, 333, 4, 128, 128, 4},   // g = h, p = 128
    {1, 700, 650, 6, 64, 64, 2},     // 192 columns per group: a masked half slice; 6 key tiles
};

template <class T>
void check_sm90_shapes() {
    using kernel = attention_kernel<paper_attention, transmamba::cuda>;
    if (!kernel::uses_sm90(128)) MESSAGE("the sm90 attention kernel is not built or not on this device: these cases run the mma.sync kernel");
    std::uint64_t seed = 500;
    for (const auto& s : sm90_shapes) check_case<T, paper_attention>(s, "paper_attention", seed++);
    check_case<T, no_skip_attention>(sm90_shapes[2], "no_skip_attention", seed++);
    check_case<T, rope_attention>(sm90_shapes[4], "rope_attention", seed++);
}

template <class T>
void check_all_shapes() {
    std::uint64_t seed = 1;
    for (const auto& s : shapes) check_case<T, paper_attention>(s, "paper_attention", seed++);
    check_case<T, no_skip_attention>(shapes[0], "no_skip_attention", seed++);
    check_case<T, no_skip_attention>(shapes[5], "no_skip_attention", seed++);
    check_case<T, rope_attention>(shapes[1], "rope_attention", seed++);
    check_case<T, rope_attention>(shapes[3], "rope_attention", seed++);
    check_case<T, fixed_scale_attention>(shapes[2], "fixed_scale<2.0>", seed++);
    check_case<T, fixed_scale_attention>(shapes[6], "fixed_scale<2.0>", seed++);
}

}  // namespace

// The decoding step's cases are in test_decode_attention_cuda.cu.

TEST_CASE("attention cuda: float matches the float64 oracle") { check_all_shapes<float>(); }

TEST_CASE("attention cuda: bf16 matches the float64 oracle") { check_all_shapes<__nv_bfloat16>(); }

TEST_CASE("attention cuda: fp16 matches the float64 oracle") { check_all_shapes<__half>(); }

TEST_CASE("attention cuda: bf16, the tiles of the sm90 kernel") { check_sm90_shapes<__nv_bfloat16>(); }

TEST_CASE("attention cuda: fp16, the tiles of the sm90 kernel") { check_sm90_shapes<__half>(); }

TEST_CASE("attention cuda: bf16 long prefix, L = 2048") {
    check_case<__nv_bfloat16, paper_attention>({1, 2048, 2048, 4, 64, 128, 1}, "paper_attention", 99);
    check_case<__nv_bfloat16, rope_attention>({1, 1024, 1000, 2, 64, 64, 2}, "rope_attention", 98);
    check_case<__nv_bfloat16, paper_attention>({2, 2048, 1999, 4, 128, 128, 2}, "paper_attention", 97);
}

TEST_CASE("attention cuda: the CTA order takes every (batch, group, chunk, query tile) once") {
    // Waves of slices that do and do not divide the slice count, one wave, one slice per wave.
    for (int per_wave : {1, 3, 4, 7, 100}) {
        const int tiles = 5, chunks = 2, groups = 3, batch = 2;
        std::vector<int> seen(static_cast<std::size_t>(tiles * chunks * groups * batch), 0);
        bool heavy_first = true;
        int last_wave_first = -1, last_tile = tiles;
        for (int bid = 0; bid < tiles * chunks * groups * batch; ++bid) {
            const auto t = kernels::cuda::prefill::attention_tile::of(bid, tiles, chunks, groups, batch, per_wave);
            REQUIRE((t.tile >= 0 && t.tile < tiles && t.chunk >= 0 && t.chunk < chunks && t.grp >= 0 &&
                     t.grp < groups && t.b >= 0 && t.b < batch));
            ++seen[static_cast<std::size_t>(((t.b * groups + t.grp) * chunks + t.chunk) * tiles + t.tile)];
            const int wave_first = bid / (per_wave * tiles);
            if (wave_first != last_wave_first) last_tile = tiles;
            heavy_first = heavy_first && t.tile <= last_tile;  // within a wave, tiles never grow
            last_tile = t.tile;
            last_wave_first = wave_first;
        }
        INFO("slices per wave ", per_wave);
        CHECK(heavy_first);
        for (int c : seen) CHECK(c == 1);
    }
}

TEST_CASE("attention cuda: unsupported sizes are rejected with a transmamba::error") {
    auto attempt = [](index_t p, index_t n) {
        mixer_config cfg;
        cfg.expand = 1;
        cfg.d_model = 2 * p;
        cfg.headdim = p;
        cfg.d_state = n;
        ssm_inputs<__nv_bfloat16> in;
        const index_t width = 2 * p + 2 * n;
        static const __nv_bfloat16 dummy[1] = {};
        in.x = tensor_view<const __nv_bfloat16, 4>(dummy, {1, 8, 2, p}, {8 * width, width, p, 1});
        in.B = tensor_view<const __nv_bfloat16, 4>(dummy, {1, 8, 1, n}, {8 * width, width, n, 1});
        in.C = in.B;
        attention_kernel<paper_attention, transmamba::cuda>::run<__nv_bfloat16>({}, cfg, in, 8,
                                                                     tensor_view<float, 4>(nullptr, {1, 8, 2, p}), {});
    };
    CHECK_THROWS_AS(attempt(64, 48), transmamba::error);
    CHECK_THROWS_AS(attempt(48, 64), transmamba::error);
    CHECK_THROWS_WITH_AS(attempt(64, 256), doctest::Contains("d_state must be one of 16, 32, 64, 128"),
                         transmamba::error);
}
