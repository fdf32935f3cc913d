#pragma once
// The scalar derivatives the backward kernels share, in float32 (their host twins are in
// backend/cpu/projection_backward.hpp).
#include <cuda_runtime.h>

namespace transmamba::kernels::cuda {

// sigmoid without overflow for either sign: d softplus(x) / dx.
__device__ inline float sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}
// d silu(x) / dx = sigmoid(x) (1 + x (1 - sigmoid(x))).
__device__ inline float silu_derivative(float x) {
    const float s = sigmoid(x);
    return s * (1.0f + x * (1.0f - s));
}

}  // namespace transmamba::kernels::cuda
