#pragma once
// backend_traits<cpu>: host memory, OpenMP threads, Eigen GEMMs.
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "transmamba/backend/cpu/eigen.hpp"
#include "transmamba/backend/traits.hpp"
#include "transmamba/core/host_buffer.hpp"
#include "transmamba/core/workspace.hpp"

namespace transmamba {

struct cpu_context {};  // the CPU backend runs on the calling thread plus OpenMP's pool

template <>
struct backend_traits<cpu> {
    template <class T>
    using buffer = host_buffer<T>;
    using context = cpu_context;
    static constexpr bool host_accessible = true;
    static constexpr bool packed_batches = true;  // the kernels take a sequence_layout (cu_seqlens)

    template <class T>
    static void copy_to_host(const T* device, T* host, std::size_t n, const context&) {
        std::copy_n(device, n, host);
    }
    template <class T>
    static void copy_from_host(const T* host, T* device, std::size_t n, const context&) {
        std::copy_n(host, n, device);
    }
    static void synchronize(const context&) {}
    template <class T>
    static void fill(const context&, T* data, std::size_t n, T value) {
        std::fill_n(data, n, value);
    }
    template <class T>
    static void copy(const context&, const T* from, T* to, std::size_t n) {
        std::copy_n(from, n, to);
    }
    // rows x cols elements from a strided source to a strided destination.
    template <class T>
    static void copy_rows(const context&, const T* from, index_t from_stride, T* to, index_t to_stride, index_t rows,
                          index_t cols) {
        for (index_t r = 0; r < rows; ++r) std::copy_n(from + r * from_stride, cols, to + r * to_stride);
    }
    // Index of the first NaN or infinity, or -1.
    template <class T>
    static index_t first_non_finite(const context&, const T* data, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i)
            if (!std::isfinite(static_cast<double>(data[i]))) return static_cast<index_t>(i);
        return -1;
    }

    // C (m x n) = A (m x k) * W (n x k)^T, all row-major with leading dimensions; Eigen threads it.
    template <class T>
    static void gemm_nt(const context&, index_t m, index_t n, index_t k, const T* A, index_t lda, const T* W,
                        index_t ldw, T* C, index_t ldc) {
        kernels::cpu::gemm_nt(m, n, k, A, lda, W, ldw, C, ldc);
    }
    // The backward of C = A W^T (A: m x k, W: n x k, dC: m x n): dA (m x k) = dC W ...
    template <class T>
    static void gemm_nn(const context&, index_t m, index_t n, index_t k, const T* dC, index_t lddc, const T* W,
                        index_t ldw, T* dA, index_t ldda) {
        kernels::cpu::gemm_nn(m, n, k, dC, lddc, W, ldw, dA, ldda);
    }
    // ... and dW (n x k) = dC^T A.
    template <class T>
    static void gemm_tn(const context&, index_t m, index_t n, index_t k, const T* dC, index_t lddc, const T* A,
                        index_t lda, T* dW, index_t lddw) {
        kernels::cpu::gemm_tn(m, n, k, dC, lddc, A, lda, dW, lddw);
    }
};

}  // namespace transmamba
