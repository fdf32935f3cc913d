#pragma once
// embedding_kernel<cuda>: one thread block per token copies its embedding row.
#include <cstdint>

#include "transmamba/backend/cuda/traits.cuh"
#include "transmamba/backend/embedding.hpp"

namespace transmamba {

namespace kernels::cuda {

template <class T>
__global__ void embedding_gather_kernel(index_t width, const std::int64_t* __restrict__ ids, const T* __restrict__ table,
                                        T* __restrict__ out) {
    const T* src = table + ids[blockIdx.x] * width;
    T* dst = out + static_cast<index_t>(blockIdx.x) * width;
    for (index_t i = threadIdx.x; i < width; i += blockDim.x) dst[i] = src[i];
}

}  // namespace kernels::cuda

template <>
struct embedding_kernel<cuda> {
    template <class T>
    static void gather(const cuda_context& ctx, index_t rows, index_t width, const std::int64_t* ids, const T* table, T* out) {
        if (rows == 0 || width == 0) return;
        kernels::cuda::embedding_gather_kernel<<<static_cast<unsigned>(rows), 256, 0, ctx.stream>>>(width, ids, table, out);
        kernels::cuda::check_launch("embedding_gather_kernel");
    }
};

}  // namespace transmamba
