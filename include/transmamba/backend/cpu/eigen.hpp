#pragma once
// Eigen::Map aliases for the CPU kernels: every CPU view of a matrix is a Map over caller or
// workspace memory (no copies); row-major with an outer stride because the library's tensors are
// row-major and often strided slices (x, B, C inside xBC).
#include <Eigen/Core>

#include "transmamba/core/tensor_view.hpp"

namespace transmamba::kernels::cpu {

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using matrix_map = Eigen::Map<matrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using const_matrix_map = Eigen::Map<const matrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

template <class T>
matrix_map<T> map_rows(T* data, index_t rows, index_t cols, index_t row_stride) {
    return matrix_map<T>(data, rows, cols, Eigen::OuterStride<>(row_stride));
}
template <class T>
const_matrix_map<T> map_rows(const T* data, index_t rows, index_t cols, index_t row_stride) {
    return const_matrix_map<T>(data, rows, cols, Eigen::OuterStride<>(row_stride));
}

// C (m x n, ldc) = A (m x k, lda) * W (n x k, ldw)^T: the shape of every projection (weights stored
// as (out_features, in_features), as PyTorch does).
template <class T>
void gemm_nt(index_t m, index_t n, index_t k, const T* A, index_t lda, const T* W, index_t ldw, T* C, index_t ldc) {
    map_rows(C, m, n, ldc).noalias() = map_rows(A, m, k, lda) * map_rows(W, n, k, ldw).transpose();
}

// The two products of a projection's backward (docs/training.md): for Y = X W^T,
// dX (m x k, ldc) = dY (m x n, lda) * W (n x k, ldw), and
// dW (n x k, ldc) = dY (m x n, lda)^T * X (m x k, ldx).
template <class T>
void gemm_nn(index_t m, index_t n, index_t k, const T* A, index_t lda, const T* W, index_t ldw, T* C, index_t ldc) {
    map_rows(C, m, k, ldc).noalias() = map_rows(A, m, n, lda) * map_rows(W, n, k, ldw);
}
template <class T>
void gemm_tn(index_t m, index_t n, index_t k, const T* A, index_t lda, const T* X, index_t ldx, T* C, index_t ldc) {
    map_rows(C, n, k, ldc).noalias() = map_rows(A, m, n, lda).transpose() * map_rows(X, m, k, ldx);
}

}  // namespace transmamba::kernels::cpu
