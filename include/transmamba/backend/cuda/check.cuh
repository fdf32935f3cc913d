#pragma once
// Every CUDA runtime and cuBLAS call goes through these, so that a failure becomes a
// transmamba::error naming the call and the reason instead of a silent wrong result.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "transmamba/core/error.hpp"

namespace transmamba::kernels::cuda {

inline void check_cuda(cudaError_t status, const char* call) {
    if (status != cudaSuccess)
        fail("CUDA call ", call, " failed: ", cudaGetErrorName(status), ": ", cudaGetErrorString(status));
}

inline void check_cublas(cublasStatus_t status, const char* call) {
    if (status != CUBLAS_STATUS_SUCCESS) fail("cuBLAS call ", call, " failed: ", cublasGetStatusString(status));
}

// After a kernel launch: reports a bad configuration at once (launch errors are synchronous);
// faults inside the kernel surface at the next synchronising call, which is checked too.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

// Blocks for a 1-D grid over n items.
inline unsigned blocks_for(std::size_t n, unsigned threads) {
    const std::size_t b = (n + threads - 1) / threads;
    return static_cast<unsigned>(b < 1 ? 1 : (b > 65535u * 32u ? 65535u * 32u : b));
}

}  // namespace transmamba::kernels::cuda
