#pragma once
// The cross-rank state scan's two local steps on the GPU (parallel/state_scan.hpp).
//
// decay: Lambda(b, k) = exp(A_k sum_t dt(b, t, k)) over a slice of up to L / R tokens (a million
// at R = 1). The sum is a column sum of the (tokens x nheads) dt matrix: blocks of 32 heads x 8 rows
// of threads read whole 128-byte rows (coalesced), each block a tile of tokens, into per-tile
// partial sums in the scratch space; a second launch adds a head's partials in tile order and takes
// the one exp (as the CPU kernel and the converter do: the exponent first). Fixed orders throughout,
// so the result is the same at every run (no atomics).
// fold: every state element independently, the R - 1 (or R) pairs applied in rank order.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>

#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/backend/cuda/context.cuh"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/parallel/state_scan.hpp"

namespace transmamba {

struct cuda_state_scan_tuning {
    static constexpr int heads_per_block = 32;  // one warp across 32 heads of a token row
    static constexpr int row_threads = 8;       // warps down the tile's rows
    static constexpr index_t min_tile_rows = 1024;
    static constexpr index_t max_tiles = 512;   // ~ 4 blocks per SM for one strip of heads
    static constexpr int fold_threads = 256;
};

namespace kernels::cuda::state_scan {

// partial[(b * tiles + tile) * h + k] = sum of dt(b, t, k) over the tile's tokens.
template <class A, class Tuning>
__global__ void __launch_bounds__(Tuning::heads_per_block * Tuning::row_threads)
    dt_tile_sums(const A* dt, index_t s_b, index_t s_t, index_t s_k, index_t t_begin, index_t t_end, index_t tile_rows,
                 int h, A* partial) {
    __shared__ A sums[Tuning::row_threads][Tuning::heads_per_block];
    const int x = static_cast<int>(threadIdx.x), y = static_cast<int>(threadIdx.y);
    const int k = static_cast<int>(blockIdx.x) * Tuning::heads_per_block + x;
    const index_t tile = blockIdx.y, tiles = gridDim.y, b = blockIdx.z;
    const index_t lo = t_begin + tile * tile_rows, hi = std::min(t_end, lo + tile_rows);
    A acc = 0;
    if (k < h)
        for (index_t t = lo + y; t < hi; t += Tuning::row_threads) acc += dt[b * s_b + t * s_t + k * s_k];
    sums[y][x] = acc;
    __syncthreads();
    if (y == 0 && k < h) {
        A total = 0;
#pragma unroll
        for (int r = 0; r < Tuning::row_threads; ++r) total += sums[r][x];
        partial[(b * tiles + tile) * h + k] = total;
    }
}

// lambda[b * h + k] = exp(A_k * the tiles' partial sums, added in tile order).
template <class A>
__global__ void decay_from_sums(const A* partial, index_t batch, int h, index_t tiles, const A* a_coef, A* lambda) {
    const index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
    if (i >= batch * h) return;
    const index_t b = i / h;
    const int k = static_cast<int>(i % h);
    A sum = 0;
    for (index_t tile = 0; tile < tiles; ++tile) sum += partial[(b * tiles + tile) * h + k];
    lambda[i] = exp(sum * a_coef[k]);
}

// state[e] = the pairs 0 .. count - 1 applied in order to initial[e] (0 when null).
template <class A>
__global__ void fold_pairs(const A* pairs, index_t count, index_t stride, index_t decay_offset, index_t pn,
                           index_t elements, const A* initial, A* state) {
    for (index_t e = blockIdx.x * index_t(blockDim.x) + threadIdx.x; e < elements; e += index_t(gridDim.x) * blockDim.x) {
        const index_t head = e / pn;
        A s = initial ? initial[e] : A(0);
        for (index_t q = 0; q < count; ++q) s = pairs[q * stride + decay_offset + head] * s + pairs[q * stride + e];
        state[e] = s;
    }
}

}  // namespace kernels::cuda::state_scan

template <>
struct state_scan_kernel<cuda> {
    using tuning = cuda_state_scan_tuning;

    static index_t tiles_for(index_t tokens) {
        return std::clamp<index_t>((tokens + tuning::min_tile_rows - 1) / tuning::min_tile_rows, 1, tuning::max_tiles);
    }

    // Scratch of decay over at most `tokens` tokens: the per-tile partial sums.
    template <class A>
    static std::size_t scratch_bytes(index_t batch, index_t nheads, index_t tokens) {
        workspace_arena measure;
        (void)measure.take<A>(static_cast<std::size_t>(checked_mul(checked_mul(batch, nheads, "state scan scratch"),
                                                                   tiles_for(tokens), "state scan scratch")));
        return measure.used();
    }

    template <class T, class A>
    static void decay(const cuda_context& ctx, const ssm_inputs<T>& in, index_t t_begin, index_t t_end, A* lambda,
                      workspace_span scratch) {
        namespace k = kernels::cuda;
        namespace ks = kernels::cuda::state_scan;
        const index_t batch = in.batch(), h = in.nheads(), tokens = std::max<index_t>(0, t_end - t_begin);
        if (batch * h == 0) return;
        const index_t tiles = tiles_for(tokens), tile_rows = std::max<index_t>(1, (tokens + tiles - 1) / tiles);
        workspace_arena arena(scratch);
        A* partial = arena.take<A>(static_cast<std::size_t>(batch * h * tiles));
        require(batch <= 65535, "context parallel (CUDA): batch of ", batch, " sequences exceeds 65535");
        const dim3 grid(static_cast<unsigned>((h + tuning::heads_per_block - 1) / tuning::heads_per_block),
                        static_cast<unsigned>(tiles), static_cast<unsigned>(batch));
        const dim3 block(tuning::heads_per_block, tuning::row_threads);
        ks::dt_tile_sums<A, tuning><<<grid, block, 0, ctx.stream>>>(in.dt.data(), in.dt.stride(0), in.dt.stride(1),
                                                                     in.dt.stride(2), t_begin, t_begin + tokens,
                                                                     tile_rows, static_cast<int>(h), partial);
        k::check_launch("dt_tile_sums");
        ks::decay_from_sums<A><<<k::blocks_for(static_cast<std::size_t>(batch * h), 128), 128, 0, ctx.stream>>>(
            partial, batch, static_cast<int>(h), tiles, in.A, lambda);
        k::check_launch("decay_from_sums");
    }

    template <class A>
    static void fold(const cuda_context& ctx, const state_pair_layout& lay, const A* pairs, index_t count,
                     const A* initial, A* state) {
        namespace k = kernels::cuda;
        const index_t pn = lay.headdim * lay.d_state, elements = lay.state_elements();
        if (elements == 0) return;
        kernels::cuda::state_scan::fold_pairs<A>
            <<<k::blocks_for(static_cast<std::size_t>(elements), tuning::fold_threads), tuning::fold_threads, 0,
               ctx.stream>>>(pairs, count, lay.elements(), lay.decay_offset(), pn, elements, initial, state);
        k::check_launch("fold_pairs");
    }
};

}  // namespace transmamba
