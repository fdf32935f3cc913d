#pragma once
// The chunked SSD on the GPU (SPEC.md section 3), in the three steps that the chunked scan and
// the Memory Converter share. Tokens [t_begin, t_end) are cut into chunks of Q = chunk_size tokens
// aligned to t_begin (the last one may be shorter); within a chunk l_i = sum_{m<=i} dt_m A.
//   (1) chunk_state:   per (b, head, chunk): s_c = X^T diag(exp(l_last - l_j) dt_j) B and the chunk's
//                      total decay exp(l_last), from a CUB BlockScan (suffix sums) over the chunk's
//                      dt A; for the scan also the prefix sums l_j (a second BlockScan).
//   (2) state_passing: the states entering every chunk, S_in(c+1) = decay_c S_in(c) + s_c from the
//                      initial state, as a scan over chunks with the associative operator
//                      (a1, s1) . (a2, s2) = (a1 a2, a2 s1 + s2) (cub::WarpScan); writes the final state.
//   (3) chunk_scan:    per (b, chunk, head, 64 headdim columns), query tiles of 64 rows in turn:
//                      y = (L o C B^T o dt) X + diag(exp(l)) C S_in^T + D x,  L_ij = exp(l_i - l_j), j <= i,
//                      flash-attention style: C B^T of a key tile in registers, masked, times X.
// The converter is (1) + (2) over the prefix [0, P), keeping only the final state; there a (1)
// block reduces a segment of consecutive chunks (converter_chunks_per_block) and (2) joins segments.
//
// Scratch (caller-owned, chunk_scratch): chunk states and decays, and for the scan the entering
// states (in the storage type for 16-bit storage) and the per-token decay sums.
//
// Matrix parts run on the tensor cores through warp_mma.cuh, tiles staged by cp.async in two
// stages. 16-bit storage: x, B, C enter as they are; the weighted keys of (1) enter as hi + lo
// pairs (float32-accurate chunk states and converter); the mixing matrix L o C B^T o dt and the
// entering state are rounded to 16 bits for (3), as in mamba_ssm. float storage: 3xTF32 by
// default (float32 accuracy), tf32_policy for one pass; fragments read 128 bits wide with k and
// columns permuted (warp_mma.cuh, float_column, float_state_step).
#include <cub/block/block_scan.cuh>
#include <cub/warp/warp_scan.cuh>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/backend/cuda/context.cuh"
#include "transmamba/backend/cuda/types.cuh"
#include "transmamba/backend/cuda/warp_mma.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/tensor_view.hpp"
#include "transmamba/core/workspace.hpp"

namespace transmamba::kernels::cuda::ssd {

// ------------------------------------------------------------------------------------------------
// Tuning policies (constants only; the kernels read them, nothing else does)
// ------------------------------------------------------------------------------------------------

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

inline constexpr float log2e = 1.4426950408889634f;

// The type of the states entering each chunk, as chunk_scan reads them: the storage type for
// 16-bit storage (they meet C on the tensor cores), float for float.
template <class T>
using entering_t = std::conditional_t<mma::is_16bit<T>, T, float>;

// ------------------------------------------------------------------------------------------------
// Operands as the kernels see them: pointers and element strides (channel stride 1)
// ------------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------------
// Shared-memory tiles
// ------------------------------------------------------------------------------------------------

// Row padding (elements) so that a warp's fragment reads hit 32 distinct banks: 16 bytes for the
// ldmatrix rows of 16-bit tiles; for float tiles 4 words where a warp reads (row g, col t) and
// 8 words where it reads (row t, col g).
template <class T>
inline constexpr int pad_rows_contiguous_k = mma::is_16bit<T> ? 8 : 4;
template <class T>
inline constexpr int pad_rows_contiguous_mn = 8;

// Row length of a k-contiguous C or B tile of chunk_scan and chunk_cb ([row][k], k = d_state).
// Float tiles are read by 128-bit loads at (row g, k 4t) (mma::load_a_pair_mk): the two rows of a
// quarter warp must start 16 banks apart, i.e. the row length is 16 modulo 32 words.
template <class T>
__host__ __device__ constexpr int ld_k_contiguous(int dstate) {
    if constexpr (mma::is_16bit<T>) return dstate + pad_rows_contiguous_k<T>;
    else return dstate % 32 == 0 ? dstate + 16 : dstate;  // d_state is a multiple of 16
}

__host__ __device__ constexpr int round_up(int v, int m) { return (v + m - 1) / m * m; }
__host__ __device__ constexpr std::size_t round_up16(std::size_t v) { return (v + 15) / 16 * 16; }

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(mma::smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
}

// rows x cols tile of global memory (row stride ld_src) into shared memory (row stride ld);
// elements outside valid_rows x valid_cols are zero. cols and valid_cols are multiples of the
// 16-byte vector width; valid_rows >= 1. Aligned tiles go through cp.async (complete them with
// cp_async_wait and a barrier), others through plain loads (complete at the barrier).
template <int Threads, class T>
__device__ __forceinline__ void load_tile_async(T* dst, int ld, const T* src, index_t ld_src, int rows, int cols,
                                                int valid_rows, int valid_cols, bool vec_ok) {
    constexpr int V = 16 / sizeof(T);
    if (vec_ok) {
        const int per_row = cols / V;
        for (int v = threadIdx.x; v < rows * per_row; v += Threads) {
            const int r = v / per_row, c = (v % per_row) * V;
            const bool valid = r < valid_rows && c < valid_cols;
            cp_async16(dst + r * ld + c, valid ? src + r * ld_src + c : src, valid);
        }
    } else {
        for (int e = threadIdx.x; e < rows * cols; e += Threads) {
            const int r = e / cols, c = e % cols;
            dst[r * ld + c] = (r < valid_rows && c < valid_cols) ? src[r * ld_src + c] : from_float<T>(0.0f);
        }
    }
}

// count floats (a multiple of 4, 16-byte aligned at both ends) by cp.async.
template <int Threads>
__device__ __forceinline__ void copy_floats_async(float* dst, const float* src, int count) {
    for (int v = threadIdx.x; v < count / 4; v += Threads) cp_async16(dst + 4 * v, src + 4 * v, true);
}

// The A fragment (16 channels x k_step tokens) of X^T diag(w) from a tile stored X[token][channel],
// w indexed by token: 16-bit storage gives hi and lo parts (lo filled when Split), float keeps the
// product in fp32 and splits it into tf32 hi + lo in the fragment.
template <class T, bool Split>
__device__ __forceinline__ void load_a_km_scaled(mma::frag_a<T>& hi, mma::frag_a<T>& lo, const T* tile, int ld, int m0,
                                                 int k0, const float* w) {
    if constexpr (mma::is_16bit<T>) {
        mma::load_a_km(hi, tile, ld, m0, k0);
        const int t = mma::lane_id() & 3;
        const float2 w01 = *reinterpret_cast<const float2*>(w + k0 + 2 * t);      // tokens of registers 0, 1
        const float2 w89 = *reinterpret_cast<const float2*>(w + k0 + 2 * t + 8);  // tokens of registers 2, 3
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 s = i < 2 ? w01 : w89;
            const float2 v = mma::unpack2<T>(hi.hi[i]);
            const float v0 = v.x * s.x, v1 = v.y * s.y;
            hi.hi[i] = mma::pack2<T>(v0, v1);
            if constexpr (Split) {
                const float2 r = mma::unpack2<T>(hi.hi[i]);
                lo.hi[i] = mma::pack2<T>(v0 - r.x, v1 - r.y);
            }
        }
    } else {
        mma::make_a(hi, [&](int r, int c) { return tile[(k0 + c) * ld + m0 + r] * w[k0 + c]; });
    }
}

// ------------------------------------------------------------------------------------------------
// (1) chunk_state: s_c = X^T diag(w) B, w_j = exp(sum_{m>j} dt_m A) dt_j within the chunk
// ------------------------------------------------------------------------------------------------

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
                // Barriers of their own around the float step: without them compute-sanitizer
                // racecheck reported hazards between this step's shared-memory reads and the next
                // stage loads (and results went wrong under its scheduling) whenever a block walked
                // more than one tile, though the loop's own barriers sit at the same places; the
                // 16-bit path (ldmatrix reads) never showed it. In probes the barrier after the step
                // cleared it alone, the one before did not; the cause was not found. Cost: two
                // barriers per 64-token tile.
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

// ------------------------------------------------------------------------------------------------
// (2) state_passing: a scan over chunks of (decay, state) pairs
// ------------------------------------------------------------------------------------------------

template <int Vec>
struct decay_state {
    float a;         // product of the decays
    float s[Vec];    // state elements
};

// (a1, s1) . (a2, s2) = (a1 a2, a2 s1 + s2): apply the earlier segment, then the later one.
template <int Vec>
struct combine_decay_state {
    __device__ __forceinline__ decay_state<Vec> operator()(const decay_state<Vec>& first,
                                                           const decay_state<Vec>& second) const {
        decay_state<Vec> r;
        r.a = first.a * second.a;
#pragma unroll
        for (int i = 0; i < Vec; ++i) r.s[i] = fmaf(second.a, first.s[i], second.s[i]);
        return r;
    }
};

template <int Vec>
__device__ __forceinline__ void load_vec(float (&v)[Vec], const float* p) {
#pragma unroll
    for (int i = 0; i < Vec; i += 4) {
        const float4 f = *reinterpret_cast<const float4*>(p + i);
        v[i] = f.x;
        v[i + 1] = f.y;
        v[i + 2] = f.z;
        v[i + 3] = f.w;
    }
}

template <int Vec>
__device__ __forceinline__ void store_vec(float* p, const float (&v)[Vec]) {
#pragma unroll
    for (int i = 0; i < Vec; i += 4) *reinterpret_cast<float4*>(p + i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
}

// 16-bit storage: Vec values rounded and packed, 16 bytes per 8 values.
template <class T, int Vec>
__device__ __forceinline__ void store_vec(T* p, const float (&v)[Vec]) {
    static_assert(Vec % 8 == 0);
#pragma unroll
    for (int i = 0; i < Vec; i += 8)
        *reinterpret_cast<uint4*>(p + i) = make_uint4(mma::pack2<T>(v[i], v[i + 1]), mma::pack2<T>(v[i + 2], v[i + 3]),
                                                      mma::pack2<T>(v[i + 4], v[i + 5]), mma::pack2<T>(v[i + 6], v[i + 7]));
}

// One logical warp of Width lanes per (b, head, Vec state elements); lane l walks the chunks of its
// segment, the warp scan joins the segments, seeded with the initial state.
template <class T, int Width, class Policy>
__global__ void __launch_bounds__(Policy::state_passing::threads)
    state_passing_kernel(chunk_scratch<T> scratch, float* state, int nchunks, index_t state_size, index_t vectors) {
    constexpr int threads = Policy::state_passing::threads, Vec = Policy::state_passing::vec;
    constexpr int groups = threads / Width;
    using item = decay_state<Vec>;
    using warp_scan = cub::WarpScan<item, Width>;
    __shared__ typename warp_scan::TempStorage temp[groups];

    const int lane = static_cast<int>(threadIdx.x) % Width, group = static_cast<int>(threadIdx.x) / Width;
    const index_t vector = index_t(blockIdx.x) * groups + group;
    const bool active = vector < vectors;  // uniform over the logical warp
    const index_t per_head = state_size / Vec;
    const index_t bh = active ? vector / per_head : 0, e0 = active ? (vector % per_head) * Vec : 0;
    const int seg = (nchunks + Width - 1) / Width;
    const int c_begin = min(nchunks, lane * seg), c_end = min(nchunks, c_begin + seg);
    const float* decay = scratch.decay + bh * nchunks;
    const float* chunk_states = scratch.states + bh * nchunks * state_size + e0;
    const combine_decay_state<Vec> combine;

    item own{1.0f, {}};
#pragma unroll
    for (int i = 0; i < Vec; ++i) own.s[i] = 0.0f;
    if (active) {
        for (int c = c_begin; c < c_end; ++c) {
            item next;
            next.a = decay[c];
            load_vec(next.s, chunk_states + index_t(c) * state_size);
            own = combine(own, next);
        }
    }
    item init{1.0f, {}};
    if (active) load_vec(init.s, state + bh * state_size + e0);
    else {
#pragma unroll
        for (int i = 0; i < Vec; ++i) init.s[i] = 0.0f;
    }
    item entering;
    warp_scan(temp[group]).ExclusiveScan(own, entering, init, combine);
    if (!active) return;

    float S[Vec];
#pragma unroll
    for (int i = 0; i < Vec; ++i) S[i] = entering.s[i];
    for (int c = c_begin; c < c_end; ++c) {
        float s[Vec];
        load_vec(s, chunk_states + index_t(c) * state_size);
        if (scratch.entering) store_vec(scratch.entering + (bh * nchunks + c) * state_size + e0, S);
        const float a = decay[c];
#pragma unroll
        for (int i = 0; i < Vec; ++i) S[i] = fmaf(a, S[i], s[i]);
    }
    if (lane == Width - 1) store_vec(state + bh * state_size + e0, S);
}

// ------------------------------------------------------------------------------------------------
// (3) chunk_scan: y = (L o C B^T o dt) X + diag(exp(l)) C S_in^T + D x
// ------------------------------------------------------------------------------------------------

// C B^T for a warp's 16 query rows [wr0, wr0 + 16) of the C tile ct against the TK keys of the B
// tile bt (both [row][ld_n]), into accumulator tiles; 16-key slices that start after last_key (no
// row of the warp sees them) are skipped and stay zero. Shared by chunk_scan (inline) and chunk_cb.
template <class T, mma::float_mode Mode, int TK>
__device__ __forceinline__ void warp_scores(mma::frag_c (&m)[TK / 8], const T* ct, const T* bt, int ld_n, int n,
                                            int wr0, int j0, int last_key) {
    constexpr int K = mma::k_step<T>;
#pragma unroll
    for (int i = 0; i < TK / 8; ++i) mma::zero(m[i]);
    if constexpr (!mma::is_16bit<T>) {  // 128-bit loads, k in the permuted order of warp_mma.cuh
        const int tiles = last_key < j0 ? 0 : 2 * min(TK / 16, (last_key - j0) / 16 + 1);
        const int g = mma::lane_id() >> 2, t = mma::lane_id() & 3;
        for (int k0 = 0; k0 < n; k0 += 16) {
            mma::frag_a<T> a[2];
            mma::load_a_pair_mk<Mode>(a, ct, ld_n, wr0, k0);
#pragma unroll
            for (int nt = 0; nt < TK / 8; ++nt) {
                if (nt >= tiles) break;
                mma::frag_b<T> bf[2];
                mma::load_b_pair<Mode>(bf, bt + (nt * 8 + g) * ld_n + k0 + 4 * t);
                mma::mma<T, Mode>(m[nt], a[0], bf[0]);
                mma::mma<T, Mode>(m[nt], a[1], bf[1]);
            }
        }
    } else {
        for (int k0 = 0; k0 < n; k0 += K) {
            mma::frag_a<T> a;
            mma::load_a_mk(a, ct, ld_n, wr0, k0);
#pragma unroll
            for (int nt = 0; nt < TK / 16; ++nt) {
                if (j0 + nt * 16 > last_key) break;
                mma::frag_b<T> bf[2];
                mma::load_b2_nk(bf, bt, ld_n, nt * 16, k0);
                mma::mma<T, Mode>(m[2 * nt], a, bf[0]);
                mma::mma<T, Mode>(m[2 * nt + 1], a, bf[1]);
            }
        }
    }
}

// The shared C B^T tiles: per (b, group, chunk) the pairs (query tile qt, key tile jt <= qt), pair
// index qt (qt + 1) / 2 + jt, each a dense tile_rows x tile_k float32 block (row-major).
template <class Policy>
inline constexpr int cb_tiles_per_chunk =
    (Policy::max_chunk / Policy::chunk_scan::tile_rows) * (Policy::max_chunk / Policy::chunk_scan::tile_rows + 1) / 2;
template <class Policy>
inline constexpr int cb_tile_elems = Policy::chunk_scan::tile_rows * Policy::chunk_scan::tile_k;

__host__ __device__ constexpr int cb_pair(int qt, int jt) { return qt * (qt + 1) / 2 + jt; }

// Shared-memory layout of chunk_cb_kernel: a C tile and a B tile, [row][ld_n] each.
template <class T, class Policy>
struct chunk_cb_layout {
    int ld_n;
    std::size_t tile_bytes, bytes;
    __host__ __device__ chunk_cb_layout(int dstate) {
        ld_n = ld_k_contiguous<T>(dstate);
        tile_bytes = round_up16(sizeof(T) * std::size_t(Policy::chunk_scan::tile_rows) * ld_n);
        bytes = 2 * tile_bytes;
    }
};

// One block per (tile pair, chunk, b * ngroups + group): C B^T of the pair's query and key tiles
// in float32 accumulators (the mma mode of the policy, as the inline product), stored whole. Tiles
// past a short last chunk are skipped (chunk_scan never reads them).
template <class T, class Policy>
__global__ void __launch_bounds__(Policy::chunk_scan::threads)
    chunk_cb_kernel(operands<T> op, float* cb) {
    using P = typename Policy::chunk_scan;
    constexpr int threads = P::threads, TR = P::tile_rows, TK = P::tile_k;
    static_assert(TR == TK && TR == 16 * (threads / 32));
    extern __shared__ uint4 cb_smem[];
    unsigned char* smem = reinterpret_cast<unsigned char*>(cb_smem);
    const chunk_cb_layout<T, Policy> L(op.dstate);
    T* cs = reinterpret_cast<T*>(smem);
    T* bs = reinterpret_cast<T*>(smem + L.tile_bytes);

    const int pair = blockIdx.x, chunk = blockIdx.y;
    const int ngroups = op.nheads / op.heads_per_group;
    const int b = static_cast<int>(blockIdx.z) / ngroups, grp = static_cast<int>(blockIdx.z) % ngroups;
    int qt = 0;
    while (cb_pair(qt + 1, 0) <= pair) ++qt;
    const int jt = pair - cb_pair(qt, 0);
    const index_t c0 = op.t_begin + index_t(chunk) * op.chunk;
    const int q = static_cast<int>(min(index_t(op.chunk), op.t_end - c0));
    const int i0 = qt * TR, j0 = jt * TK;
    if (i0 >= q) return;

    const int n = op.dstate;
    load_tile_async<threads>(cs, L.ld_n, op.C + b * op.c_sb + (c0 + i0) * op.c_st + grp * op.c_sg, op.c_st, TR, n,
                             min(TR, q - i0), n, op.vec_ok);
    load_tile_async<threads>(bs, L.ld_n, op.B + b * op.b_sb + (c0 + j0) * op.b_st + grp * op.b_sg, op.b_st, TK, n,
                             min(TK, q - j0), n, op.vec_ok);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    const int warp = static_cast<int>(threadIdx.x >> 5), g = mma::lane_id() >> 2, t = mma::lane_id() & 3;
    const int wr0 = warp * 16;
    mma::frag_c m[TK / 8];
    warp_scores<T, Policy::float_mode, TK>(m, cs, bs, L.ld_n, n, wr0, j0, i0 + wr0 + 15);
    float* out = cb + ((index_t(b) * ngroups + grp) * op.nchunks + chunk) * cb_tiles_per_chunk<Policy> *
                          index_t(cb_tile_elems<Policy>) +
                 index_t(pair) * cb_tile_elems<Policy>;
#pragma unroll
    for (int nt = 0; nt < TK / 8; ++nt) {
        const int col = nt * 8 + 2 * t;
        *reinterpret_cast<float2*>(out + (wr0 + g) * TK + col) = make_float2(m[nt].v[0], m[nt].v[1]);
        *reinterpret_cast<float2*>(out + (wr0 + g + 8) * TK + col) = make_float2(m[nt].v[2], m[nt].v[3]);
    }
}

// Shared-memory layout of chunk_scan_kernel, in one place for the host (size) and the kernel:
// entering state [cols][ld_s] | l2, dt [max_chunk] | 2 C tiles [rows][ld_n] | 2 stages of
// {B [tile_k][ld_n] or, with shared C B^T, its float tile [rows][ld_cb], X [tile_k][ld_x]}.
// Float rows are padded for conflict-free 128-bit fragment loads: X at (key 2t, column 4g) needs
// rows 8 banks apart (ld_x = 4 mod 16 words); the entering state at (column 4g, k 4t) rows 16
// banks apart after 4 rows (ld_s = 4 mod 8).
template <class T, class Policy>
struct chunk_scan_layout {
    using P = typename Policy::chunk_scan;
    static constexpr int PMax = P::tile_cols;
    static constexpr int ld_x = PMax + (mma::is_16bit<T> ? pad_rows_contiguous_mn<T> : 4);
    static constexpr int ld_cb = P::tile_k + 8;  // float2 reads at (row g, cols 2t, 2t + 1): 8 g + 2 t distinct banks
    int ld_n, ld_s;
    std::size_t off_l2, off_dt, off_c, c_bytes, off_stage, b_bytes, stage_bytes, bytes;

    __host__ __device__ chunk_scan_layout(int dstate, bool shared_cb) {
        ld_n = ld_k_contiguous<T>(dstate);
        ld_s = dstate + (mma::is_16bit<T> ? pad_rows_contiguous_k<T> : 4);
        off_l2 = round_up16(sizeof(entering_t<T>) * std::size_t(PMax) * ld_s);
        off_dt = off_l2 + round_up16(sizeof(float) * Policy::max_chunk);
        off_c = off_dt + round_up16(sizeof(float) * Policy::max_chunk);
        c_bytes = round_up16(sizeof(T) * std::size_t(P::tile_rows) * ld_n);
        off_stage = off_c + 2 * c_bytes;
        b_bytes = shared_cb ? round_up16(sizeof(float) * std::size_t(P::tile_rows) * ld_cb)
                            : round_up16(sizeof(T) * std::size_t(P::tile_k) * ld_n);
        stage_bytes = b_bytes + round_up16(sizeof(T) * std::size_t(P::tile_k) * ld_x);
        bytes = off_stage + 2 * stage_bytes;
    }
};

// Float storage: the headdim column that accumulator tile nt of chunk_scan holds as its column g.
// Tiles 4c .. 4c + 3 interleave the 32 columns from 32 c, so that one 128-bit load of a row of X
// gives the B operand of four tiles; a lane then holds 8 consecutive columns of y per 4 tiles.
__device__ __forceinline__ int float_column(int nt, int g) { return 32 * (nt / 4) + 4 * g + nt % 4; }

// One block per (64 headdim columns, head, chunk, b), four warps of 16 rows, walking the chunk's
// query tiles qt = 0, 1, ... and for each the key tiles jt = 0 .. qt, one flat sequence of steps
// with the next step's tiles in flight (cp.async, 2 stages). The entering state and the decays
// are loaded once per block. At the first key tile of a query tile, the carried-state product;
// at every key tile, C B^T for the warp's 16 rows in registers, masked and decayed there, times X;
// at the last, D x and the store. The accumulator registers of C B^T are reused as the A
// fragments of the product with X (float storage with k and headdim columns permuted, see
// float_column and warp_mma.cuh, so that its shared-memory reads are 128 bits wide).
template <class T, class Policy>
__global__ void __launch_bounds__(Policy::chunk_scan::threads, 1)
    chunk_scan_kernel(operands<T> op, chunk_scratch<T> scratch, float* y, index_t y_sb, index_t y_st, index_t y_sh) {
    using P = typename Policy::chunk_scan;
    constexpr int threads = P::threads, TR = P::tile_rows, TK = P::tile_k, PMax = P::tile_cols;
    constexpr int K = mma::k_step<T>;
    constexpr int NT = PMax / 8;  // accumulator tiles along headdim
    constexpr auto fmode = Policy::float_mode;
    using layout_t = chunk_scan_layout<T, Policy>;
    constexpr int ld_x = layout_t::ld_x;
    static_assert(TR == TK && TR == 16 * (threads / 32) && PMax % 16 == 0);

    extern __shared__ uint4 scan_smem[];
    unsigned char* smem = reinterpret_cast<unsigned char*>(scan_smem);
    const bool shared_cb = scratch.cb != nullptr;
    const layout_t L(op.dstate, shared_cb);
    const int ld_n = L.ld_n, ld_s = L.ld_s;
    constexpr int ld_cb = layout_t::ld_cb;
    entering_t<T>* ss = reinterpret_cast<entering_t<T>*>(smem);
    float* l2s = reinterpret_cast<float*>(smem + L.off_l2);
    float* dts = reinterpret_cast<float*>(smem + L.off_dt);
    const auto cs = [&](int qt) { return reinterpret_cast<T*>(smem + L.off_c + (qt & 1) * L.c_bytes); };
    const auto bs = [&](int stage) { return reinterpret_cast<T*>(smem + L.off_stage + stage * L.stage_bytes); };
    const auto xs = [&](int stage) {
        return reinterpret_cast<T*>(smem + L.off_stage + stage * L.stage_bytes + L.b_bytes);
    };

    const int p = op.headdim, n = op.dstate, Q = op.chunk;
    const int col_tiles = (p + PMax - 1) / PMax;
    const int col0 = (static_cast<int>(blockIdx.x) % col_tiles) * PMax, head = static_cast<int>(blockIdx.x) / col_tiles;
    const int pc = min(PMax, p - col0);  // this block's headdim columns [col0, col0 + pc)
    const int chunk = blockIdx.y, b = blockIdx.z;
    const index_t c0 = op.t_begin + index_t(chunk) * Q;
    const int q = static_cast<int>(min(index_t(Q), op.t_end - c0));
    const int nq = (q + TR - 1) / TR;  // query tiles of this chunk
    const int grp = head / op.heads_per_group;
    const int warp = static_cast<int>(threadIdx.x >> 5), g = mma::lane_id() >> 2, t = mma::lane_id() & 3;
    const int wr0 = warp * 16;  // the warp's first row in a query tile
    const index_t ci = (index_t(b) * op.nheads + head) * op.nchunks + chunk;

    const T* b_chunk = op.B + b * op.b_sb + c0 * op.b_st + grp * op.b_sg;
    const T* c_chunk = op.C + b * op.c_sb + c0 * op.c_st + grp * op.c_sg;
    const T* x_chunk = op.x + b * op.x_sb + c0 * op.x_st + head * op.x_sh + col0;
    const float* cb_chunk =
        shared_cb ? scratch.cb + ((index_t(b) * (op.nheads / op.heads_per_group) + grp) * op.nchunks + chunk) *
                                     cb_tiles_per_chunk<Policy> * index_t(cb_tile_elems<Policy>)
                  : nullptr;
    const auto issue_keys = [&](int stage, int qt, int jt) {
        const int j0 = jt * TK, valid = min(TK, q - j0);
        if (shared_cb)
            load_tile_async<threads>(reinterpret_cast<float*>(bs(stage)), ld_cb,
                                     cb_chunk + index_t(cb_pair(qt, jt)) * cb_tile_elems<Policy>, TK, TR, TK, TR, TK,
                                     true);
        else
            load_tile_async<threads>(bs(stage), ld_n, b_chunk + j0 * op.b_st, op.b_st, TK, n, valid, n, op.vec_ok);
        load_tile_async<threads>(xs(stage), ld_x, x_chunk + j0 * op.x_st, op.x_st, TK, PMax, valid, pc, op.vec_ok);
    };
    const auto issue_queries = [&](int qt) {
        const int i0 = qt * TR;
        load_tile_async<threads>(cs(qt), ld_n, c_chunk + i0 * op.c_st, op.c_st, TR, n, min(TR, q - i0), n, op.vec_ok);
    };

    // Step 0's group also holds what the whole block reads: the entering state and the decays.
    load_tile_async<threads>(ss, ld_s, scratch.entering + ci * p * n + index_t(col0) * n, n, PMax, n, pc, n, true);
    copy_floats_async<threads>(l2s, scratch.cum + ci * Policy::max_chunk, round_up(q, 4));
    copy_floats_async<threads>(dts, scratch.dtc + ci * Policy::max_chunk, round_up(q, 4));
    issue_queries(0);
    issue_keys(0, 0, 0);
    cp_async_commit();

    mma::frag_c acc[NT];
    int qt = 0, jt = 0;
    for (int step = 0;; ++step) {
        // The next step's tiles: the next key tile, and the next query tile's C when it starts one.
        const bool next_query = jt == qt;
        const int nqt = next_query ? qt + 1 : qt, njt = next_query ? 0 : jt + 1;
        const bool has_next = nqt < nq;
        if (has_next) {
            issue_keys((step + 1) & 1, nqt, njt);
            if (next_query) issue_queries(nqt);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();

        const T* ct = cs(qt);
        const T* bt = bs(step & 1);
        const T* xt = xs(step & 1);
        const int i0 = qt * TR, rows = min(TR, q - i0), jend = i0 + rows, j0 = jt * TK;
        const int last_key = i0 + wr0 + 15;        // no key after it is visible to the warp's rows
        const int ia = i0 + wr0 + g, ib = ia + 8;  // the thread's two rows, chunk-relative
        const float la = l2s[min(ia, jend - 1)], lb = l2s[min(ib, jend - 1)];

        if (jt == 0) {  // carried state: acc = C S_in^T, row i scaled by exp(l_i)
#pragma unroll
            for (int i = 0; i < NT; ++i) mma::zero(acc[i]);
            if constexpr (mma::is_16bit<T>) {
                for (int k0 = 0; k0 < n; k0 += K) {
                    mma::frag_a<T> a;
                    mma::load_a_mk(a, ct, ld_n, wr0, k0);
#pragma unroll
                    for (int nt = 0; nt < NT / 2; ++nt) {
                        if (nt * 16 >= pc) break;
                        mma::frag_b<T> bf[2];
                        mma::load_b2_nk(bf, ss, ld_s, nt * 16, k0);
                        mma::mma<T, fmode>(acc[2 * nt], a, bf[0]);
                        mma::mma<T, fmode>(acc[2 * nt + 1], a, bf[1]);
                    }
                }
            } else {  // 128-bit loads; accumulator tile nt holds the columns float_column(nt, g)
                for (int k0 = 0; k0 < n; k0 += 16) {
                    mma::frag_a<T> a[2];
                    mma::load_a_pair_mk<fmode>(a, ct, ld_n, wr0, k0);
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt) {
                        if (32 * (nt / 4) >= pc) break;
                        mma::frag_b<T> bf[2];
                        mma::load_b_pair<fmode>(bf, ss + float_column(nt, g) * ld_s + k0 + 4 * t);
                        mma::mma<T, fmode>(acc[nt], a[0], bf[0]);
                        mma::mma<T, fmode>(acc[nt], a[1], bf[1]);
                    }
                }
            }
            const float ea = exp2f(la), eb = exp2f(lb);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                acc[nt].v[0] *= ea;
                acc[nt].v[1] *= ea;
                acc[nt].v[2] *= eb;
                acc[nt].v[3] *= eb;
            }
        }

        // Within the chunk: acc += M X, M_ij = (C_i . B_j) exp(l_i - l_j) dt_j for j <= i.
        mma::frag_c m[TK / 8];
        if (shared_cb) {  // the group's C B^T tile, in the accumulator layout
            const float* cbt = reinterpret_cast<const float*>(bt);
#pragma unroll
            for (int nt = 0; nt < TK / 8; ++nt) {
                const int col = nt * 8 + 2 * t;
                const float2 top = *reinterpret_cast<const float2*>(cbt + (wr0 + g) * ld_cb + col);
                const float2 bottom = *reinterpret_cast<const float2*>(cbt + (wr0 + g + 8) * ld_cb + col);
                m[nt].v[0] = top.x;
                m[nt].v[1] = top.y;
                m[nt].v[2] = bottom.x;
                m[nt].v[3] = bottom.y;
            }
        } else {
            warp_scores<T, fmode, TK>(m, ct, bt, ld_n, n, wr0, j0, last_key);
        }
#pragma unroll
        for (int nt = 0; nt < TK / 8; ++nt) {
            if (j0 + (nt / 2) * 16 > last_key) break;
            const int j = j0 + nt * 8 + 2 * t;
            const float2 lj = *reinterpret_cast<const float2*>(l2s + j);
            const float2 dj = *reinterpret_cast<const float2*>(dts + j);
            m[nt].v[0] = j <= ia ? m[nt].v[0] * exp2f(la - lj.x) * dj.x : 0.0f;
            m[nt].v[1] = j + 1 <= ia ? m[nt].v[1] * exp2f(la - lj.y) * dj.y : 0.0f;
            m[nt].v[2] = j <= ib ? m[nt].v[2] * exp2f(lb - lj.x) * dj.x : 0.0f;
            m[nt].v[3] = j + 1 <= ib ? m[nt].v[3] * exp2f(lb - lj.y) * dj.y : 0.0f;
        }
        if constexpr (mma::is_16bit<T>) {
            // The accumulators of key columns [16 s, 16 s + 16) are the A fragment of k-step s.
#pragma unroll
            for (int s = 0; s < TK / 16; ++s) {
                if (j0 + s * 16 > last_key) break;
                mma::frag_a<T> a;
                a.hi[0] = mma::pack2<T>(m[2 * s].v[0], m[2 * s].v[1]);
                a.hi[1] = mma::pack2<T>(m[2 * s].v[2], m[2 * s].v[3]);
                a.hi[2] = mma::pack2<T>(m[2 * s + 1].v[0], m[2 * s + 1].v[1]);
                a.hi[3] = mma::pack2<T>(m[2 * s + 1].v[2], m[2 * s + 1].v[3]);
#pragma unroll
                for (int nt = 0; nt < NT / 2; ++nt) {
                    if (nt * 16 >= pc) break;
                    mma::frag_b<T> bf[2];
                    mma::load_b2_kn(bf, xt, ld_x, nt * 16, s * 16);
                    mma::mma<T>(acc[2 * nt], a, bf[0]);
                    mma::mma<T>(acc[2 * nt + 1], a, bf[1]);
                }
            }
        } else {
            // The accumulators of key columns [16 s, 16 s + 8) and [16 s + 8, 16 s + 16) are the A
            // fragments of two k-steps (keys 2t, 2t + 1 of each as columns t, t + 4); X supplies
            // the same keys, 128 bits at a time: 4 columns of a key row, one per accumulator tile.
            const float* xk = xt + 2 * t * ld_x + 4 * g;
#pragma unroll
            for (int s = 0; s < TK / 16; ++s) {
                if (j0 + s * 16 > last_key) break;
                mma::frag_a<T> a[2];
                mma::a_from_accumulator<fmode>(a[0], m[2 * s]);
                mma::a_from_accumulator<fmode>(a[1], m[2 * s + 1]);
                const float* xs16 = xk + s * 16 * ld_x;
#pragma unroll
                for (int cg = 0; cg < PMax / 32; ++cg) {
                    if (32 * cg >= pc) break;
                    const float* x32 = xs16 + 32 * cg;
                    mma::mma_four_tiles<fmode>(acc + 4 * cg, a[0], mma::load_float4(x32), mma::load_float4(x32 + ld_x));
                    mma::mma_four_tiles<fmode>(acc + 4 * cg, a[1], mma::load_float4(x32 + 8 * ld_x),
                                               mma::load_float4(x32 + 9 * ld_x));
                }
            }
        }

        if (jt == qt) {  // the query tile is complete: skip term (this key tile holds its own rows) and store
            const float Dh = op.D[head];
            float* y_rows = y + b * y_sb + (c0 + i0) * y_st + head * y_sh + col0;
            if constexpr (mma::is_16bit<T>) {
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    const int col = nt * 8 + 2 * t;
                    if (col >= pc) break;
#pragma unroll
                    for (int half = 0; half < 2; ++half) {
                        const int row = wr0 + g + 8 * half;
                        if (row < rows) {
                            const float2 xv =
                                mma::unpack2<T>(*reinterpret_cast<const std::uint32_t*>(xt + row * ld_x + col));
                            *reinterpret_cast<float2*>(y_rows + row * y_st + col) = make_float2(
                                fmaf(Dh, xv.x, acc[nt].v[2 * half]), fmaf(Dh, xv.y, acc[nt].v[2 * half + 1]));
                        }
                    }
                }
            } else {  // the lane holds columns 32 cg + 8t .. + 7: tile 4 cg + i's pair (2t, 2t + 1) at + i, + 4 + i
#pragma unroll
                for (int cg = 0; cg < PMax / 32; ++cg) {
                    const int col = 32 * cg + 8 * t;
                    if (col >= pc) break;
#pragma unroll
                    for (int half = 0; half < 2; ++half) {
                        const int row = wr0 + g + 8 * half;
                        if (row >= rows) continue;
                        const float* xr = reinterpret_cast<const float*>(xt) + row * ld_x + col;
                        float* yr = y_rows + row * y_st + col;
#pragma unroll
                        for (int c = 0; c < 8; c += 2)
                            *reinterpret_cast<float2*>(yr + c) =
                                make_float2(fmaf(Dh, xr[c], acc[4 * cg + c % 4].v[2 * half + c / 4]),
                                            fmaf(Dh, xr[c + 1], acc[4 * cg + (c + 1) % 4].v[2 * half + c / 4]));
                    }
                }
            }
        }
        if (!has_next) break;
        __syncthreads();  // this stage (and, at a query tile's end, its C tile) is refilled next
        qt = nqt;
        jt = njt;
    }
}

// ------------------------------------------------------------------------------------------------
// Host side: checks, scratch layout, launches
// ------------------------------------------------------------------------------------------------

template <class Policy = default_policy>
inline void check_supported(const mixer_config& cfg, index_t headdim, index_t dstate, const char* who) {
    const auto dim_ok = [](index_t d) { return d >= 16 && d <= Policy::max_dim && d % 16 == 0; };
    require(dim_ok(headdim), who, " (CUDA): headdim = ", headdim, " is not supported (a multiple of 16 in [16, ",
            Policy::max_dim, "])");
    require(dim_ok(dstate), who, " (CUDA): d_state = ", dstate, " is not supported (a multiple of 16 in [16, ",
            Policy::max_dim, "])");
    require(cfg.chunk_size >= 1 && cfg.chunk_size <= Policy::max_chunk, who, " (CUDA): chunk_size = ", cfg.chunk_size,
            " is not supported (1 .. ", Policy::max_chunk, ")");
}

inline index_t chunks_of(index_t tokens, index_t chunk) { return tokens <= 0 ? 0 : (tokens + chunk - 1) / chunk; }

// Whether chunk_scan reads C B^T tiles computed once per group (see chunk_scan_policy).
template <class Policy>
bool shares_cb(const mixer_config& cfg) {
    return cfg.ngroups > 0 && cfg.nheads() / cfg.ngroups >= Policy::chunk_scan::share_cb_min_heads;
}

// The chunk scratch for up to `seqlen` tokens (the same layout for scratch_bytes and run). The
// converter needs only the chunk states and decays; the scan also the entering states and decays
// per token.
template <class T, class Policy>
chunk_scratch<T> take_chunk_scratch(workspace_arena& arena, const mixer_config& cfg, index_t batch, index_t seqlen,
                                    bool for_scan) {
    const auto chunks = static_cast<std::size_t>(batch * cfg.nheads() * std::max<index_t>(1, chunks_of(seqlen, cfg.chunk_size)));
    const auto state_size = static_cast<std::size_t>(cfg.headdim * cfg.d_state);
    chunk_scratch<T> s{};
    s.states = arena.take<float>(chunks * state_size);
    s.decay = arena.take<float>(chunks);
    if (for_scan) {
        s.entering = arena.take<entering_t<T>>(chunks * state_size);
        s.cum = arena.take<float>(chunks * Policy::max_chunk);
        s.dtc = arena.take<float>(chunks * Policy::max_chunk);
        if (shares_cb<Policy>(cfg)) {
            const auto group_chunks =
                static_cast<std::size_t>(batch * cfg.ngroups * std::max<index_t>(1, chunks_of(seqlen, cfg.chunk_size)));
            s.cb = arena.take<float>(group_chunks * cb_tiles_per_chunk<Policy> * cb_tile_elems<Policy>);
        }
    }
    return s;
}

template <class T, class Policy = default_policy>
std::size_t chunk_scratch_bytes(const mixer_config& cfg, index_t batch, index_t seqlen, bool for_scan) {
    workspace_arena measure;
    take_chunk_scratch<T, Policy>(measure, cfg, batch, seqlen, for_scan);
    return measure.used();
}

template <class T>
bool aligned16(const T* p, std::initializer_list<index_t> strides) {
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;
    for (index_t s : strides)
        if ((s * index_t(sizeof(T))) % 16 != 0) return false;
    return true;
}

// Checks the views and packs them for the kernels; [t_begin, t_end) is the span of tokens.
template <class T, class Policy = default_policy>
operands<T> make_operands(const mixer_config& cfg, const ssm_inputs<T>& in, index_t t_begin, index_t t_end,
                          tensor_view<float, 4> state, const char* who) {
    static_assert(cuda_storage_type<T>, "the CUDA SSD kernels take float, __nv_bfloat16 or __half storage");
    const index_t batch = in.batch(), L = in.seqlen(), h = in.nheads(), p = in.headdim(), n = in.d_state(),
                  g = in.ngroups();
    check_supported<Policy>(cfg, p, n, who);
    require(in.x.stride(3) == 1 && in.B.stride(3) == 1 && in.C.stride(3) == 1, who,
            ": x, B and C must be contiguous along their last dimension");
    require(g > 0 && h % g == 0, who, ": ngroups = ", g, " does not divide nheads = ", h);
    expect_shape(in.B, "B", {batch, L, g, n});
    expect_shape(in.C, "C", {batch, L, g, n});
    expect_shape(in.dt, "dt", {batch, L, h});
    expect_shape(state, "state", {batch, h, p, n});
    expect_contiguous(state, "state");
    require(reinterpret_cast<std::uintptr_t>(state.data()) % 16 == 0, who, " (CUDA): the state must be 16-byte aligned");
    require(0 <= t_begin && t_begin <= t_end && t_end <= L, who, ": token span [", t_begin, ", ", t_end,
            ") is not inside [0, ", L, "]");
    require(batch <= 65535, who, " (CUDA): batch = ", batch, " exceeds 65535");
    const index_t nchunks = chunks_of(t_end - t_begin, cfg.chunk_size);
    require(nchunks <= 65535, who, " (CUDA): ", nchunks, " chunks exceed 65535; use a larger chunk_size");

    operands<T> op{};
    op.x = in.x.data();
    op.x_sb = in.x.stride(0);
    op.x_st = in.x.stride(1);
    op.x_sh = in.x.stride(2);
    op.B = in.B.data();
    op.b_sb = in.B.stride(0);
    op.b_st = in.B.stride(1);
    op.b_sg = in.B.stride(2);
    op.C = in.C.data();
    op.c_sb = in.C.stride(0);
    op.c_st = in.C.stride(1);
    op.c_sg = in.C.stride(2);
    op.dt = in.dt.data();
    op.dt_sb = in.dt.stride(0);
    op.dt_st = in.dt.stride(1);
    op.dt_sh = in.dt.stride(2);
    op.A = in.A;
    op.D = in.D;
    op.batch = static_cast<int>(batch);
    op.nheads = static_cast<int>(h);
    op.heads_per_group = static_cast<int>(h / g);
    op.headdim = static_cast<int>(p);
    op.dstate = static_cast<int>(n);
    op.chunk = static_cast<int>(cfg.chunk_size);
    op.t_begin = t_begin;
    op.t_end = t_end;
    op.nchunks = static_cast<int>(nchunks);
    op.vec_ok = aligned16(op.x, {op.x_sb, op.x_st, op.x_sh}) && aligned16(op.B, {op.b_sb, op.b_st, op.b_sg}) &&
                aligned16(op.C, {op.c_sb, op.c_st, op.c_sg});
    return op;
}

// chunk_state blocks per (b, head, segment): tiles of the (headdim x d_state) state.
template <class Policy>
int chunk_state_tiles(int headdim, int dstate) {
    using P = typename Policy::chunk_state;
    return ((headdim + P::tile_m - 1) / P::tile_m) * ((dstate + P::tile_n - 1) / P::tile_n);
}

// (1) over the operands' span: one state per segment of chunks_per_block chunks (the scan needs
// every chunk's, 1; the converter only the last state, see converter_chunks_per_block). Returns the
// number of segments, the entries written per (b, head).
template <class T, class Policy>
int launch_chunk_state(const cuda_context& ctx, const operands<T>& op, const chunk_scratch<T>& scratch,
                       int chunks_per_block = 1) {
    using P = typename Policy::chunk_state;
    constexpr std::size_t smem = chunk_state_layout<T, Policy>::bytes;
    constexpr auto kernel = chunk_state_kernel<T, Policy>;
    allow_shared_memory<kernel>(smem, "cudaFuncSetAttribute (chunk_state_kernel shared memory)");
    require(chunks_per_block >= 1 && (chunks_per_block == 1 || scratch.cum == nullptr),
            "ssd chunk_state: the scan's per-chunk sums need one chunk per block");
    const int segments = (op.nchunks + chunks_per_block - 1) / chunks_per_block;
    const dim3 grid(static_cast<unsigned>(op.batch * op.nheads * chunk_state_tiles<Policy>(op.headdim, op.dstate)),
                    static_cast<unsigned>(segments));
    kernel<<<grid, P::threads, smem, ctx.stream>>>(op, scratch, chunks_per_block);
    check_launch("ssd chunk_state_kernel");
    return segments;
}

// Chunks per chunk_state block for the converter: the longest segments that still give the grid
// converter_blocks_per_sm blocks per multiprocessor (fewer segment states to write and pass on;
// a block walks its chunks in turn).
template <class Policy, class T>
int converter_chunks_per_block(const operands<T>& op) {
    const long long row =
        static_cast<long long>(op.batch) * op.nheads * chunk_state_tiles<Policy>(op.headdim, op.dstate);
    const long long want = static_cast<long long>(Policy::chunk_state::converter_blocks_per_sm) * multiprocessor_count();
    const long long segments = std::clamp<long long>((want + row - 1) / row, 1, std::max(op.nchunks, 1));
    return static_cast<int>((op.nchunks + segments - 1) / segments);
}

// (2): the state entering each chunk (when scratch.entering is set) and the final state into `state`.
template <class T, class Policy>
void launch_state_passing(const cuda_context& ctx, const chunk_scratch<T>& scratch, float* state, int batch,
                          int nheads, int nchunks, index_t state_size) {
    using P = typename Policy::state_passing;
    static_assert(P::vec % 8 == 0);
    const index_t vectors = index_t(batch) * nheads * (state_size / P::vec);
    const auto launch = [&](auto width) {
        constexpr int W = decltype(width)::value;
        constexpr int groups = P::threads / W;
        const auto blocks = static_cast<unsigned>((vectors + groups - 1) / groups);
        state_passing_kernel<T, W, Policy><<<blocks, P::threads, 0, ctx.stream>>>(scratch, state, nchunks, state_size,
                                                                                  vectors);
        check_launch("ssd state_passing_kernel");
    };
    if (nchunks <= P::short_width) launch(std::integral_constant<int, P::short_width>{});
    else launch(std::integral_constant<int, P::long_width>{});
}

// (3) over the operands' span, reading the states entering each chunk; first the group's C B^T
// tiles when the scratch holds them.
template <class T, class Policy>
void launch_chunk_scan(const cuda_context& ctx, const operands<T>& op, const chunk_scratch<T>& scratch,
                       tensor_view<float, 4> y) {
    using P = typename Policy::chunk_scan;
    if (scratch.cb) {
        const chunk_cb_layout<T, Policy> cb_layout(op.dstate);
        constexpr auto cb_kernel = chunk_cb_kernel<T, Policy>;
        allow_shared_memory<cb_kernel>(cb_layout.bytes, "cudaFuncSetAttribute (chunk_cb_kernel shared memory)");
        const int tiles = (std::min(op.chunk, Policy::max_chunk) + P::tile_rows - 1) / P::tile_rows;
        const dim3 cb_grid(static_cast<unsigned>(cb_pair(tiles, 0)), static_cast<unsigned>(op.nchunks),
                           static_cast<unsigned>(op.batch * (op.nheads / op.heads_per_group)));
        cb_kernel<<<cb_grid, P::threads, cb_layout.bytes, ctx.stream>>>(op, scratch.cb);
        check_launch("ssd chunk_cb_kernel");
    }
    const chunk_scan_layout<T, Policy> layout(op.dstate, scratch.cb != nullptr);
    constexpr auto kernel = chunk_scan_kernel<T, Policy>;
    allow_shared_memory<kernel>(layout.bytes, "cudaFuncSetAttribute (chunk_scan_kernel shared memory)");
    const int col_tiles = (op.headdim + P::tile_cols - 1) / P::tile_cols;
    const dim3 grid(static_cast<unsigned>(col_tiles * op.nheads), static_cast<unsigned>(op.nchunks),
                    static_cast<unsigned>(op.batch));
    kernel<<<grid, P::threads, layout.bytes, ctx.stream>>>(op, scratch, y.data(), y.stride(0), y.stride(1), y.stride(2));
    check_launch("ssd chunk_scan_kernel");
}

}  // namespace transmamba::kernels::cuda::ssd
