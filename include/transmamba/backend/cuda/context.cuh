#pragma once
// What a CUDA call runs on: a stream, and the cuBLAS handle of the calling thread. The default
// context is the legacy default stream. cuda_stream owns a stream for callers that want their own.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <atomic>
#include <memory>

#include "transmamba/backend/cuda/check.cuh"

namespace transmamba {

struct cuda_context {
    cudaStream_t stream = nullptr;

    // One cuBLAS handle per thread and device, created on first use (creation costs milliseconds,
    // far too much per call), bound to this context's stream at each use.
    cublasHandle_t cublas() const {
        struct handles {
            cublasHandle_t by_device[64] = {};
            ~handles() {
                for (auto h : by_device)
                    if (h) cublasDestroy(h);
            }
        };
        thread_local handles cache;
        int device = 0;
        kernels::cuda::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
        require(device >= 0 && device < 64, "CUDA device index ", device, " out of the supported range");
        auto& h = cache.by_device[device];
        if (!h) kernels::cuda::check_cublas(cublasCreate(&h), "cublasCreate");
        kernels::cuda::check_cublas(cublasSetStream(h, stream), "cublasSetStream");
        return h;
    }
};

namespace kernels::cuda {

// The current device's multiprocessor count, asked of the driver once per device (launch
// heuristics size their grids with it on every call).
inline int multiprocessor_count() {
    static std::atomic<int> counts[64] = {};
    int device = 0;
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    require(device >= 0 && device < 64, "CUDA device index ", device, " out of the supported range");
    int count = counts[device].load(std::memory_order_relaxed);
    if (count == 0) {
        check_cuda(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device),
                   "cudaDeviceGetAttribute (multiprocessor count)");
        counts[device].store(count, std::memory_order_relaxed);
    }
    return count;
}

}  // namespace kernels::cuda

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
