#pragma once
// column_sums: for each column c of a (rows x cols) matrix that a functor computes element by
// element, and each of `outputs` such matrices, the float32 sum over rows; the weight gradients of
// the row-wise backward kernels (norm weights, conv taps, time-step biases) are such sums.
//
// One block per (tile of 32 columns, output): 16 lanes each sum a strided slice of the rows, then
// one thread adds the 16 partial sums in lane order. No atomics: the same sizes give the same
// bits on every run. A Sum functor provides
//   __device__ float value(index_t row, index_t col, int output) const;
//   __device__ void store(index_t col, int output, float total) const;
#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/backend/cuda/context.cuh"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba::kernels::cuda {

inline constexpr int column_tile = 32;   // a warp reads 32 consecutive columns of a row
inline constexpr int column_lanes = 16;  // rows summed in parallel per column

template <class Sum>
__global__ void __launch_bounds__(column_tile * column_lanes)
    column_sum_kernel(index_t rows, index_t cols, Sum sum) {
    __shared__ float partial[column_lanes][column_tile + 1];
    const index_t c = blockIdx.x * index_t(column_tile) + threadIdx.x;
    const int output = static_cast<int>(blockIdx.y);
    float acc = 0;
    if (c < cols)
        for (index_t r = threadIdx.y; r < rows; r += column_lanes) acc += sum.value(r, c, output);
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y != 0 || c >= cols) return;
    float total = 0;
    for (int lane = 0; lane < column_lanes; ++lane) total += partial[lane][threadIdx.x];
    sum.store(c, output, total);
}

template <class Sum>
void column_sums(const cuda_context& ctx, index_t rows, index_t cols, int outputs, const Sum& sum, const char* name) {
    if (cols == 0 || outputs == 0) return;
    const dim3 grid(static_cast<unsigned>((cols + column_tile - 1) / column_tile), static_cast<unsigned>(outputs));
    column_sum_kernel<<<grid, dim3(column_tile, column_lanes), 0, ctx.stream>>>(rows, cols, sum);
    check_launch(name);
}

}  // namespace transmamba::kernels::cuda
