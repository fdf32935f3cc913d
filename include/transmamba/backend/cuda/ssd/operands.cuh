#pragma once
// The chunked SSD's operands as its kernels see them (pointers and element strides, channel stride 1)
// and the caller-owned scratch the three steps pass between them.
#include <cstddef>
#include <type_traits>

#include "transmamba/backend/cuda/warp_mma.cuh"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba::kernels::cuda::ssd {

inline constexpr float log2e = 1.4426950408889634f;

// The type of the states entering each chunk, as chunk_scan reads them: the storage type for
// 16-bit storage (they meet C on the tensor cores), float for float.
template <class T>
using entering_t = std::conditional_t<mma::is_16bit<T>, T, float>;

template <class T>
struct operands {
    const T* x;
    index_t x_sb, x_st, x_sh;
    const T* B;
    index_t b_sb, b_st, b_sg;
    const T* C;
    index_t c_sb, c_st, c_sg;
    const float* dt;
    index_t dt_sb, dt_st, dt_sh;
    const float* A;
    const float* D;
    int batch, nheads, heads_per_group, headdim, dstate, chunk;
    index_t t_begin, t_end;
    int nchunks;
    bool vec_ok;  // x, B, C rows can be read with aligned 16-byte loads

    __device__ float dt_at(int b, index_t t, int head) const { return dt[b * dt_sb + t * dt_st + head * dt_sh]; }
};

// Chunk index ci = (b * nheads + head) * nchunks + chunk.
template <class T>
struct chunk_scratch {
    float* states;           // (ci, headdim, d_state): what each chunk adds to the state
    float* decay;            // (ci): the chunk's total decay exp(l_last)
    entering_t<T>* entering; // (ci, headdim, d_state): the state entering the chunk (scan only)
    float* cum;              // (ci, max_chunk): l_j / ln 2 = sum_{m<=j} dt_m A log2(e) (scan only)
    float* dtc;              // (ci, max_chunk): dt_j, 0 past the chunk's end (scan only)
    float* cb;               // ((b * ngroups + group) * nchunks + chunk, tile pair, rows, keys): C B^T tiles
                             // shared by a group's heads; null when each head computes its own
};

}  // namespace transmamba::kernels::cuda::ssd
