#pragma once
// element_traits for CUDA's 16-bit storage types, so that checkpoints load into and save from
// language_model<__nv_bfloat16, cuda> / <__half, cuda>. The conversions are the library's own host
// bit manipulation (io/dtype.hpp), rounding to nearest even like CUDA's __float2bfloat16_rn.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "transmamba/io/dtype.hpp"

namespace transmamba {

template <>
struct element_traits<__nv_bfloat16> {
    static constexpr dtype stored = dtype::BF16;
    static __nv_bfloat16 from_float(float v) {
        const std::uint16_t bits = float_to_bf16_bits(v);
        __nv_bfloat16 out;
        std::memcpy(&out, &bits, sizeof(out));
        return out;
    }
    static float to_float(__nv_bfloat16 v) {
        std::uint16_t bits;
        std::memcpy(&bits, &v, sizeof(bits));
        return bf16_bits_to_float(bits);
    }
};

template <>
struct element_traits<__half> {
    static constexpr dtype stored = dtype::F16;
    static __half from_float(float v) {
        const std::uint16_t bits = float_to_f16_bits(v);
        __half out;
        std::memcpy(&out, &bits, sizeof(out));
        return out;
    }
    static float to_float(__half v) {
        std::uint16_t bits;
        std::memcpy(&bits, &v, sizeof(bits));
        return f16_bits_to_float(bits);
    }
};

}  // namespace transmamba
