#pragma once
// What a CUDA call runs on: a stream, and the cuBLAS handle of the calling thread. The default
// context is the legacy default stream. cuda_stream owns a stream for callers that want their own.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <atomic>
#include <memory>

#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/backend/cuda/device_attributes.cuh"

namespace transmamba {

struct cuda_context {
    cudaStream_t stream = nullptr;

    // One cuBLAS handle per thread and device, created on first use (creation costs milliseconds,
    // far too much per call), bound to this context's stream at each use.
    cublasHandle_t cublas() const {
        struct handles {
            cublasHandle_t by_device[kernels::cuda::max_devices] = {};
            ~handles() {
                for (auto h : by_device)
                    if (h) cublasDestroy(h);
            }
        };
        thread_local handles cache;
        auto& h = cache.by_device[kernels::cuda::current_device()];
        if (!h) kernels::cuda::check_cublas(cublasCreate(&h), "cublasCreate");
        kernels::cuda::check_cublas(cublasSetStream(h, stream), "cublasSetStream");
        return h;
    }
};

// An owned, non-blocking stream.
class cuda_stream {
public:
    cuda_stream() { kernels::cuda::check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"); }
    cuda_stream(const cuda_stream&) = delete;
    cuda_stream& operator=(const cuda_stream&) = delete;
    ~cuda_stream() { cudaStreamDestroy(stream_); }
    cuda_context context() const { return {stream_}; }
    void synchronize() const { kernels::cuda::check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }
    cudaStream_t get() const { return stream_; }

private:
    cudaStream_t stream_ = nullptr;
};

}  // namespace transmamba
