// io/dtype.hpp: the bfloat16 / float16 conversions round to nearest even, against a reference that
// searches the sorted list of every representable value; decoding is exact; the dtype table and the
// conversion hook.
#include <doctest/doctest.h>

#include <transmamba/io/dtype.hpp>
#include <transmamba/io/safetensors.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

// A user storage type plugged in through the hook, as a backend's __nv_bfloat16 is.
namespace {
struct my_bf16 {
    std::uint16_t raw;
};
}  // namespace
template <>
struct transmamba::element_traits<my_bf16> {
    static constexpr dtype stored = dtype::BF16;
    static my_bf16 from_float(float v) { return {float_to_bf16_bits(v)}; }
    static float to_float(my_bf16 v) { return bf16_bits_to_float(v.raw); }
};

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_io_dtype {

using namespace transmamba;

namespace {

// The non-negative finite values of a 16-bit format, in bit order (= value order).
std::vector<double> finite_values(std::uint16_t max_bits, double (*decode)(std::uint16_t)) {
    std::vector<double> v;
    for (std::uint32_t b = 0; b <= max_bits; ++b) v.push_back(decode(static_cast<std::uint16_t>(b)));
    return v;
}

double f16_value(std::uint16_t b) {  // from the definition, not from the code under test
    const int e = (b >> 10) & 0x1f, m = b & 0x3ff;
    const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
    return (b & 0x8000) ? -mag : mag;
}
double bf16_value(std::uint16_t b) {
    const int e = (b >> 7) & 0xff, m = b & 0x7f;
    const double mag = e == 0 ? std::ldexp(m, -133) : std::ldexp(128 + m, e - 134);
    return (b & 0x8000) ? -mag : mag;
}

// Round-to-nearest-even into a format whose non-negative finite values are `values` (bits 0..n-1),
// overflowing to infinity (bits `inf`) from `overflow` on.
std::uint16_t reference_round(double x, const std::vector<double>& values, double overflow, std::uint16_t inf) {
    const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const double a = std::fabs(x);
    if (a >= overflow) return sign | inf;
    const auto hi = static_cast<std::size_t>(std::lower_bound(values.begin(), values.end(), a) - values.begin());
    if (hi < values.size() && values[hi] == a) return static_cast<std::uint16_t>(sign | hi);
    const std::size_t lo = hi - 1;
    const double dlo = a - values[lo], dhi = hi < values.size() ? values[hi] - a : INFINITY;
    std::size_t pick = dlo < dhi ? lo : dhi < dlo ? hi : (lo % 2 == 0 ? lo : hi);
    if (pick == values.size()) return sign | inf;
    return static_cast<std::uint16_t>(sign | pick);
}

const std::vector<double>& f16_table() {
    static const auto t = finite_values(0x7bff, f16_value);
    return t;
}
const std::vector<double>& bf16_table() {
    static const auto t = finite_values(0x7f7f, bf16_value);
    return t;
}
constexpr double f16_overflow = 65520.0;                             // 65504 + half an ulp (16)
const double bf16_overflow = bf16_value(0x7f7f) + std::ldexp(1.0, 119);  // max + half an ulp

void check_float(float f) {
    CAPTURE(f);
    CAPTURE(std::bit_cast<std::uint32_t>(f));
    if (std::isnan(f)) {
        CHECK(std::isnan(f16_bits_to_float(float_to_f16_bits(f))));
        CHECK(std::isnan(bf16_bits_to_float(float_to_bf16_bits(f))));
        return;
    }
    if (std::isinf(f)) {
        CHECK(float_to_f16_bits(f) == (f > 0 ? 0x7c00 : 0xfc00));
        CHECK(float_to_bf16_bits(f) == (f > 0 ? 0x7f80 : 0xff80));
        return;
    }
    CHECK(float_to_f16_bits(f) == reference_round(f, f16_table(), f16_overflow, 0x7c00));
    CHECK(float_to_bf16_bits(f) == reference_round(f, bf16_table(), bf16_overflow, 0x7f80));
}

}  // namespace

TEST_CASE("dtype table: names, sizes and kinds") {
    for (dtype t : all_dtypes) {
        CAPTURE(dtype_name(t));
        CHECK(parse_dtype(dtype_name(t)) == t);
        CHECK(dtype_size(t) >= 1);
    }
    CHECK(!parse_dtype("F128"));
    CHECK(!parse_dtype("f32"));  // the format spells them in capitals
    CHECK(dtype_size(dtype::BF16) == 2);
    CHECK(dtype_size(dtype::I64) == 8);
    CHECK(is_float_dtype(dtype::BF16));
    CHECK(!is_float_dtype(dtype::F8_E4M3));
    CHECK(is_integer_dtype(dtype::BOOL));
    CHECK(dtype_of<float>() == dtype::F32);
    CHECK(dtype_of<double>() == dtype::F64);
    CHECK(dtype_of<std::int64_t>() == dtype::I64);
    CHECK(dtype_of<std::uint8_t>() == dtype::U8);
    CHECK(dtype_of<bf16_bits>() == dtype::BF16);
    CHECK(dtype_of<f16_bits>() == dtype::F16);
}

TEST_CASE("float16 and bfloat16 decode exactly and every value round-trips") {
    for (std::uint32_t b = 0; b < 0x10000; ++b) {
        const auto bits = static_cast<std::uint16_t>(b);
        CAPTURE(b);
        const float h = f16_bits_to_float(bits), g = bf16_bits_to_float(bits);
        const bool h_nan = ((b >> 10) & 0x1f) == 0x1f && (b & 0x3ff) != 0;
        const bool g_nan = ((b >> 7) & 0xff) == 0xff && (b & 0x7f) != 0;
        if (h_nan) {
            CHECK(std::isnan(h));
        } else {
            if (((b >> 10) & 0x1f) != 0x1f) CHECK(static_cast<double>(h) == f16_value(bits));
            CHECK(float_to_f16_bits(h) == bits);
        }
        if (g_nan) {
            CHECK(std::isnan(g));
        } else {
            if (((b >> 7) & 0xff) != 0xff) CHECK(static_cast<double>(g) == bf16_value(bits));
            CHECK(float_to_bf16_bits(g) == bits);
        }
    }
}

TEST_CASE("float -> float16 / bfloat16 rounds to nearest even: every midpoint, edges, random floats") {
    // Every midpoint between neighbours is a tie (exact in float): it must go to the even one.
    const auto& h = f16_table();
    for (std::size_t i = 0; i + 1 < h.size(); ++i) {
        const auto mid = static_cast<float>((h[i] + h[i + 1]) / 2);
        REQUIRE(static_cast<double>(mid) == (h[i] + h[i + 1]) / 2);
        const auto even = static_cast<std::uint16_t>(i % 2 == 0 ? i : i + 1);
        CHECK(float_to_f16_bits(mid) == even);
        CHECK(float_to_f16_bits(-mid) == (0x8000 | even));
    }
    const auto& g = bf16_table();
    for (std::size_t i = 0; i + 1 < g.size(); ++i) {
        const auto mid = static_cast<float>((g[i] + g[i + 1]) / 2);
        const auto even = static_cast<std::uint16_t>(i % 2 == 0 ? i : i + 1);
        CHECK(float_to_bf16_bits(mid) == even);
    }
    // Edges: zeros, the smallest subnormals and their halves, the largest values, overflow.
    const float edges[] = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65505.0f, 65519.99f, 65520.0f, 65536.0f, 1e6f,
                           std::ldexp(1.0f, -24), std::ldexp(1.0f, -25), std::ldexp(1.5f, -25), std::ldexp(1.0f, -26),
                           std::ldexp(1.0f, -14), std::ldexp(1023.0f, -24), std::ldexp(2047.0f, -25),
                           std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                           std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(),
                           std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(), std::bit_cast<float>(0x7f800001u),
                           std::bit_cast<float>(0xffc00001u), 1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8),
                           3.3895314e38f, 3.3961776e38f};
    for (float f : edges) check_float(f);
    // Random bit patterns cover every exponent, NaNs and infinities included.
    std::mt19937 rng(20260601);
    for (int i = 0; i < 200000; ++i) check_float(std::bit_cast<float>(static_cast<std::uint32_t>(rng())));
}

TEST_CASE("double -> float conversion used for F64 data rounds and overflows like IEEE") {
    using io_detail::double_to_float;
    const double max = std::numeric_limits<float>::max();
    CHECK(double_to_float(1.0 / 3.0) == static_cast<float>(1.0 / 3.0));
    CHECK(double_to_float(max) == std::numeric_limits<float>::max());
    CHECK(double_to_float(max + std::ldexp(1.0, 102)) == std::numeric_limits<float>::max());  // below the midpoint
    CHECK(std::isinf(double_to_float(max + std::ldexp(1.0, 103))));                           // the midpoint: to even = inf
    CHECK(double_to_float(-1e300) == -std::numeric_limits<float>::infinity());
    CHECK(std::isnan(double_to_float(std::numeric_limits<double>::quiet_NaN())));
}

static_assert(float_element<my_bf16>);
static_assert(!float_element<int>);
static_assert(integer_element<std::int64_t> && !integer_element<bool>);

TEST_CASE("element_traits: a storage type of the user's reads and writes through the hook") {
    const std::vector<float> values{1.0f, -2.5f, 3.14159f, 1e-3f, 65504.0f};
    safetensors_writer w;
    w.add("f32", {5}, values);
    std::vector<my_bf16> mine;
    for (float v : values) mine.push_back(element_traits<my_bf16>::from_float(v));
    w.add("mine", {5}, std::span<const my_bf16>(mine));  // stored as BF16, bit for bit
    const auto image = w.serialize();
    const safetensors_view v(image, "hook test");
    CHECK(v.at("mine").type == dtype::BF16);
    const auto back = v.read<my_bf16>("mine");
    const auto converted = v.read<my_bf16>("f32");  // F32 -> my_bf16 through from_float
    for (std::size_t i = 0; i < values.size(); ++i) {
        CHECK(back[i].raw == mine[i].raw);
        CHECK(converted[i].raw == float_to_bf16_bits(values[i]));
    }
}

}  // namespace test_io_dtype
