#pragma once
// What one prefill attention launch reads and writes, and which tile a CTA takes: shared by the
// portable kernels (attention.cuh) and the Hopper kernel (sm90/attention_sm90.cuh).
#include <cuda_runtime.h>

#include "transmamba/core/tensor_view.hpp"

namespace transmamba::kernels::cuda::prefill {

// What one attention launch reads and writes. Strides in elements. Q rows of group grp start at
// q + b*q_batch + t*q_row + grp*q_group (likewise K); the V columns of group grp are the
// group_cols = (h/g)*p adjacent channels starting at grp*group_cols (likewise y). Query tile i
// starts at row first_query + i * query_tile: the tiles cover [first_query, prefix), each against
// the keys it sees causally, which always start at key 0.
template <class T>
struct attention_args {
    const T* q = nullptr;
    index_t q_batch = 0, q_row = 0, q_group = 0;
    const T* k = nullptr;
    index_t k_batch = 0, k_row = 0, k_group = 0;
    const T* v = nullptr;
    index_t v_batch = 0, v_row = 0;
    float* y = nullptr;
    index_t y_batch = 0, y_row = 0;
    const float* D = nullptr;  // (h), or nullptr: no D * x skip
    // Where the training forward keeps each (batch, group, query)'s log-sum-exp of its scaled
    // scores (natural log), at lse + b*lse_batch + grp*lse_group + t; nullptr: not kept (inference).
    float* lse = nullptr;
    index_t lse_batch = 0, lse_group = 0;
    index_t prefix = 0;
    index_t first_query = 0;  // queries [first_query, prefix) against keys [0, prefix): a band (context parallel)
    int batch = 0, groups = 0, group_cols = 0, headdim = 0, state = 0;
    int query_tiles = 0, col_chunks = 0, slices_per_wave = 1;
    float scale = 0;  // softmax scale (SIMT kernel)
    float scale_log2 = 0;  // scale * log2(e) (tensor-core kernel: exp2 of pre-scaled scores)
};

// Which (batch, group, column chunk, query tile) a CTA takes. A slice is one (batch, group, column
// chunk); slices go in waves of `slices_per_wave`, few enough that their keys and values stay in L2
// while the wave runs, and within a wave the query tiles go heaviest (last, causal) first, the
// wave's slices interleaved, so that the short tiles fill the tail. (Heaviest first over the whole
// grid streams every slice's keys and values at once, more than L2 holds, from DRAM; one slice
// after another leaves the last slice's heavy tiles for the end.)
struct attention_tile {
    int b, grp, chunk, tile;
    __host__ __device__ static attention_tile of(int bid, int query_tiles, int col_chunks, int groups, int batch,
                                                 int slices_per_wave) {
        const int slices = col_chunks * groups * batch;
        const int per_wave = slices_per_wave * query_tiles;
        const int first = bid / per_wave * slices_per_wave;
        const int in_wave = slices - first < slices_per_wave ? slices - first : slices_per_wave;
        const int r = bid % per_wave;
        attention_tile t;
        t.tile = query_tiles - 1 - r / in_wave;
        int slice = first + r % in_wave;
        t.chunk = slice % col_chunks;
        slice /= col_chunks;
        t.grp = slice % groups;
        t.b = slice / groups;
        return t;
    }
    template <class T>
    __device__ static attention_tile of_block(const attention_args<T>& a) {
        return of(static_cast<int>(blockIdx.x), a.query_tiles, a.col_chunks, a.groups, a.batch, a.slices_per_wave);
    }
};

}  // namespace transmamba::kernels::cuda::prefill
