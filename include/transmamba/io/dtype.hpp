#pragma once
// Element types of safetensors files and the conversions between them and C++ types (docs/checkpoints.md).
//
// The 16-bit float formats are converted on the host with bit manipulation, rounding to nearest
// even, so results do not depend on the compiler or the CPU: bfloat16 (8-bit exponent, 7-bit
// mantissa) and IEEE float16 (5-bit exponent, 10-bit mantissa, subnormals, max 65504).
//
// element_traits<T> is the conversion hook: reading a tensor as T and writing T's values go through
// it. The library specialises it for float, double, the integers and the host storage types bf16_bits
// and f16_bits; a backend's own storage types (e.g. CUDA's __nv_bfloat16, see io/cuda_elements.cuh)
// specialise it the same way.
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>

namespace transmamba {

// Every dtype the safetensors format defines. A file may hold any of them; conversions exist for the
// float types (F64, F32, F16, BF16) among themselves and for the integer types (and BOOL) among
// themselves. F8 tensors can be listed and read as raw bytes, not converted.
enum class dtype : std::uint8_t { BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2 };

inline constexpr dtype all_dtypes[] = {dtype::BOOL, dtype::U8,  dtype::I8,   dtype::I16, dtype::U16,
                                       dtype::I32,  dtype::U32, dtype::I64,  dtype::U64, dtype::F16,
                                       dtype::BF16, dtype::F32, dtype::F64, dtype::F8_E4M3, dtype::F8_E5M2};

constexpr std::string_view dtype_name(dtype t) {
    switch (t) {
        case dtype::BOOL: return "BOOL";
        case dtype::U8: return "U8";
        case dtype::I8: return "I8";
        case dtype::I16: return "I16";
        case dtype::U16: return "U16";
        case dtype::I32: return "I32";
        case dtype::U32: return "U32";
        case dtype::I64: return "I64";
        case dtype::U64: return "U64";
        case dtype::F16: return "F16";
        case dtype::BF16: return "BF16";
        case dtype::F32: return "F32";
        case dtype::F64: return "F64";
        case dtype::F8_E4M3: return "F8_E4M3";
        case dtype::F8_E5M2: return "F8_E5M2";
    }
    return "?";
}

// The dtype spelled `name` in a safetensors header, if it is one.
constexpr std::optional<dtype> parse_dtype(std::string_view name) {
    for (dtype t : all_dtypes)
        if (dtype_name(t) == name) return t;
    return std::nullopt;
}

constexpr std::size_t dtype_size(dtype t) {
    switch (t) {
        case dtype::BOOL:
        case dtype::U8:
        case dtype::I8:
        case dtype::F8_E4M3:
        case dtype::F8_E5M2: return 1;
        case dtype::I16:
        case dtype::U16:
        case dtype::F16:
        case dtype::BF16: return 2;
        case dtype::I32:
        case dtype::U32:
        case dtype::F32: return 4;
        case dtype::I64:
        case dtype::U64:
        case dtype::F64: return 8;
    }
    return 0;
}

constexpr bool is_float_dtype(dtype t) {
    return t == dtype::F16 || t == dtype::BF16 || t == dtype::F32 || t == dtype::F64;
}
constexpr bool is_integer_dtype(dtype t) {
    switch (t) {
        case dtype::BOOL:
        case dtype::U8:
        case dtype::I8:
        case dtype::I16:
        case dtype::U16:
        case dtype::I32:
        case dtype::U32:
        case dtype::I64:
        case dtype::U64: return true;
        default: return false;
    }
}
constexpr bool is_signed_dtype(dtype t) {
    return t == dtype::I8 || t == dtype::I16 || t == dtype::I32 || t == dtype::I64;
}

// ---------------------------------------------------------------------------------------------
// bfloat16 and float16 <-> float32, round to nearest even, NaN kept as a quiet NaN of the same sign.
// ---------------------------------------------------------------------------------------------

constexpr std::uint16_t float_to_bf16_bits(float value) {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(value);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
    // Adding 0x7fff plus the lowest kept bit rounds half to even; a carry into the exponent is the
    // correct result, up to infinity.
    const std::uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>(rounded >> 16);
}

constexpr float bf16_bits_to_float(std::uint16_t bits) {
    return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

constexpr std::uint16_t float_to_f16_bits(float value) {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(value);
    const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
    const std::uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
    if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to infinity
    if (a >= 0x38800000u) {
        // Normal half (|value| >= 2^-14): re-bias the exponent (127 -> 15), round the mantissa to 10
        // bits at bit 13, half to even; a carry moves into the exponent as it should.
        std::uint32_t m = a - 0x38000000u;
        m += 0x0fffu + ((m >> 13) & 1u);
        return static_cast<std::uint16_t>(sign | (m >> 13));
    }
    if (a <= 0x33000000u) return sign;  // <= 2^-25: rounds to zero (2^-25 itself is a tie, to even 0)
    // Subnormal half: value = k * 2^-24 with k = mant * 2^(e - 126), e the float's biased exponent.
    const std::uint32_t e = a >> 23;
    const std::uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - e;  // 14 .. 24
    std::uint32_t k = mant >> shift;
    const std::uint32_t rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (k & 1u))) ++k;  // may carry into the smallest normal: correct
    return static_cast<std::uint16_t>(sign | k);
}

constexpr float f16_bits_to_float(std::uint16_t bits) {
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
    const std::uint32_t e = (bits >> 10) & 0x1fu, m = bits & 0x3ffu;
    std::uint32_t out = sign;
    if (e == 0x1fu) {
        out |= 0x7f800000u | (m << 13);  // infinity or NaN (payload kept)
    } else if (e != 0) {
        out |= ((e + 112u) << 23) | (m << 13);
    } else if (m != 0) {
        // Subnormal: value = m * 2^-24; normalise so that bit 10 is the implicit one.
        std::uint32_t shifts = 0, mm = m;
        while ((mm & 0x400u) == 0) {
            mm <<= 1;
            ++shifts;
        }
        out |= ((113u - shifts) << 23) | ((mm & 0x3ffu) << 13);
    }
    return std::bit_cast<float>(out);
}

// Host storage types holding the raw bits of a bfloat16 / float16 value (no arithmetic).
struct bf16_bits {
    std::uint16_t bits = 0;
    friend constexpr bool operator==(bf16_bits, bf16_bits) = default;
};
struct f16_bits {
    std::uint16_t bits = 0;
    friend constexpr bool operator==(f16_bits, f16_bits) = default;
};

// ---------------------------------------------------------------------------------------------
// element_traits<T>: the conversion hook.
//
// A specialisation for a float-like storage type provides
//   static constexpr dtype stored;      the safetensors dtype with T's exact bits: a tensor of that
//                                       dtype is read as T by copying the bits, and T is written as it
//   static T from_float(float);         round to nearest even
//   static float to_float(T);
// float, double and the integer types are handled by the library directly; their `stored` dtype is
// given here too.
// ---------------------------------------------------------------------------------------------

template <class T>
struct element_traits;

template <>
struct element_traits<float> {
    static constexpr dtype stored = dtype::F32;
    static constexpr float from_float(float v) { return v; }
    static constexpr float to_float(float v) { return v; }
};
template <>
struct element_traits<double> {
    static constexpr dtype stored = dtype::F64;
};
template <>
struct element_traits<bf16_bits> {
    static constexpr dtype stored = dtype::BF16;
    static constexpr bf16_bits from_float(float v) { return {float_to_bf16_bits(v)}; }
    static constexpr float to_float(bf16_bits v) { return bf16_bits_to_float(v.bits); }
};
template <>
struct element_traits<f16_bits> {
    static constexpr dtype stored = dtype::F16;
    static constexpr f16_bits from_float(float v) { return {float_to_f16_bits(v)}; }
    static constexpr float to_float(f16_bits v) { return f16_bits_to_float(v.bits); }
};

// The integer dtype of each integer type of the same size and signedness.
template <class T>
    requires std::is_integral_v<T>
struct element_traits<T> {
    static constexpr dtype stored = sizeof(T) == 1        ? (std::is_signed_v<T> ? dtype::I8 : dtype::U8)
                                    : sizeof(T) == 2        ? (std::is_signed_v<T> ? dtype::I16 : dtype::U16)
                                    : sizeof(T) == 4        ? (std::is_signed_v<T> ? dtype::I32 : dtype::U32)
                                                            : (std::is_signed_v<T> ? dtype::I64 : dtype::U64);
};

// A float-like storage type: float, double, or a type whose element_traits give from_float/to_float.
template <class T>
concept float_element = std::is_same_v<T, float> || std::is_same_v<T, double> || requires(float f, T v) {
    { element_traits<T>::stored } -> std::convertible_to<dtype>;
    { element_traits<T>::from_float(f) } -> std::same_as<T>;
    { element_traits<T>::to_float(v) } -> std::convertible_to<float>;
};
// The standard integer types (not bool or the character types, which std::in_range refuses).
template <class T>
concept integer_element = std::is_integral_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char> &&
                          !std::is_same_v<T, wchar_t> && !std::is_same_v<T, char8_t> && !std::is_same_v<T, char16_t> &&
                          !std::is_same_v<T, char32_t>;

// The dtype T is written as by default (its exact bits).
template <class T>
    requires float_element<T> || integer_element<T>
constexpr dtype dtype_of() {
    return element_traits<T>::stored;
}

// The value of a float-like element as a double (exact for every supported type).
template <float_element T>
constexpr double to_double(T v) {
    if constexpr (std::is_same_v<T, double> || std::is_same_v<T, float>) return static_cast<double>(v);
    else return static_cast<double>(element_traits<T>::to_float(v));
}

// ---------------------------------------------------------------------------------------------
// Little-endian loads and stores of one element (files are little-endian whatever the host is).
// ---------------------------------------------------------------------------------------------

template <class U>
    requires std::is_unsigned_v<U>
inline U load_le(const std::byte* p) {
    U v;
    if constexpr (std::endian::native == std::endian::little) {
        std::memcpy(&v, p, sizeof(U));
    } else {
        v = 0;
        for (std::size_t i = 0; i < sizeof(U); ++i) v |= static_cast<U>(static_cast<U>(p[i]) << (8 * i));
    }
    return v;
}

template <class U>
    requires std::is_unsigned_v<U>
inline void store_le(std::byte* p, U v) {
    if constexpr (std::endian::native == std::endian::little) {
        std::memcpy(p, &v, sizeof(U));
    } else {
        for (std::size_t i = 0; i < sizeof(U); ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xffu);
    }
}

}  // namespace transmamba
