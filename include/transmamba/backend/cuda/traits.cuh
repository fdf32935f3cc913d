#pragma once
// backend_traits<cuda>: device memory, a stream per call (cuda_context), cuBLAS GEMMs.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/backend/cuda/context.cuh"
#include "transmamba/backend/cuda/device_buffer.cuh"
#include "transmamba/backend/cuda/types.cuh"
#include "transmamba/backend/traits.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

namespace kernels::cuda {

template <class T>
__global__ void fill_kernel(T* data, std::size_t n, T value) {
    for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
        data[i] = value;
}

// Marks the first NaN or infinity of data[0, n): *mark ends as n - (its index), 0 when there is
// none, so that a zero fill (cudaMemsetAsync) starts the search.
template <class T>
__global__ void first_non_finite_kernel(const T* data, std::size_t n, unsigned long long* mark) {
    for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
        if (!isfinite(to_float(data[i]))) atomicMax(mark, static_cast<unsigned long long>(n - i));
}

// Where first_non_finite's answer travels: one device word and one pinned host word per thread
// and device, made at the first check and kept, so that a check allocates nothing (cudaMalloc and
// cudaFree synchronise the whole device) and checks on two threads never share a word.
struct finite_check_slot {
    unsigned long long* device = nullptr;
    unsigned long long* host = nullptr;
};
inline finite_check_slot finite_check_slot_of_current_device() {
    struct slots {
        finite_check_slot by_device[max_devices] = {};
        ~slots() {
            for (auto& s : by_device) {
                if (s.device) cudaFree(s.device);
                if (s.host) cudaFreeHost(s.host);
            }
        }
    };
    thread_local slots cache;
    auto& slot = cache.by_device[current_device()];
    if (slot.device == nullptr) {
        check_cuda(cudaMalloc(&slot.device, sizeof(unsigned long long)), "cudaMalloc (finite check word)");
        check_cuda(cudaMallocHost(&slot.host, sizeof(unsigned long long)), "cudaMallocHost (finite check word)");
    }
    return slot;
}

}  // namespace kernels::cuda

template <>
struct backend_traits<cuda> {
    template <class T>
    using buffer = device_buffer<T>;
    using context = cuda_context;
    static constexpr bool host_accessible = false;

    template <class T>
    static void copy_to_host(const T* device, T* host, std::size_t n, const context& ctx) {
        kernels::cuda::check_cuda(cudaMemcpyAsync(host, device, n * sizeof(T), cudaMemcpyDeviceToHost, ctx.stream),
                                  "cudaMemcpyAsync (device to host)");
    }
    template <class T>
    static void copy_from_host(const T* host, T* device, std::size_t n, const context& ctx) {
        kernels::cuda::check_cuda(cudaMemcpyAsync(device, host, n * sizeof(T), cudaMemcpyHostToDevice, ctx.stream),
                                  "cudaMemcpyAsync (host to device)");
    }
    static void synchronize(const context& ctx) {
        kernels::cuda::check_cuda(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize");
    }
    template <class T>
    static void fill(const context& ctx, T* data, std::size_t n, T value) {
        if (n == 0) return;
        kernels::cuda::fill_kernel<<<kernels::cuda::blocks_for(n, 256), 256, 0, ctx.stream>>>(data, n, value);
        kernels::cuda::check_launch("fill_kernel");
    }
    template <class T>
    static void copy(const context& ctx, const T* from, T* to, std::size_t n) {
        kernels::cuda::check_cuda(cudaMemcpyAsync(to, from, n * sizeof(T), cudaMemcpyDeviceToDevice, ctx.stream),
                                  "cudaMemcpyAsync (device to device)");
    }

    // rows x cols elements from a strided source to a strided destination.
    template <class T>
    static void copy_rows(const context& ctx, const T* from, index_t from_stride, T* to, index_t to_stride, index_t rows,
                          index_t cols) {
        if (rows == 0 || cols == 0) return;
        kernels::cuda::check_cuda(cudaMemcpy2DAsync(to, to_stride * sizeof(T), from, from_stride * sizeof(T), cols * sizeof(T),
                                                    rows, cudaMemcpyDeviceToDevice, ctx.stream),
                                  "cudaMemcpy2DAsync");
    }

    // Index of the first non-finite element, or -1. Synchronises the caller's stream (and only
    // it): the check turns bad input into an error before anything is written. Allocates nothing.
    template <class T>
    static index_t first_non_finite(const context& ctx, const T* data, std::size_t n) {
        if (n == 0) return -1;
        namespace k = kernels::cuda;
        const auto slot = k::finite_check_slot_of_current_device();
        k::check_cuda(cudaMemsetAsync(slot.device, 0, sizeof(*slot.device), ctx.stream), "cudaMemsetAsync (finite check)");
        k::first_non_finite_kernel<<<k::blocks_for(n, 256), 256, 0, ctx.stream>>>(data, n, slot.device);
        k::check_launch("first_non_finite_kernel");
        copy_to_host(slot.device, slot.host, 1, ctx);
        synchronize(ctx);
        const unsigned long long mark = *slot.host;
        return mark == 0 ? -1 : static_cast<index_t>(n - mark);
    }

    // C (m x n) = A (m x k) * W (n x k)^T, row-major with leading dimensions, float32 accumulation.
    // Row-major C is column-major C^T = W A^T, hence the swapped operands.
    template <class TA, class TC>
    static void gemm_nt(const context& ctx, index_t m, index_t n, index_t k, const TA* A, index_t lda, const TA* W,
                        index_t ldw, TC* C, index_t ldc) {
        if (m == 0 || n == 0) return;
        const float one = 1.0f, zero = 0.0f;
        kernels::cuda::check_cublas(
            cublasGemmEx(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                         static_cast<int>(k), &one, W, cuda_dtype<TA>::value, static_cast<int>(ldw), A,
                         cuda_dtype<TA>::value, static_cast<int>(lda), &zero, C, cuda_dtype<TC>::value,
                         static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "cublasGemmEx");
    }

    // The backward of C = A W^T (docs/training.md), float32 accumulation. Both inputs have one
    // storage type (cuBLAS multiplies no mixed pairs); the output may be float for 16-bit inputs.
    // dA (m x k) = dC (m x n) W (n x k): column-major dA^T = W^T dC^T, neither transposed.
    template <class TA, class TC>
    static void gemm_nn(const context& ctx, index_t m, index_t n, index_t k, const TA* dC, index_t lddc, const TA* W,
                        index_t ldw, TC* dA, index_t ldda) {
        if (m == 0 || k == 0) return;
        if (n == 0) return fill_rows(ctx, dA, ldda, m, k);
        gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, k, m, n, W, ldw, dC, lddc, dA, ldda, "cublasGemmEx (gemm_nn)");
    }
    // dW (n x k) = dC^T (n x m) A (m x k): column-major dW^T = A^T dC, dC transposed.
    template <class TA, class TC>
    static void gemm_tn(const context& ctx, index_t m, index_t n, index_t k, const TA* dC, index_t lddc, const TA* A,
                        index_t lda, TC* dW, index_t lddw) {
        if (n == 0 || k == 0) return;
        if (m == 0) return fill_rows(ctx, dW, lddw, n, k);  // a sum over no rows
        gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_T, k, n, m, A, lda, dC, lddc, dW, lddw, "cublasGemmEx (gemm_tn)");
    }

private:
    // Column-major C (rows x cols, ldc) = op(X) op(Y), X and Y of one storage type.
    template <class TA, class TC>
    static void gemm(const context& ctx, cublasOperation_t op_x, cublasOperation_t op_y, index_t rows, index_t cols,
                     index_t inner, const TA* X, index_t ldx, const TA* Y, index_t ldy, TC* C, index_t ldc,
                     const char* call) {
        const float one = 1.0f, zero = 0.0f;
        kernels::cuda::check_cublas(
            cublasGemmEx(ctx.cublas(), op_x, op_y, static_cast<int>(rows), static_cast<int>(cols), static_cast<int>(inner),
                         &one, X, cuda_dtype<TA>::value, static_cast<int>(ldx), Y, cuda_dtype<TA>::value,
                         static_cast<int>(ldy), &zero, C, cuda_dtype<TC>::value, static_cast<int>(ldc),
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            call);
    }
    // Zeros in rows x cols elements at a stride (all-zero bits are 0 in every storage type).
    template <class T>
    static void fill_rows(const context& ctx, T* data, index_t ld, index_t rows, index_t cols) {
        kernels::cuda::check_cuda(cudaMemset2DAsync(data, ld * sizeof(T), 0, cols * sizeof(T), rows, ctx.stream),
                                  "cudaMemset2DAsync");
    }
};

}  // namespace transmamba
