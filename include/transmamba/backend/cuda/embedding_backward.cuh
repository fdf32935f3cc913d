#pragma once
// embedding_backward_kernel<cuda>: dtable[ids[r]] += drows[r] for every token r, deterministic.
// A stable radix sort (CUB) groups the token indices by id, keeping token order within an id;
// then one block per run of equal ids sums its rows in that order, in float32, and adds the sum
// into the table row once. No float atomics: the same inputs give the same bits on every run.
#include <cub/device/device_radix_sort.cuh>

#include <cstddef>
#include <cstdint>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cuda/traits.cuh"

namespace transmamba {

namespace kernels::cuda {

template <class Index>
__global__ void token_index_kernel(index_t rows, Index* __restrict__ out) {
    const index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
    if (i < rows) out[i] = i;
}

// Block k starts a run when sorted_ids[k] differs from the one before; it walks the run.
template <class T>
__global__ void embedding_scatter_kernel(index_t rows, index_t width, const std::int64_t* __restrict__ sorted_ids,
                                         const std::int64_t* __restrict__ tokens, const T* __restrict__ drows,
                                         T* __restrict__ dtable) {
    const index_t k = blockIdx.x;
    const std::int64_t id = sorted_ids[k];
    if (k > 0 && sorted_ids[k - 1] == id) return;
    index_t end = k + 1;
    while (end < rows && sorted_ids[end] == id) ++end;
    T* out = dtable + id * width;
    for (index_t c = threadIdx.x; c < width; c += blockDim.x) {
        float acc = 0;
        for (index_t q = k; q < end; ++q) acc += to_float(drows[tokens[q] * width + c]);
        out[c] = from_float<T>(to_float(out[c]) + acc);
    }
}

// Bits that hold every id of [0, vocab).
inline int id_bits(index_t vocab) {
    int bits = 1;
    while (bits < 63 && (index_t(1) << bits) < vocab) ++bits;
    return bits;
}

}  // namespace kernels::cuda

template <>
struct embedding_backward_kernel<cuda> {
    // Scratch the caller provides, in elements of std::int64_t: the sorted ids, the token indices
    // before and after the sort, and the sort's own temporary storage.
    static std::size_t scratch_elements(index_t rows, index_t vocab) {
        return 3 * static_cast<std::size_t>(rows) + (sort_bytes(rows, vocab) + 255) / 8 + 1;
    }

    // ids (rows) in [0, vocab), device memory, checked by the caller; drows (rows, width);
    // dtable (vocab, width), added into.
    template <class T>
    static void scatter_add(const cuda_context& ctx, index_t rows, index_t width, index_t vocab, const std::int64_t* ids,
                            const T* drows, T* dtable, std::int64_t* scratch) {
        namespace k = kernels::cuda;
        if (rows == 0 || width == 0) return;
        std::int64_t* sorted_ids = scratch;
        std::int64_t* tokens = scratch + rows;
        std::int64_t* sorted_tokens = scratch + 2 * rows;
        auto* temp = reinterpret_cast<std::byte*>(scratch + 3 * rows);
        temp += (256 - reinterpret_cast<std::uintptr_t>(temp) % 256) % 256;  // CUB's alignment
        std::size_t bytes = sort_bytes(rows, vocab);
        k::token_index_kernel<<<k::blocks_for(static_cast<std::size_t>(rows), 256), 256, 0, ctx.stream>>>(rows, tokens);
        k::check_launch("token_index_kernel");
        k::check_cuda(cub::DeviceRadixSort::SortPairs(temp, bytes, ids, sorted_ids, tokens, sorted_tokens,
                                                      static_cast<int>(rows), 0, k::id_bits(vocab), ctx.stream),
                      "cub::DeviceRadixSort::SortPairs (embedding ids)");
        k::embedding_scatter_kernel<<<static_cast<unsigned>(rows), 256, 0, ctx.stream>>>(rows, width, sorted_ids,
                                                                                      sorted_tokens, drows, dtable);
        k::check_launch("embedding_scatter_kernel");
    }

private:
    static std::size_t sort_bytes(index_t rows, index_t vocab) {
        std::size_t bytes = 0;
        kernels::cuda::check_cuda(
            cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const std::int64_t*>(nullptr),
                                            static_cast<std::int64_t*>(nullptr), static_cast<const std::int64_t*>(nullptr),
                                            static_cast<std::int64_t*>(nullptr), static_cast<int>(rows), 0,
                                            kernels::cuda::id_bits(vocab)),
            "cub::DeviceRadixSort::SortPairs (size)");
        return bytes;
    }
};

}  // namespace transmamba
