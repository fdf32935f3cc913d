#pragma once
// element_traits for CUDA's 16-bit storage types, so that checkpoints load into and save from
// language_model<__nv_bfloat16, cuda> / <__half, cuda>. The conversions are the library's own host
// bit manipulation (io/dtype.hpp), rounding to nearest even like CUDA's __float2bfloat16_rn.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "transmamba/io/dtype.hpp"

namespace transmamba {

template <>
struct element_traits<__nv_bfloat16> {
    static constexpr dtype stored = dtype::BF16;
    static __nv_bfloat16 from_float(float v) {
        __nv_bfloat16_raw raw;
        raw.x = float_to_bf16_bits(v);
        return __nv_bfloat16(raw);
    }
    static float to_float(__nv_bfloat16 v) { return bf16_bits_to_float(static_cast<__nv_bfloat16_raw>(v).x); }
};

template <>
struct element_traits<__half> {
    static constexpr dtype stored = dtype::F16;
    static __half from_float(float v) {
        __half_raw raw;
        raw.x = float_to_f16_bits(v);
        return __half(raw);
    }
    static float to_float(__half v) { return f16_bits_to_float(static_cast<__half_raw>(v).x); }
};

}  // namespace transmamba
