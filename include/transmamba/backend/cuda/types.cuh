#pragma once
// Storage types of the CUDA backend and their conversions: float32 end to end, or bfloat16 /
// float16 storage with float32 arithmetic (compute_t<T> is float for all three).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace transmamba {

template <class T>
struct cuda_dtype;
template <>
struct cuda_dtype<float> {
    static constexpr cudaDataType_t value = CUDA_R_32F;
};
template <>
struct cuda_dtype<__nv_bfloat16> {
    static constexpr cudaDataType_t value = CUDA_R_16BF;
};
template <>
struct cuda_dtype<__half> {
    static constexpr cudaDataType_t value = CUDA_R_16F;
};

template <class T>
concept cuda_storage_type = requires { cuda_dtype<T>::value; };

namespace kernels::cuda {

template <class T>
__host__ __device__ inline float to_float(T v) {
    if constexpr (std::is_same_v<T, float>) return v;
    else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
    else if constexpr (std::is_same_v<T, __half>) return __half2float(v);
    else return static_cast<float>(v);
}

template <class T>
__host__ __device__ inline T from_float(float v) {
    if constexpr (std::is_same_v<T, float>) return v;
    else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16(v);
    else if constexpr (std::is_same_v<T, __half>) return __float2half(v);
    else return static_cast<T>(v);
}

}  // namespace kernels::cuda
}  // namespace transmamba
