#pragma once
// Step (1) of the chunked SSD (ssd/dispatch.cuh): per (b, head, chunk or segment of chunks) the
// chunk's state s_c = X^T diag(w) B, w_j = exp(sum_{m>j} dt_m A) dt_j, and its total decay.
#include <cub/block/block_scan.cuh>

#include "transmamba/backend/cuda/ssd/operands.cuh"
#include "transmamba/backend/cuda/ssd/policy.cuh"
#include "transmamba/backend/cuda/ssd/tiles.cuh"

namespace transmamba::kernels::cuda::ssd {

template <class T, class Policy>
struct chunk_state_layout {
    using P = typename Policy::chunk_state;
    // X[token][channel], read as A^T; B[token][state], read as B[k][n]. Float tiles are read 64 and
    // 128 bits wide at (token 2t, column 2g or 4g): rows 8 banks apart (4 mod 16 words).
    static constexpr int pad = mma::is_16bit<T> ? pad_rows_contiguous_mn<T> : 4;
    static constexpr int ld_x = P::tile_m + pad;
    static constexpr int ld_b = P::tile_n + pad;
    static constexpr std::size_t x_bytes = round_up16(sizeof(T) * P::tile_k * ld_x);
    static constexpr std::size_t b_bytes = round_up16(sizeof(T) * P::tile_k * ld_b);
    static constexpr std::size_t stage_bytes = x_bytes + b_bytes;
    static constexpr std::size_t bytes = 2 * stage_bytes;
};

// Float storage: acc += X^T diag(w) B over `steps` tokens of a stage, for the warp's 16 channels
// from m0, with 128-bit loads. Both sums are permuted (warp_mma.cuh): over 16 tokens the lane takes
// tokens 2t, 2t + 1 (first k-step) and 8 + 2t, 9 + 2t (second) as its columns t, t + 4; its
// accumulator rows g, g + 8 are channels m0 + 2g, 2g + 1 (one 64-bit load of X per token); tile
// 4 cg + i's column g is state 32 cg + 4g + i (one 128-bit load of B feeds four tiles). Tokens past
// the chunk's end have zero rows and zero weights.
template <mma::float_mode Mode, int TN>
__device__ __forceinline__ void float_state_step(mma::frag_c (&acc)[TN / 8], const float* xt, int ld_x, const float* bt,
                                                 int ld_b, const float* w, int m0, int steps, int states) {
    const int g = mma::lane_id() >> 2, t = mma::lane_id() & 3;
    for (int k0 = 0; k0 < steps; k0 += 16) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int k = k0 + 8 * half + 2 * t;  // the k-step's tokens k, k + 1
            const float2 wk = *reinterpret_cast<const float2*>(w + k);
            const float2 x0 = *reinterpret_cast<const float2*>(xt + k * ld_x + m0 + 2 * g);
            const float2 x1 = *reinterpret_cast<const float2*>(xt + (k + 1) * ld_x + m0 + 2 * g);
            mma::frag_a<float> a;
            mma::set_tf32<Mode>(a.hi[0], a.lo[0], x0.x * wk.x);  // (row g, column t): channel 2g, token k
            mma::set_tf32<Mode>(a.hi[1], a.lo[1], x0.y * wk.x);  // (row g + 8, column t): channel 2g + 1
            mma::set_tf32<Mode>(a.hi[2], a.lo[2], x1.x * wk.y);  // (row g, column t + 4): token k + 1
            mma::set_tf32<Mode>(a.hi[3], a.lo[3], x1.y * wk.y);
#pragma unroll
            for (int cg = 0; cg < TN / 32; ++cg) {
                if (32 * cg >= states) break;
                mma::mma_four_tiles<Mode>(acc + 4 * cg, a, mma::load_float4(bt + k * ld_b + 32 * cg + 4 * g),
                                          mma::load_float4(bt + (k + 1) * ld_b + 32 * cg + 4 * g));
            }
        }
    }
}

template <class T, class Policy>
__global__ void __launch_bounds__(Policy::chunk_state::threads, Policy::chunk_state::min_blocks_per_sm)
    chunk_state_kernel(operands<T> op, chunk_scratch<T> out, int chunks_per_block) {
    using P = typename Policy::chunk_state;
    using layout = chunk_state_layout<T, Policy>;
    constexpr int threads = P::threads, TM = P::tile_m, TN = P::tile_n, TK = P::tile_k;
    constexpr int K = mma::k_step<T>;
    constexpr bool split = mma::is_16bit<T> && Policy::split_weighted_keys;
    constexpr int items = Policy::max_chunk / threads;
    constexpr int ld_x = layout::ld_x, ld_b = layout::ld_b;
    static_assert(TM == 16 * (threads / 32) && TN % 16 == 0 && TK % 16 == 0);
    static_assert(items * threads == Policy::max_chunk);

    using block_scan = cub::BlockScan<float, threads>;
    __shared__ typename block_scan::TempStorage scan_storage;
    __shared__ alignas(16) float weight[Policy::max_chunk];
    __shared__ float dt_s[Policy::max_chunk];
    extern __shared__ uint4 state_smem[];
    unsigned char* smem = reinterpret_cast<unsigned char*>(state_smem);
    const auto xs = [&](int stage) { return reinterpret_cast<T*>(smem + stage * layout::stage_bytes); };
    const auto bs = [&](int stage) { return reinterpret_cast<T*>(smem + stage * layout::stage_bytes + layout::x_bytes); };

    const int p = op.headdim, n = op.dstate, h = op.nheads;
    const int tiles_m = (p + TM - 1) / TM, tiles = tiles_m * ((n + TN - 1) / TN);
    const int tile = static_cast<int>(blockIdx.x % tiles);
    const int bh = static_cast<int>(blockIdx.x / tiles), b = bh / h, head = bh % h;
    const int grp = head / op.heads_per_group;
    const int p0 = (tile % tiles_m) * TM, s0 = (tile / tiles_m) * TN;
    const float a_log2 = op.A[head] * log2e;
    // This block's segment of chunks [c_first, c_last): its state and decay are entry ci.
    const int segment = blockIdx.y, c_first = segment * chunks_per_block;
    const int c_last = min(op.nchunks, c_first + chunks_per_block);
    const index_t ci = index_t(bh) * gridDim.y + segment;

    const int warp = static_cast<int>(threadIdx.x >> 5);
    mma::frag_c acc[TN / 8];
#pragma unroll
    for (int i = 0; i < TN / 8; ++i) mma::zero(acc[i]);
    float segment_decay = 1.0f;

    for (int chunk = c_first; chunk < c_last; ++chunk) {
        const index_t c0 = op.t_begin + index_t(chunk) * op.chunk;
        const int q = static_cast<int>(min(index_t(op.chunk), op.t_end - c0));
        const T* x_chunk = op.x + b * op.x_sb + c0 * op.x_st + head * op.x_sh + p0;
        const T* b_chunk = op.B + b * op.b_sb + c0 * op.b_st + grp * op.b_sg + s0;
        const auto issue = [&](int stage, int j0) {
            const int rows = min(TK, q - j0);
            load_tile_async<threads>(xs(stage), ld_x, x_chunk + j0 * op.x_st, op.x_st, TK, TM, rows, p - p0, op.vec_ok);
            load_tile_async<threads>(bs(stage), ld_b, b_chunk + j0 * op.b_st, op.b_st, TK, TN, rows, n - s0, op.vec_ok);
        };
        issue(0, 0);
        cp_async_commit();

        // Suffix sums from the end of the chunk: an exclusive scan over the reversed tokens.
        float v[items], dtv[items];
#pragma unroll
        for (int i = 0; i < items; ++i) {
            const int j = q - 1 - (static_cast<int>(threadIdx.x) * items + i);
            dtv[i] = j >= 0 ? op.dt_at(b, c0 + j, head) : 0.0f;
            v[i] = dtv[i] * a_log2;
            if (j >= 0) dt_s[j] = dtv[i];
        }
        for (int j = q + static_cast<int>(threadIdx.x); j < Policy::max_chunk; j += threads) {
            weight[j] = 0.0f;  // tokens past the chunk's end: their rows are zero, keep them finite
            dt_s[j] = 0.0f;
        }
        float total;
        block_scan(scan_storage).ExclusiveSum(v, v, total);
#pragma unroll
        for (int i = 0; i < items; ++i) {
            const int j = q - 1 - (static_cast<int>(threadIdx.x) * items + i);
            if (j >= 0) weight[j] = exp2f(v[i]) * dtv[i];
        }
        // What the segment holds so far decays over this chunk before the chunk's own part is added.
        const float chunk_decay = exp2f(total);
        segment_decay *= chunk_decay;
        if (chunk > c_first) {
#pragma unroll
            for (int i = 0; i < TN / 8; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[i].v[e] *= chunk_decay;
        }
        if (tile == 0) {
            if (out.cum) {  // the prefix sums for chunk_scan (one chunk per block), from a forward scan of their own
                __syncthreads();
                float f[items];
#pragma unroll
                for (int i = 0; i < items; ++i) f[i] = dt_s[threadIdx.x * items + i] * a_log2;
                block_scan(scan_storage).InclusiveSum(f, f);
#pragma unroll
                for (int i = 0; i < items; ++i) {
                    const int j = static_cast<int>(threadIdx.x) * items + i;
                    out.cum[ci * Policy::max_chunk + j] = f[i];
                    out.dtc[ci * Policy::max_chunk + j] = dt_s[j];
                }
            }
        }
        __syncthreads();

        const int ntiles = (q + TK - 1) / TK;
        for (int jt = 0; jt < ntiles; ++jt) {
            const int j0 = jt * TK, stage = jt & 1;
            if (jt + 1 < ntiles) issue(stage ^ 1, j0 + TK);
            cp_async_commit();
            cp_async_wait<1>();
            __syncthreads();
            const T* xt = xs(stage);
            const T* bt = bs(stage);
            const int steps = min(TK, q - j0);
            if constexpr (!mma::is_16bit<T>) {
                // Barriers of their own around the float step. Without them compute-sanitizer
                // racecheck reports hazards between this step's shared-memory reads (the x pairs and
                // the B float4s) and cp.async writes of the same tile, and the results go wrong
                // under its scheduling, whenever a block walks more than one tile; the 16-bit path
                // (ldmatrix reads) never shows it. The cause is still open: docs/cuda.md,
                // "chunk_state's float barriers", has what was ruled out. Cost: two barriers per
                // 64-token tile.
                __syncthreads();
                float_state_step<Policy::float_mode, TN>(acc, xt, ld_x, bt, ld_b, weight + j0, warp * 16, steps,
                                                         n - s0);
                __syncthreads();
            } else for (int k0 = 0; k0 < steps; k0 += K) {
                mma::frag_a<T> a, a_lo;
                load_a_km_scaled<T, split>(a, a_lo, xt, ld_x, warp * 16, k0, weight + j0);
#pragma unroll
                for (int nt = 0; nt < TN / 16; ++nt) {
                    if (s0 + nt * 16 >= n) break;
                    mma::frag_b<T> bf[2];
                    mma::load_b2_kn(bf, bt, ld_b, nt * 16, k0);
                    mma::mma<T, Policy::float_mode>(acc[2 * nt], a, bf[0]);
                    mma::mma<T, Policy::float_mode>(acc[2 * nt + 1], a, bf[1]);
                    if constexpr (split) {
                        mma::mma<T>(acc[2 * nt], a_lo, bf[0]);
                        mma::mma<T>(acc[2 * nt + 1], a_lo, bf[1]);
                    }
                }
            }
            __syncthreads();  // the stage is refilled next
        }
    }
    if (tile == 0 && threadIdx.x == 0) out.decay[ci] = segment_decay;

    const int g = mma::lane_id() >> 2, t = mma::lane_id() & 3;
    float* s = out.states + ci * p * n;
    if constexpr (!mma::is_16bit<T>) {  // rows 2g, 2g + 1 and columns 32 cg + 8t .. + 7 (see float_state_step)
#pragma unroll
        for (int cg = 0; cg < TN / 32; ++cg) {
            const int col = s0 + 32 * cg + 8 * t;
            if (col >= n) break;
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = p0 + warp * 16 + 2 * g + half;
                if (row >= p) continue;
                float* dst = s + index_t(row) * n + col;
                const int r = 2 * half;  // accumulator registers of the row: v[r] (column 2t), v[r + 1] (2t + 1)
                *reinterpret_cast<float4*>(dst) = make_float4(acc[4 * cg].v[r], acc[4 * cg + 1].v[r],
                                                              acc[4 * cg + 2].v[r], acc[4 * cg + 3].v[r]);
                *reinterpret_cast<float4*>(dst + 4) = make_float4(acc[4 * cg].v[r + 1], acc[4 * cg + 1].v[r + 1],
                                                                  acc[4 * cg + 2].v[r + 1], acc[4 * cg + 3].v[r + 1]);
            }
        }
    } else {
#pragma unroll
        for (int nt = 0; nt < TN / 8; ++nt) {
            const int col = s0 + nt * 8 + 2 * t;
            if (col >= n) break;
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = p0 + warp * 16 + g + 8 * half;
                if (row < p)
                    *reinterpret_cast<float2*>(s + index_t(row) * n + col) =
                        make_float2(acc[nt].v[2 * half], acc[nt].v[2 * half + 1]);
            }
        }
    }
}

}  // namespace transmamba::kernels::cuda::ssd
