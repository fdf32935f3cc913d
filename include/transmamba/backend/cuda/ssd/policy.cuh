#pragma once
// Tuning policies of the chunked SSD kernels (ssd/dispatch.cuh says what the kernels compute):
// constants only, read by the kernels and their launches, never written into an algorithm.
#include "transmamba/backend/cuda/warp_mma.cuh"

namespace transmamba::kernels::cuda::ssd {

struct chunk_state_policy {
    static constexpr int threads = 128;  // 4 warps, 16 headdim rows each
    static constexpr int tile_m = 64;    // headdim rows of the state per block
    static constexpr int tile_n = 128;   // d_state columns of the state per block (all of them up to 128)
    static constexpr int tile_k = 64;    // tokens per shared-memory stage (2 stages, cp.async)
    // Blocks per multiprocessor the register budget is cut for: 3 caps a thread at 168 registers
    // without spills (192 otherwise, 2 blocks); 4 would spill. 16-bit tiles fit 3 blocks' shared
    // memory, float tiles 2.
    static constexpr int min_blocks_per_sm = 3;
    // The converter's blocks each reduce a segment of chunks, as long as the grid keeps this many
    // blocks per multiprocessor (a few rounds of the 3 that fit).
    static constexpr int converter_blocks_per_sm = 8;
};

struct state_passing_policy {
    static constexpr int threads = 256;
    static constexpr int vec = 8;               // state elements per lane (32 bytes)
    static constexpr int short_width = 8;       // lanes per scan when nchunks <= 8
    static constexpr int long_width = 32;       // otherwise; each lane then walks a segment of chunks
};

struct chunk_scan_policy {
    static constexpr int threads = 128;   // 4 warps, 16 query rows each
    static constexpr int tile_rows = 64;  // query rows per block
    static constexpr int tile_k = 64;     // keys per shared-memory stage (== tile_rows; 2 stages, cp.async)
    static constexpr int tile_cols = 64;  // headdim columns per block (a wider head takes several blocks)
    // From this many heads per group on, C B^T of each (query tile, key tile) is computed once per
    // group by chunk_cb_kernel into the scratch and read by every head of the group (as float32:
    // the same numbers as the inline product); below it, each head's block computes it inline.
    static constexpr int share_cb_min_heads = 2;
};

struct default_policy {
    static constexpr int max_chunk = 256;  // chunk_size limit: one BlockScan of 2 items per thread
    static constexpr int max_dim = 128;    // headdim and d_state limit (multiples of 16)
    // 16-bit storage: the weighted keys of chunk_state enter the tensor cores as hi + lo pairs,
    // so the chunk states (and the converter) keep float32 accuracy.
    static constexpr bool split_weighted_keys = true;
    static constexpr mma::float_mode float_mode = mma::float_mode::tf32x3;
    using chunk_state = chunk_state_policy;
    using state_passing = state_passing_policy;
    using chunk_scan = chunk_scan_policy;
};

// tf32 (one pass) for float storage: faster, ~1e-3 relative error.
struct tf32_policy : default_policy {
    static constexpr mma::float_mode float_mode = mma::float_mode::tf32;
};

}  // namespace transmamba::kernels::cuda::ssd
