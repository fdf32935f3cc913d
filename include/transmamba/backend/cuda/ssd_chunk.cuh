#pragma once
// The chunked SSD on the GPU (SPEC.md section 3), in the three steps that the chunked scan and
// the Memory Converter share. Tokens [t_begin, t_end) are cut into chunks of Q = chunk_size tokens
// aligned to t_begin (the last one may be shorter); within a chunk l_i = sum_{m<=i} dt_m A.
//   (1) chunk_state:   per (b, head, chunk): s_c = X^T diag(exp(l_last - l_j) dt_j) B and the chunk's
//                      total decay exp(l_last), both from one CUB BlockScan over the chunk's dt A.
//   (2) state_passing: the states entering every chunk, S_in(c+1) = decay_c S_in(c) + s_c from the
//                      initial state, as a scan over chunks with the associative operator
//                      (a1, s1) . (a2, s2) = (a1 a2, a2 s1 + s2) (cub::WarpScan); writes the final state.
//   (3) chunk_scan:    per (b, chunk, tile of 64 query rows, set of heads of one group):
//                      y = (L o C B^T o dt) X + diag(exp(l)) C S_in^T + D x,  L_ij = exp(l_i - l_j), j <= i.
//                      C B^T is computed once per block and kept in shared memory for all its heads.
// The converter is (1) + (2) over the prefix [0, P), keeping only the final state.
//
// Scratch (caller-owned): the chunk states (batch, nheads, nchunks, headdim, d_state) in float,
// overwritten by (2) with the state entering each chunk, and the chunk decays (batch, nheads, nchunks).
//
// Matrix parts run on the tensor cores through warp_mma.cuh. 16-bit storage: x, B, C enter as they
// are; the float operands (the state entering a chunk, the weighted keys) enter as hi + lo pairs
// of the storage type, so only the mixing matrix L o C B^T o dt is rounded to 16 bits (as in
// mamba_ssm). float storage: 3xTF32 by default (float32 accuracy).
#include <cub/block/block_scan.cuh>
#include <cub/warp/warp_scan.cuh>

#include <algorithm>
#include <cstdint>

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
    static constexpr int tile_n = 64;    // d_state columns of the state per block
    static constexpr int tile_k = 64;    // tokens per shared-memory stage
};

struct state_passing_policy {
    static constexpr int threads = 256;
    static constexpr int vec = 8;               // state elements per lane (32 bytes)
    static constexpr int short_width = 8;       // lanes per scan when nchunks <= 8
    static constexpr int long_width = 32;       // otherwise; each lane then walks a segment of chunks
};

struct chunk_scan_policy {
    static constexpr int threads = 128;            // 4 warps, 16 query rows each
    static constexpr int tile_rows = 64;           // query rows per block
    static constexpr int tile_k = 64;              // keys per shared-memory stage (== tile_rows)
    static constexpr int max_heads_per_block = 8;  // heads of one group that share one C B^T tile
};

struct default_policy {
    static constexpr int max_chunk = 256;  // chunk_size limit: one BlockScan of 2 items per thread
    static constexpr int max_dim = 128;    // headdim and d_state limit (multiples of 16)
    static constexpr bool split_float_operands = true;  // 16-bit: state / weighted keys as hi + lo
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

struct chunk_scratch {
    float* states;  // (batch, nheads, nchunks, headdim, d_state)
    float* decay;   // (batch, nheads, nchunks)
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

__host__ __device__ constexpr int round_up(int v, int m) { return (v + m - 1) / m * m; }
__host__ __device__ constexpr std::size_t round_up16(std::size_t v) { return (v + 15) / 16 * 16; }

template <class T>
union vec16 {
    uint4 raw;
    T e[16 / sizeof(T)];
};

// rows x cols tile of global memory (row stride ld_src) into shared memory (row stride ld);
// elements outside valid_rows x valid_cols are zero. cols and valid_cols are multiples of the
// 16-byte vector width.
template <int Threads, class T>
__device__ __forceinline__ void load_tile(T* dst, int ld, const T* src, index_t ld_src, int rows, int cols,
                                          int valid_rows, int valid_cols, bool vec_ok) {
    constexpr int V = 16 / sizeof(T);
    if (vec_ok) {
        const int per_row = cols / V;
        for (int v = threadIdx.x; v < rows * per_row; v += Threads) {
            const int r = v / per_row, c = (v % per_row) * V;
            uint4 val = make_uint4(0, 0, 0, 0);
            if (r < valid_rows && c < valid_cols) val = __ldg(reinterpret_cast<const uint4*>(src + r * ld_src + c));
            *reinterpret_cast<uint4*>(dst + r * ld + c) = val;
        }
    } else {
        for (int e = threadIdx.x; e < rows * cols; e += Threads) {
            const int r = e / cols, c = e % cols;
            dst[r * ld + c] = (r < valid_rows && c < valid_cols) ? src[r * ld_src + c] : from_float<T>(0.0f);
        }
    }
}

// Stores the float v into a tile of T: as it is (float), or as hi + lo (16-bit, when lo != nullptr).
template <class T>
__device__ __forceinline__ void store_split(T* hi, T* lo, int at, float v) {
    const T h = from_float<T>(v);
    hi[at] = h;
    if constexpr (mma::is_16bit<T>) {
        if (lo) lo[at] = from_float<T>(v - to_float(h));
    }
}

// As load_tile, each row r multiplied by row_scale[r] and stored split (see store_split).
template <int Threads, class T>
__device__ __forceinline__ void load_scaled_tile(T* hi, T* lo, int ld, const T* src, index_t ld_src, int rows, int cols,
                                                 int valid_rows, int valid_cols, bool vec_ok, const float* row_scale) {
    constexpr int V = 16 / sizeof(T);
    const int per_row = cols / V;
    for (int v = threadIdx.x; v < rows * per_row; v += Threads) {
        const int r = v / per_row, c = (v % per_row) * V;
        vec16<T> in;
        const bool valid = r < valid_rows && c < valid_cols;
        if (valid) {
            if (vec_ok) {
                in.raw = __ldg(reinterpret_cast<const uint4*>(src + r * ld_src + c));
            } else {
#pragma unroll
                for (int e = 0; e < V; ++e) in.e[e] = src[r * ld_src + c + e];
            }
        }
        const float s = valid ? row_scale[r] : 0.0f;
#pragma unroll
        for (int e = 0; e < V; ++e) store_split(hi, lo, r * ld + c + e, valid ? to_float(in.e[e]) * s : 0.0f);
    }
}

// ------------------------------------------------------------------------------------------------
// (1) chunk_state: s_c = X^T diag(w) B, w_j = exp(sum_{m>j} dt_m A) dt_j within the chunk
// ------------------------------------------------------------------------------------------------

template <class T, class Policy>
__global__ void __launch_bounds__(Policy::chunk_state::threads, 1)
    chunk_state_kernel(operands<T> op, chunk_scratch out) {
    using P = typename Policy::chunk_state;
    constexpr int threads = P::threads, TM = P::tile_m, TN = P::tile_n, TK = P::tile_k;
    constexpr int K = mma::k_step<T>;
    constexpr bool split = mma::is_16bit<T> && Policy::split_float_operands;
    constexpr int items = Policy::max_chunk / threads;
    constexpr int ld_x = TM + pad_rows_contiguous_mn<T>;  // X[token][channel], read as A^T
    constexpr int ld_b = TN + pad_rows_contiguous_mn<T>;  // Bw[token][state], read as B[k][n]
    static_assert(TM == 16 * (threads / 32) && TN % 16 == 0 && TK % 16 == 0);
    static_assert(items * threads == Policy::max_chunk);

    using block_scan = cub::BlockScan<float, threads>;
    __shared__ typename block_scan::TempStorage scan_storage;
    __shared__ alignas(16) T xs[TK * ld_x];
    __shared__ alignas(16) T bw_hi[TK * ld_b];
    __shared__ alignas(16) T bw_lo[split ? TK * ld_b : 1];
    __shared__ float weight[Policy::max_chunk];

    const int p = op.headdim, n = op.dstate, h = op.nheads;
    const int tiles_m = (p + TM - 1) / TM, tiles = tiles_m * ((n + TN - 1) / TN);
    const int tile = static_cast<int>(blockIdx.x % tiles);
    const int bh = static_cast<int>(blockIdx.x / tiles), b = bh / h, head = bh % h;
    const int grp = head / op.heads_per_group;
    const int p0 = (tile % tiles_m) * TM, s0 = (tile / tiles_m) * TN;
    const int chunk = blockIdx.y;
    const index_t c0 = op.t_begin + index_t(chunk) * op.chunk;
    const int q = static_cast<int>(min(index_t(op.chunk), op.t_end - c0));
    const float a_log2 = op.A[head] * log2e;

    // Suffix sums from the end of the chunk: an exclusive scan over the reversed tokens.
    float v[items], dtv[items];
#pragma unroll
    for (int i = 0; i < items; ++i) {
        const int j = q - 1 - (static_cast<int>(threadIdx.x) * items + i);
        dtv[i] = j >= 0 ? op.dt_at(b, c0 + j, head) : 0.0f;
        v[i] = dtv[i] * a_log2;
    }
    float total;
    block_scan(scan_storage).ExclusiveSum(v, v, total);
#pragma unroll
    for (int i = 0; i < items; ++i) {
        const int j = q - 1 - (static_cast<int>(threadIdx.x) * items + i);
        if (j >= 0) weight[j] = exp2f(v[i]) * dtv[i];
    }
    const index_t chunk_index = index_t(bh) * op.nchunks + chunk;
    if (tile == 0 && threadIdx.x == 0) out.decay[chunk_index] = exp2f(total);
    __syncthreads();

    const int warp = static_cast<int>(threadIdx.x >> 5);
    mma::frag_c acc[TN / 8];
#pragma unroll
    for (int i = 0; i < TN / 8; ++i) mma::zero(acc[i]);

    const T* x_chunk = op.x + b * op.x_sb + c0 * op.x_st + head * op.x_sh + p0;
    const T* b_chunk = op.B + b * op.b_sb + c0 * op.b_st + grp * op.b_sg + s0;
    for (int j0 = 0; j0 < q; j0 += TK) {
        const int rows = min(TK, q - j0);
        load_tile<threads>(xs, ld_x, x_chunk + j0 * op.x_st, op.x_st, TK, TM, rows, p - p0, op.vec_ok);
        load_scaled_tile<threads>(bw_hi, split ? bw_lo : nullptr, ld_b, b_chunk + j0 * op.b_st, op.b_st, TK, TN, rows,
                                  n - s0, op.vec_ok, weight + j0);
        __syncthreads();
        for (int k0 = 0; k0 < rows; k0 += K) {
            mma::frag_a<T> a;
            mma::load_a_km(a, xs, ld_x, warp * 16, k0);
#pragma unroll
            for (int nt = 0; nt < TN / 16; ++nt) {
                mma::frag_b<T> bf[2];
                mma::load_b2_kn(bf, bw_hi, ld_b, nt * 16, k0);
                mma::mma<T, Policy::float_mode>(acc[2 * nt], a, bf[0]);
                mma::mma<T, Policy::float_mode>(acc[2 * nt + 1], a, bf[1]);
                if constexpr (split) {
                    mma::load_b2_kn(bf, bw_lo, ld_b, nt * 16, k0);
                    mma::mma<T>(acc[2 * nt], a, bf[0]);
                    mma::mma<T>(acc[2 * nt + 1], a, bf[1]);
                }
            }
        }
        __syncthreads();
    }

    const int g = mma::lane_id() >> 2, t = mma::lane_id() & 3;
    float* s = out.states + chunk_index * p * n;
#pragma unroll
    for (int nt = 0; nt < TN / 8; ++nt) {
        const int col = s0 + nt * 8 + 2 * t;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int row = p0 + warp * 16 + g + 8 * half;
            if (row < p && col < n)
                *reinterpret_cast<float2*>(s + index_t(row) * n + col) =
                    make_float2(acc[nt].v[2 * half], acc[nt].v[2 * half + 1]);
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

// One logical warp of Width lanes per (b, head, Vec state elements); lane l walks the chunks of its
// segment, the warp scan joins the segments, seeded with the initial state.
template <int Width, class Policy>
__global__ void __launch_bounds__(Policy::state_passing::threads)
    state_passing_kernel(chunk_scratch scratch, float* state, int nchunks, index_t state_size, index_t vectors,
                         bool write_chunk_states) {
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
    float* chunk_states = scratch.states + bh * nchunks * state_size + e0;
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
        float* at = chunk_states + index_t(c) * state_size;
        float s[Vec];
        load_vec(s, at);
        const float a = decay[c];
        if (write_chunk_states) store_vec(at, S);  // the state entering chunk c
#pragma unroll
        for (int i = 0; i < Vec; ++i) S[i] = fmaf(a, S[i], s[i]);
    }
    if (lane == Width - 1) store_vec(state + bh * state_size + e0, S);
}

// ------------------------------------------------------------------------------------------------
// (3) chunk_scan: y = (L o C B^T o dt) X + diag(exp(l)) C S_in^T + D x
// ------------------------------------------------------------------------------------------------

// Shared-memory layout of chunk_scan_kernel, in one place for the host (size) and the kernel.
template <class T, int PMax, class Policy>
struct chunk_scan_layout {
    using P = typename Policy::chunk_scan;
    static constexpr bool split = mma::is_16bit<T> && Policy::split_float_operands;
    int ld_cb, ld_n, ld_x;
    std::size_t off_l2, off_dt, off_c, off_region, off_s_lo, off_x, bytes;

    __host__ __device__ chunk_scan_layout(int chunk, int dstate) {
        ld_cb = round_up(chunk, P::tile_k) + (mma::is_16bit<T> ? 8 : 4);
        ld_n = dstate + pad_rows_contiguous_k<T>;
        ld_x = PMax + pad_rows_contiguous_mn<T>;
        off_l2 = round_up16(sizeof(float) * std::size_t(P::tile_rows) * ld_cb);
        off_dt = off_l2 + round_up16(sizeof(float) * Policy::max_chunk);
        off_c = off_dt + round_up16(sizeof(float) * Policy::max_chunk);
        off_region = off_c + round_up16(sizeof(T) * std::size_t(P::tile_rows) * ld_n);
        // phase A: the keys tile [tile_k][ld_n]; phase B: the state (hi, lo) [PMax][ld_n] and X [tile_k][ld_x]
        const std::size_t s_bytes = round_up16(sizeof(T) * std::size_t(PMax) * ld_n);
        off_s_lo = off_region + s_bytes;
        off_x = off_s_lo + (split ? s_bytes : 0);
        const std::size_t phase_b = off_x + round_up16(sizeof(T) * std::size_t(P::tile_k) * ld_x);
        const std::size_t phase_a = off_region + round_up16(sizeof(T) * std::size_t(P::tile_k) * ld_n);
        bytes = phase_a > phase_b ? phase_a : phase_b;
    }
};

template <class T, int PMax, class Policy>
__global__ void __launch_bounds__(Policy::chunk_scan::threads, 1)
    chunk_scan_kernel(operands<T> op, const float* entering, float* y, index_t y_sb, index_t y_st, index_t y_sh,
                      int heads_per_block) {
    using P = typename Policy::chunk_scan;
    constexpr int threads = P::threads, TR = P::tile_rows, TK = P::tile_k;
    constexpr int K = mma::k_step<T>;
    constexpr int NT = PMax / 8;  // accumulator tiles along headdim
    constexpr int items = Policy::max_chunk / threads;
    constexpr auto fmode = Policy::float_mode;
    using layout_t = chunk_scan_layout<T, PMax, Policy>;
    constexpr bool split = layout_t::split;
    static_assert(TR == TK && TR == 16 * (threads / 32) && PMax % 16 == 0);
    static_assert(items * threads == Policy::max_chunk);

    using block_scan = cub::BlockScan<float, threads>;
    __shared__ typename block_scan::TempStorage scan_storage;
    extern __shared__ uint4 smem_raw[];
    unsigned char* smem = reinterpret_cast<unsigned char*>(smem_raw);
    const layout_t L(op.chunk, op.dstate);
    float* cb = reinterpret_cast<float*>(smem);
    float* l2s = reinterpret_cast<float*>(smem + L.off_l2);
    float* dts = reinterpret_cast<float*>(smem + L.off_dt);
    T* cs = reinterpret_cast<T*>(smem + L.off_c);
    T* bs = reinterpret_cast<T*>(smem + L.off_region);  // phase A
    T* s_hi = bs;                                        // phase B
    T* s_lo = reinterpret_cast<T*>(smem + L.off_s_lo);
    T* xs = reinterpret_cast<T*>(smem + L.off_x);
    const int ld_cb = L.ld_cb, ld_n = L.ld_n, ld_x = L.ld_x;

    const int p = op.headdim, n = op.dstate, Q = op.chunk;
    const int n_qtiles = (Q + TR - 1) / TR;
    const int qtile = static_cast<int>(blockIdx.x) % n_qtiles, hset = static_cast<int>(blockIdx.x) / n_qtiles;
    const int chunk = blockIdx.y, b = blockIdx.z;
    const index_t c0 = op.t_begin + index_t(chunk) * Q;
    const int q = static_cast<int>(min(index_t(Q), op.t_end - c0));
    const int i0 = qtile * TR;
    if (i0 >= q) return;
    const int rows = min(TR, q - i0);
    const int jend = i0 + rows;  // keys j < jend are visible to this tile
    const int head0 = hset * heads_per_block, grp = head0 / op.heads_per_group;
    const int warp = static_cast<int>(threadIdx.x >> 5), g = mma::lane_id() >> 2, t = mma::lane_id() & 3;
    const int wr0 = warp * 16;                // the warp's first row in the tile
    const int last_key = i0 + wr0 + 15;       // no key after it is visible to the warp's rows

    // Phase A: CB[i][j] = C_i . B_j for the tile's rows and keys j < jend, shared by all heads.
    load_tile<threads>(cs, ld_n, op.C + b * op.c_sb + (c0 + i0) * op.c_st + grp * op.c_sg, op.c_st, TR, n, rows, n,
                       op.vec_ok);
    for (int j0 = 0; j0 < jend; j0 += TK) {
        load_tile<threads>(bs, ld_n, op.B + b * op.b_sb + (c0 + j0) * op.b_st + grp * op.b_sg, op.b_st, TK, n,
                           min(TK, q - j0), n, op.vec_ok);
        __syncthreads();
        mma::frag_c acc[TK / 8];
#pragma unroll
        for (int i = 0; i < TK / 8; ++i) mma::zero(acc[i]);
        for (int k0 = 0; k0 < n; k0 += K) {
            mma::frag_a<T> a;
            mma::load_a_mk(a, cs, ld_n, wr0, k0);
#pragma unroll
            for (int nt = 0; nt < TK / 16; ++nt) {
                if (j0 + nt * 16 > last_key) break;
                mma::frag_b<T> bf[2];
                mma::load_b2_nk(bf, bs, ld_n, nt * 16, k0);
                mma::mma<T, fmode>(acc[2 * nt], a, bf[0]);
                mma::mma<T, fmode>(acc[2 * nt + 1], a, bf[1]);
            }
        }
#pragma unroll
        for (int nt = 0; nt < TK / 8; ++nt) {
            if (j0 + (nt / 2) * 16 > last_key) break;
            const int col = j0 + nt * 8 + 2 * t;
            *reinterpret_cast<float2*>(cb + (wr0 + g) * ld_cb + col) = make_float2(acc[nt].v[0], acc[nt].v[1]);
            *reinterpret_cast<float2*>(cb + (wr0 + g + 8) * ld_cb + col) = make_float2(acc[nt].v[2], acc[nt].v[3]);
        }
        __syncthreads();
    }

    // Phase B, head by head.
    for (int hh = 0; hh < heads_per_block; ++hh) {
        const int head = head0 + hh;
        const float a_log2 = op.A[head] * log2e;
        {  // l2[j] = log2 of the decay from the chunk start through token j (0 beyond jend: constant)
            float v[items], dtv[items];
#pragma unroll
            for (int i = 0; i < items; ++i) {
                const int j = static_cast<int>(threadIdx.x) * items + i;
                dtv[i] = j < jend ? op.dt_at(b, c0 + j, head) : 0.0f;
                v[i] = dtv[i] * a_log2;
            }
            block_scan(scan_storage).InclusiveSum(v, v);
#pragma unroll
            for (int i = 0; i < items; ++i) {
                const int j = static_cast<int>(threadIdx.x) * items + i;
                l2s[j] = v[i];
                dts[j] = dtv[i];
            }
        }
        {  // the state entering the chunk, (headdim, d_state) float -> [PMax][ld_n] tiles
            const float* S = entering + ((index_t(b) * op.nheads + head) * op.nchunks + chunk) * p * n;
            for (int e = static_cast<int>(threadIdx.x) * 4; e < PMax * n; e += threads * 4) {
                const int r = e / n, c = e % n;
                const float4 v = r < p ? *reinterpret_cast<const float4*>(S + index_t(r) * n + c) : make_float4(0, 0, 0, 0);
                store_split(s_hi, split ? s_lo : nullptr, r * ld_n + c, v.x);
                store_split(s_hi, split ? s_lo : nullptr, r * ld_n + c + 1, v.y);
                store_split(s_hi, split ? s_lo : nullptr, r * ld_n + c + 2, v.z);
                store_split(s_hi, split ? s_lo : nullptr, r * ld_n + c + 3, v.w);
            }
        }
        __syncthreads();

        mma::frag_c acc[NT];
#pragma unroll
        for (int i = 0; i < NT; ++i) mma::zero(acc[i]);

        // Carried state: acc = C S_in^T, then row i scaled by exp(l_i).
        for (int k0 = 0; k0 < n; k0 += K) {
            mma::frag_a<T> a;
            mma::load_a_mk(a, cs, ld_n, wr0, k0);
#pragma unroll
            for (int nt = 0; nt < NT / 2; ++nt) {
                if (nt * 16 >= p) break;
                mma::frag_b<T> bf[2];
                mma::load_b2_nk(bf, s_hi, ld_n, nt * 16, k0);
                mma::mma<T, fmode>(acc[2 * nt], a, bf[0]);
                mma::mma<T, fmode>(acc[2 * nt + 1], a, bf[1]);
                if constexpr (split) {
                    mma::load_b2_nk(bf, s_lo, ld_n, nt * 16, k0);
                    mma::mma<T>(acc[2 * nt], a, bf[0]);
                    mma::mma<T>(acc[2 * nt + 1], a, bf[1]);
                }
            }
        }
        const int ia = i0 + wr0 + g, ib = ia + 8;  // the thread's two rows, chunk-relative
        const float la = l2s[ia], lb = l2s[ib];
        {
            const float ea = exp2f(la), eb = exp2f(lb);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                acc[nt].v[0] *= ea;
                acc[nt].v[1] *= ea;
                acc[nt].v[2] *= eb;
                acc[nt].v[3] *= eb;
            }
        }

        // Within the chunk: acc += M X, M_ij = CB_ij exp(l_i - l_j) dt_j for j <= i.
        const T* x_chunk = op.x + b * op.x_sb + c0 * op.x_st + head * op.x_sh;
        for (int j0 = 0; j0 < jend; j0 += TK) {
            __syncthreads();  // the previous X tile is no longer read
            load_tile<threads>(xs, ld_x, x_chunk + j0 * op.x_st, op.x_st, TK, PMax, min(TK, q - j0), p, op.vec_ok);
            __syncthreads();
            for (int kk = 0; kk < TK; kk += K) {
                const int j = j0 + kk;
                if (j > last_key || j >= jend) break;
                mma::frag_a<T> a;
                if constexpr (mma::is_16bit<T>) {
#pragma unroll
                    for (int r = 0; r < 4; ++r) {
                        const int row = wr0 + g + 8 * (r & 1), i = i0 + row, jj = j + 2 * t + 8 * (r >> 1);
                        const float li = (r & 1) ? lb : la;
                        const float2 c2 = *reinterpret_cast<const float2*>(cb + row * ld_cb + jj);
                        const float2 l2 = *reinterpret_cast<const float2*>(l2s + jj);
                        const float2 d2 = *reinterpret_cast<const float2*>(dts + jj);
                        const float m0 = jj <= i ? c2.x * exp2f(li - l2.x) * d2.x : 0.0f;
                        const float m1 = jj + 1 <= i ? c2.y * exp2f(li - l2.y) * d2.y : 0.0f;
                        a.hi[r] = mma::pack2<T>(m0, m1);
                    }
                } else {
                    mma::make_a(a, [&](int r, int c) {
                        const int row = wr0 + r, jj = j + c;
                        const float li = r < 8 ? la : lb;
                        return jj <= i0 + row ? cb[row * ld_cb + jj] * exp2f(li - l2s[jj]) * dts[jj] : 0.0f;
                    });
                }
#pragma unroll
                for (int nt = 0; nt < NT / 2; ++nt) {
                    if (nt * 16 >= p) break;
                    mma::frag_b<T> bf[2];
                    mma::load_b2_kn(bf, xs, ld_x, nt * 16, kk);
                    mma::mma<T, fmode>(acc[2 * nt], a, bf[0]);
                    mma::mma<T, fmode>(acc[2 * nt + 1], a, bf[1]);
                }
            }
        }

        // Skip term and store. The last X tile holds this tile's own rows (TR == TK).
        const float Dh = op.D[head];
        float* y_rows = y + b * y_sb + (c0 + i0) * y_st + head * y_sh;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int col = nt * 8 + 2 * t;
            if (col >= p) break;
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = wr0 + g + 8 * half;
                if (row < rows) {
                    const float y0 = fmaf(Dh, to_float(xs[row * ld_x + col]), acc[nt].v[2 * half]);
                    const float y1 = fmaf(Dh, to_float(xs[row * ld_x + col + 1]), acc[nt].v[2 * half + 1]);
                    *reinterpret_cast<float2*>(y_rows + row * y_st + col) = make_float2(y0, y1);
                }
            }
        }
        __syncthreads();  // l2s, dts, the state and X tiles are rewritten for the next head
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

// The chunk scratch for up to `seqlen` tokens (the same layout for scratch_bytes and run).
inline chunk_scratch take_chunk_scratch(workspace_arena& arena, const mixer_config& cfg, index_t batch, index_t seqlen) {
    const auto nchunks = static_cast<std::size_t>(std::max<index_t>(1, chunks_of(seqlen, cfg.chunk_size)));
    const auto bh = static_cast<std::size_t>(batch * cfg.nheads());
    chunk_scratch s;
    s.states = arena.take<float>(bh * nchunks * static_cast<std::size_t>(cfg.headdim * cfg.d_state));
    s.decay = arena.take<float>(bh * nchunks);
    return s;
}

inline std::size_t chunk_scratch_bytes(const mixer_config& cfg, index_t batch, index_t seqlen) {
    workspace_arena measure;
    take_chunk_scratch(measure, cfg, batch, seqlen);
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

// (1) over the operands' span.
template <class T, class Policy>
void launch_chunk_state(const cuda_context& ctx, const operands<T>& op, chunk_scratch scratch) {
    using P = typename Policy::chunk_state;
    const int tiles = ((op.headdim + P::tile_m - 1) / P::tile_m) * ((op.dstate + P::tile_n - 1) / P::tile_n);
    const dim3 grid(static_cast<unsigned>(op.batch * op.nheads * tiles), static_cast<unsigned>(op.nchunks));
    chunk_state_kernel<T, Policy><<<grid, P::threads, 0, ctx.stream>>>(op, scratch);
    check_launch("ssd chunk_state_kernel");
}

// (2): the state entering each chunk (when write_chunk_states) and the final state into `state`.
template <class Policy>
void launch_state_passing(const cuda_context& ctx, chunk_scratch scratch, float* state, int batch, int nheads,
                          int nchunks, index_t state_size, bool write_chunk_states) {
    using P = typename Policy::state_passing;
    static_assert(P::vec % 4 == 0);
    const index_t vectors = index_t(batch) * nheads * (state_size / P::vec);
    const auto launch = [&](auto width) {
        constexpr int W = decltype(width)::value;
        constexpr int groups = P::threads / W;
        const auto blocks = static_cast<unsigned>((vectors + groups - 1) / groups);
        state_passing_kernel<W, Policy><<<blocks, P::threads, 0, ctx.stream>>>(scratch, state, nchunks, state_size,
                                                                               vectors, write_chunk_states);
        check_launch("ssd state_passing_kernel");
    };
    if (nchunks <= P::short_width) launch(std::integral_constant<int, P::short_width>{});
    else launch(std::integral_constant<int, P::long_width>{});
}

// Heads per chunk_scan block: the largest divisor of the group size within the policy's limit.
template <class Policy>
int heads_per_block(int heads_per_group) {
    for (int k = std::min(heads_per_group, Policy::chunk_scan::max_heads_per_block); k > 1; --k)
        if (heads_per_group % k == 0) return k;
    return 1;
}

template <class T, int PMax, class Policy>
void launch_chunk_scan_tile(const cuda_context& ctx, const operands<T>& op, const float* entering,
                            tensor_view<float, 4> y) {
    using P = typename Policy::chunk_scan;
    const chunk_scan_layout<T, PMax, Policy> layout(op.chunk, op.dstate);
    const auto kernel = chunk_scan_kernel<T, PMax, Policy>;
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(layout.bytes)),
               "cudaFuncSetAttribute (chunk_scan_kernel shared memory)");
    const int hb = heads_per_block<Policy>(op.heads_per_group);
    const int qtiles = (op.chunk + P::tile_rows - 1) / P::tile_rows;
    const dim3 grid(static_cast<unsigned>(qtiles * (op.nheads / hb)), static_cast<unsigned>(op.nchunks),
                    static_cast<unsigned>(op.batch));
    kernel<<<grid, P::threads, layout.bytes, ctx.stream>>>(op, entering, y.data(), y.stride(0), y.stride(1), y.stride(2),
                                                           hb);
    check_launch("ssd chunk_scan_kernel");
}

// (3) over the operands' span, reading the states entering each chunk.
template <class T, class Policy>
void launch_chunk_scan(const cuda_context& ctx, const operands<T>& op, const float* entering, tensor_view<float, 4> y) {
    if (op.headdim <= 64) launch_chunk_scan_tile<T, 64, Policy>(ctx, op, entering, y);
    else launch_chunk_scan_tile<T, 128, Policy>(ctx, op, entering, y);
}

}  // namespace transmamba::kernels::cuda::ssd
