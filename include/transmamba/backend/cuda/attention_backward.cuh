#pragma once
// The backward of causal attention with Q=C, K=B, V=x over the prefix t < P, on the GPU
// (FlashAttention-2's algorithm; docs/training.md). The same math as the CPU kernel
// (backend/cpu/attention_backward.hpp):
//   P_ij = exp(s_ij - lse_i), s_ij = scale C_i . B_j (j <= i), lse_i kept by the forward
//   dP_ij = sum over the group's heads of dy_i . x_j,  Delta_i = sum over the heads of dy_i . (y_i - D x_i)
//   dS_ij = P_ij (dP_ij - Delta_i)
//   dx_j += sum_i P_ij dy_i (+ D dy_j),  dC_i += scale sum_j dS_ij B_j,  dB_j += scale sum_i dS_ij C_i
// Heads of a group share P, so a group is one attention whose value width is its h/g * p adjacent
// channels. No P x P matrix exists: every (query tile, key tile) recomputes S from C, B and lse.
//
// Kernels, in order on the caller's stream:
//   1. prepare: Delta per (sequence, group, query), and dy rounded to T (the tensor cores' operand).
//   2. skip_D: dD per (sequence, head) = sum over the prefix of dy . x (only with the D skip).
//   3. key tile: one CTA per (key tile j, column chunk c, group, sequence) walks the query tiles
//      i >= j. Per i: S = Q_i K_j^T and dP^c = dO_i[c] V_j[c]^T (the chunk's columns only), P and
//      dS^c = P (dP^c - [c = 0] Delta) in shared memory, then dV_j[c] += P^T dO_i[c] and
//      dK_j += dS^c^T Q_i in registers, and dQ_i += dS^c K_j added to its rows in global memory.
//      dS is linear in dP, so the chunks' dS^c sum to dS: a group wider than one CTA's columns
//      splits into chunks that each add their share of dK and dQ.
//   4. RoPE only: dC and dB turned back by the transpose of the rotation.
// Deterministic, no atomics: a CTA owns its dx rows and columns. dQ_i receives one addition per
// (j, c) with j <= i, and dK_j one per c: each addition waits for its turn on a counter (turn
// j * chunks + c for dQ_i, c for dK_j), so the sum has one fixed order. The grid is ordered by
// (j, c) first, so every CTA waited for has a smaller block index: it was started before (GPUs
// start blocks in index order) and nothing waits on a block that cannot run. Key tile 0, the
// heaviest (it sees every query tile), starts first.
//
// Storage: bf16 / fp16 on the tensor cores (mma.sync m16n8k16 from warp_mma.cuh), float32
// accumulation; float on tf32 tensor cores as 3xTF32 (float32 accuracy). P and dS are rounded to
// T before the products that read them, as the forward rounds P.
#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cuda/attention.cuh"
#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/backend/cuda/device_attributes.cuh"
#include "transmamba/backend/cuda/types.cuh"
#include "transmamba/backend/cuda/warp_mma.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/rotary.hpp"
#include "transmamba/core/ssm_grads.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/attention.hpp"

namespace transmamba {

// Tuning of the key-tile kernel (kept out of the algorithm). 8 warps over 64 queries x 64 keys;
// the CTA holds dV (64 keys x value_cols) and dK (64 x d_state) in registers. 16-bit: 256 columns
// (253 registers, no spill, 206 KB of shared memory at d_state 128): a wider chunk recomputes S,
// dK and dQ for fewer chunks (a g = 1 group of 2048 columns executes 7168 instead of 10240 flops
// per score pair at 128 columns).
template <class T>
struct cuda_attention_backward_tuning {
    static constexpr bool wide = !std::is_same_v<T, float>;
    static constexpr int warps = 8;
    static constexpr int query_tile = 64;
    static constexpr int key_tile = 64;
    static constexpr int value_cols = wide ? 256 : 64;  // float: half the columns, its tiles take twice the bytes
    static constexpr int stages = wide ? 2 : 1;         // query-side tiles in flight (float: shared memory is full)
};

namespace kernels::cuda::attention_bwd {

struct args {
    const void* q = nullptr;  // C (or its rotated copy), T
    index_t q_batch = 0, q_row = 0, q_group = 0;
    const void* k = nullptr;  // B (or its rotated copy), T
    index_t k_batch = 0, k_row = 0, k_group = 0;
    const void* v = nullptr;  // x, T
    index_t v_batch = 0, v_row = 0;
    const void* dyt = nullptr;  // dy in T, (batch, prefix, h p) contiguous
    const float* dy = nullptr;  // dy, float, the caller's view
    index_t dy_batch = 0, dy_row = 0;
    const float* lse = nullptr;  // (batch, g, prefix)
    index_t lse_batch = 0, lse_group = 0;
    const float* delta = nullptr;  // (batch, g, prefix) contiguous
    const float* D = nullptr;      // (h) or nullptr: no D skip
    float* dx = nullptr;           // adds into dx rows t < prefix
    index_t dx_batch = 0, dx_row = 0;
    float* dq = nullptr;  // dC (or the rotated queries' gradient), (batch, t, group, state) strides below
    index_t dq_batch = 0, dq_row = 0, dq_group = 0;
    float* dk = nullptr;
    index_t dk_batch = 0, dk_row = 0, dk_group = 0;
    int* dq_turn = nullptr;  // (batch, g, query tiles), zero at the start
    int* dk_turn = nullptr;  // (batch, g, key tiles)
    index_t prefix = 0;
    int batch = 0, groups = 0, group_cols = 0, headdim = 0, tiles = 0, chunks = 0;
    float scale = 0, scale_log2 = 0;
};

// A cross-CTA turn: thread 0 waits until the counter reads `turn` (acquire), the CTA follows.
__device__ inline void wait_turn(const int* counter, int turn) {
    if (threadIdx.x == 0) {
        int seen;
        for (;;) {
            asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
            if (seen == turn) break;
            __nanosleep(64);
        }
    }
    __syncthreads();
}
// Every thread's writes made visible, then the next turn handed on (release).
__device__ inline void pass_turn(int* counter, int next) {
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) asm volatile("st.release.gpu.global.b32 [%0], %1;" ::"l"(counter), "r"(next) : "memory");
}

// Rows x Cols of T from global (rows `row_stride` apart) into shared memory at pitch Pitch,
// 16 bytes per cp.async; rows >= rows_valid and columns >= cols_valid are zero-filled.
template <class T, int Rows, int Cols, int Pitch, int Threads>
__device__ inline void load_tile(T* dst, const T* src, index_t row_stride, int rows_valid, int cols_valid) {
    constexpr int per = 16 / int(sizeof(T));
    constexpr int chunks = Rows * Cols / per;
    for (int idx = static_cast<int>(threadIdx.x); idx < chunks; idx += Threads) {
        const int r = idx / (Cols / per), c = idx % (Cols / per) * per;
        const bool valid = r < rows_valid && c < cols_valid;
        prefill::cp_async_16(prefill::smem_address(dst + r * Pitch + c), valid ? src + r * row_stride + c : src, valid);
    }
}

// Delta and dy in T. One warp per (sequence, query, group).
template <class T>
__global__ void prepare_kernel(const float* __restrict__ y, index_t y_batch, index_t y_row, const float* __restrict__ dy,
                               index_t dy_batch, index_t dy_row, const T* __restrict__ x, index_t x_batch,
                               index_t x_row, const float* __restrict__ D, index_t batch, index_t prefix, int groups,
                               int group_cols, int headdim, T* __restrict__ dyt, float* __restrict__ delta) {
    const int lane = static_cast<int>(threadIdx.x % 32);
    const index_t warps = index_t(gridDim.x) * blockDim.x / 32;
    for (index_t warp = (blockIdx.x * index_t(blockDim.x) + threadIdx.x) / 32; warp < batch * prefix * groups;
         warp += warps) {
    const int grp = static_cast<int>(warp % groups);
    const index_t t = (warp / groups) % prefix, b = warp / (index_t(groups) * prefix);
    const index_t col0 = index_t(grp) * group_cols;
    const float* yr = y + b * y_batch + t * y_row + col0;
    const float* gr = dy + b * dy_batch + t * dy_row + col0;
    const T* xr = x + b * x_batch + t * x_row + col0;
    T* out = dyt + (b * prefix + t) * (index_t(groups) * group_cols) + col0;
    float sum = 0.f;
    for (int c = lane; c < group_cols; c += 32) {
        const float g = gr[c];
        const float d = D != nullptr ? D[(col0 + c) / headdim] : 0.f;
        sum += g * (yr[c] - d * to_float(xr[c]));
        out[c] = from_float<T>(g);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) delta[(b * groups + grp) * prefix + t] = sum;
    }
}

// dD(b, head) += sum over t < prefix of dy . x. One block per (sequence, head).
template <class T, int Threads>
__global__ void __launch_bounds__(Threads) skip_d_kernel(const float* __restrict__ dy, index_t dy_batch, index_t dy_row,
                                                         const T* __restrict__ x, index_t x_batch, index_t x_row,
                                                         index_t prefix, int heads, int headdim, float* __restrict__ dD,
                                                         index_t dD_batch) {
    const int head = static_cast<int>(blockIdx.x % heads);
    const index_t b = blockIdx.x / heads;
    float sum = 0.f;
    for (index_t i = threadIdx.x; i < prefix * headdim; i += Threads) {
        const index_t t = i / headdim, c = index_t(head) * headdim + i % headdim;
        sum += dy[b * dy_batch + t * dy_row + c] * to_float(x[b * x_batch + t * x_row + c]);
    }
    using reduce = cub::BlockReduce<float, Threads>;
    __shared__ typename reduce::TempStorage storage;
    const float total = reduce(storage).Sum(sum);
    if (threadIdx.x == 0) dD[b * dD_batch + head] += total;
}

// Gradients of the rotated queries and keys turned back by the inverse rotation, added into dC, dB.
__global__ void rope_back_kernel(const float* __restrict__ dq_rot, const float* __restrict__ dk_rot, index_t batch,
                                 index_t prefix, int groups, int n, double theta, float* __restrict__ dC,
                                 float* __restrict__ dB, index_t g_batch, index_t g_row, index_t g_group) {
    const int half = n / 2;
    const index_t total = batch * prefix * groups * half;
    for (index_t idx = blockIdx.x * index_t(blockDim.x) + threadIdx.x; idx < total;
         idx += index_t(gridDim.x) * blockDim.x) {
        const int i = static_cast<int>(idx % half);
        const index_t row = idx / half;  // ((b * prefix + t) * groups + grp), as the rotated copies
        const int grp = static_cast<int>(row % groups);
        const index_t bt = row / groups, t = bt % prefix, b = bt / prefix;
        rotation r = rope_rotation(t, i, n, theta);
        r.sin = -r.sin;
        const float* q = dq_rot + row * n;
        const float* k = dk_rot + row * n;
        const auto dq = rope_rotate(q[i], q[i + half], r);
        const auto dk = rope_rotate(k[i], k[i + half], r);
        const index_t at = b * g_batch + t * g_row + grp * g_group;
        dC[at + i] += dq.first;
        dC[at + i + half] += dq.second;
        dB[at + i] += dk.first;
        dB[at + i + half] += dk.second;
    }
}

// Shared memory of the key-tile kernel, in bytes from the base (host and device agree on it).
template <class T, int N, class Tuning>
struct key_tile_smem {
    static constexpr int BR = Tuning::query_tile, BC = Tuning::key_tile, VC = Tuning::value_cols;
    static constexpr int pad = 16 / int(sizeof(T));  // 16 bytes: rows an odd number of 16-byte units apart
    static constexpr int QP = N + pad, VP = VC + pad, PP = BC + pad, AP = N + 4;
    static constexpr std::size_t k = 0;
    static constexpr std::size_t v = k + sizeof(T) * BC * QP;
    static constexpr std::size_t q = v + sizeof(T) * BC * VP;                   // stages x BR x QP
    static constexpr std::size_t o = q + sizeof(T) * Tuning::stages * BR * QP;  // stages x BR x VP (dO)
    static constexpr std::size_t p = o + sizeof(T) * Tuning::stages * BR * VP;  // BR x PP
    static constexpr std::size_t ds = p + sizeof(T) * BR * PP;                 // BR x PP
    static constexpr std::size_t acc = ds + sizeof(T) * BR * PP;               // float BR x AP (dQ, dK staging)
    static constexpr std::size_t lse = acc + sizeof(float) * std::max(BR, BC) * AP;  // stages x BR
    static constexpr std::size_t delta = lse + sizeof(float) * Tuning::stages * BR;
    static constexpr std::size_t bytes = delta + sizeof(float) * Tuning::stages * BR;
    static_assert(v % 16 == 0 && q % 16 == 0 && o % 16 == 0 && p % 16 == 0 && ds % 16 == 0 && acc % 16 == 0);
};

template <class T, int N, class Tuning>
__global__ void __launch_bounds__(Tuning::warps * 32, 1) key_tile_kernel(const args a) {
    namespace m = mma;
    using layout = key_tile_smem<T, N, Tuning>;
    constexpr int threads = Tuning::warps * 32, stages = Tuning::stages;
    constexpr int BR = layout::BR, BC = layout::BC, VC = layout::VC;
    constexpr int QP = layout::QP, VP = layout::VP, PP = layout::PP, AP = layout::AP;
    constexpr int KS = m::k_step<T>;
    static_assert(Tuning::warps == 8 && BR == 64 && BC == 64, "the warp layout below is for 8 warps over 64 x 64");
    // S, dP (64 x 64): warp (w % 4, w / 4) owns 16 rows x 32 keys. dV (64 x VC), dK (64 x N), dQ (64 x N):
    // 16 rows x half the columns (N = 16: one warp column, warps 4..7 sit out dK and dQ).
    constexpr int nk_warps = N >= 32 ? 2 : 1, n_cols = N / nk_warps, v_cols = VC / 2;
    static_assert(v_cols % 16 == 0 && n_cols % 16 == 0);

    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* sK = reinterpret_cast<T*>(smem_raw + layout::k);
    T* sV = reinterpret_cast<T*>(smem_raw + layout::v);
    T* sQ0 = reinterpret_cast<T*>(smem_raw + layout::q);
    T* sO0 = reinterpret_cast<T*>(smem_raw + layout::o);
    T* sP = reinterpret_cast<T*>(smem_raw + layout::p);
    T* sdS = reinterpret_cast<T*>(smem_raw + layout::ds);
    float* sAcc = reinterpret_cast<float*>(smem_raw + layout::acc);
    float* sLse0 = reinterpret_cast<float*>(smem_raw + layout::lse);
    float* sDelta0 = reinterpret_cast<float*>(smem_raw + layout::delta);

    // Block order: (key tile, chunk) slowest, so that every turn waited for belongs to an earlier block.
    const int slices = a.groups * a.batch;
    const int bid = static_cast<int>(blockIdx.x);
    const int jc = bid / slices, j = jc / a.chunks, chunk = jc % a.chunks;
    const int grp = (bid % slices) / a.batch, b = bid % a.batch;
    const index_t k0 = index_t(j) * BC;
    const int keys_valid = static_cast<int>(std::min<index_t>(BC, a.prefix - k0));
    const int c0 = chunk * VC;
    const int cols_valid = std::min(VC, a.group_cols - c0);
    const index_t hp = index_t(a.groups) * a.group_cols;
    const index_t col_base = index_t(grp) * a.group_cols + c0;  // the chunk's first channel of the row

    const T* gQ = static_cast<const T*>(a.q) + b * a.q_batch + grp * a.q_group;
    const T* gK = static_cast<const T*>(a.k) + b * a.k_batch + grp * a.k_group + k0 * a.k_row;
    const T* gV = static_cast<const T*>(a.v) + b * a.v_batch + k0 * a.v_row + col_base;
    const T* gO = static_cast<const T*>(a.dyt) + b * a.prefix * hp + col_base;
    const float* gLse = a.lse + b * a.lse_batch + grp * a.lse_group;
    const float* gDelta = a.delta + (index_t(b) * a.groups + grp) * a.prefix;

    const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
    const int wr = warp % 4, wc = warp / 4;
    const int gq = lane >> 2, tq = lane & 3;

    auto load_query_side = [&](int i, int st) {
        const index_t q0 = index_t(i) * BR;
        const int rows = static_cast<int>(std::min<index_t>(BR, a.prefix - q0));
        load_tile<T, BR, N, QP, threads>(sQ0 + st * BR * QP, gQ + q0 * a.q_row, a.q_row, rows, N);
        load_tile<T, BR, VC, VP, threads>(sO0 + st * BR * VP, gO + q0 * hp, hp, rows, cols_valid);
        for (int r = tid; r < BR; r += threads) {
            const bool valid = r < rows;
            sLse0[st * BR + r] = valid ? gLse[q0 + r] * 1.4426950408889634f : INFINITY;
            sDelta0[st * BR + r] = valid && chunk == 0 ? gDelta[q0 + r] : 0.f;
        }
    };

    m::frag_c dv[v_cols / 8], dk[n_cols / 8];
#pragma unroll
    for (int t = 0; t < v_cols / 8; ++t) m::zero(dv[t]);
#pragma unroll
    for (int t = 0; t < n_cols / 8; ++t) m::zero(dk[t]);

    load_tile<T, BC, N, QP, threads>(sK, gK, a.k_row, keys_valid, N);
    load_tile<T, BC, VC, VP, threads>(sV, gV, a.v_row, keys_valid, cols_valid);
    load_query_side(j, 0);
    prefill::cp_async_commit();

    for (int i = j; i < a.tiles; ++i) {
        const int st = stages == 2 ? (i - j) & 1 : 0;
        const index_t q0 = index_t(i) * BR;
        if constexpr (stages == 2) {
            if (i + 1 < a.tiles) load_query_side(i + 1, st ^ 1);
            prefill::cp_async_commit();
            prefill::cp_async_wait<1>();
        } else {
            if (i > j) {  // the previous tile's readers passed the barrier that ends its turn
                load_query_side(i, 0);
                prefill::cp_async_commit();
            }
            prefill::cp_async_wait<0>();
        }
        __syncthreads();
        const T* sQ = sQ0 + st * BR * QP;
        const T* sO = sO0 + st * BR * VP;
        const float* sLse = sLse0 + st * BR;
        const float* sDelta = sDelta0 + st * BR;

        // S and dP: this warp's 16 rows x 32 keys.
        m::frag_c s[4], dp[4];
#pragma unroll
        for (int t = 0; t < 4; ++t) {
            m::zero(s[t]);
            m::zero(dp[t]);
        }
#pragma unroll
        for (int kk = 0; kk < N; kk += KS) {
            m::frag_a<T> fa;
            m::load_a_mk(fa, sQ, QP, wr * 16, kk);
#pragma unroll
            for (int np = 0; np < 2; ++np) {
                m::frag_b<T> fb[2];
                m::load_b2_nk(fb, sK, QP, wc * 32 + np * 16, kk);
                m::mma(s[2 * np], fa, fb[0]);
                m::mma(s[2 * np + 1], fa, fb[1]);
            }
        }
        const int cols_k = (cols_valid + KS - 1) / KS * KS;  // a narrow group skips its zero columns
#pragma unroll 4
        for (int kk = 0; kk < cols_k; kk += KS) {
            m::frag_a<T> fa;
            m::load_a_mk(fa, sO, VP, wr * 16, kk);
#pragma unroll
            for (int np = 0; np < 2; ++np) {
                m::frag_b<T> fb[2];
                m::load_b2_nk(fb, sV, VP, wc * 32 + np * 16, kk);
                m::mma(dp[2 * np], fa, fb[0]);
                m::mma(dp[2 * np + 1], fa, fb[1]);
            }
        }
        // P and scale * dS into shared memory (T). Element e of tile t: row g + 8 (e / 2), key 2 t + e % 2.
#pragma unroll
        for (int t = 0; t < 4; ++t)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = wr * 16 + gq + 8 * h, key = wc * 32 + t * 8 + 2 * tq;
                const index_t query = q0 + row;
                float pv[2], dsv[2];
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const bool visible = k0 + key + e <= query && query < a.prefix;
                    const float pe = visible ? prefill::exp2_approx(s[t].v[2 * h + e] * a.scale_log2 - sLse[row]) : 0.f;
                    pv[e] = pe;
                    dsv[e] = pe * (dp[t].v[2 * h + e] - sDelta[row]) * a.scale;
                }
                if constexpr (m::is_16bit<T>) {
                    *reinterpret_cast<std::uint32_t*>(sP + row * PP + key) = m::pack2<T>(pv[0], pv[1]);
                    *reinterpret_cast<std::uint32_t*>(sdS + row * PP + key) = m::pack2<T>(dsv[0], dsv[1]);
                } else {
                    *reinterpret_cast<float2*>(sP + row * PP + key) = make_float2(pv[0], pv[1]);
                    *reinterpret_cast<float2*>(sdS + row * PP + key) = make_float2(dsv[0], dsv[1]);
                }
            }
        __syncthreads();

        // dV_j += P^T dO_i (keys of wr, columns of wc); dK_j += dS^T Q_i; dQ_i = dS K_j.
        if (wc * v_cols < cols_valid) {
#pragma unroll
        for (int kk = 0; kk < BR; kk += KS) {
            m::frag_a<T> fa;
            m::load_a_km(fa, sP, PP, wr * 16, kk);
#pragma unroll
            for (int np = 0; np < v_cols / 16; ++np) {
                m::frag_b<T> fb[2];
                m::load_b2_kn(fb, sO, VP, wc * v_cols + np * 16, kk);
                m::mma(dv[2 * np], fa, fb[0]);
                m::mma(dv[2 * np + 1], fa, fb[1]);
            }
        }
        }
        m::frag_c dq[n_cols / 8];
        if (wc < nk_warps) {
#pragma unroll
            for (int kk = 0; kk < BR; kk += KS) {
                m::frag_a<T> fa;
                m::load_a_km(fa, sdS, PP, wr * 16, kk);
#pragma unroll
                for (int np = 0; np < n_cols / 16; ++np) {
                    m::frag_b<T> fb[2];
                    m::load_b2_kn(fb, sQ, QP, wc * n_cols + np * 16, kk);
                    m::mma(dk[2 * np], fa, fb[0]);
                    m::mma(dk[2 * np + 1], fa, fb[1]);
                }
            }
#pragma unroll
            for (int t = 0; t < n_cols / 8; ++t) m::zero(dq[t]);
#pragma unroll
            for (int kk = 0; kk < BC; kk += KS) {
                m::frag_a<T> fa;
                m::load_a_mk(fa, sdS, PP, wr * 16, kk);
#pragma unroll
                for (int np = 0; np < n_cols / 16; ++np) {
                    m::frag_b<T> fb[2];
                    m::load_b2_kn(fb, sK, QP, wc * n_cols + np * 16, kk);
                    m::mma(dq[2 * np], fa, fb[0]);
                    m::mma(dq[2 * np + 1], fa, fb[1]);
                }
            }
#pragma unroll
            for (int t = 0; t < n_cols / 8; ++t)
#pragma unroll
                for (int h = 0; h < 2; ++h)
                    *reinterpret_cast<float2*>(sAcc + (wr * 16 + gq + 8 * h) * AP + wc * n_cols + t * 8 + 2 * tq) =
                        make_float2(dq[t].v[2 * h], dq[t].v[2 * h + 1]);
        }
        __syncthreads();
        // dQ_i's turn: (j, chunk) in order over every key tile and chunk that reaches it.
        int* turn = a.dq_turn + (index_t(b) * a.groups + grp) * a.tiles + i;
        wait_turn(turn, j * a.chunks + chunk);
        {
            const int rows = static_cast<int>(std::min<index_t>(BR, a.prefix - q0));
            float* dst = a.dq + b * a.dq_batch + grp * a.dq_group + q0 * a.dq_row;
            for (int idx = tid; idx < rows * N; idx += threads) {
                const int r = idx / N, c = idx % N;
                float* at = dst + r * a.dq_row + c;
                __stcg(at, __ldcg(at) + sAcc[r * AP + c]);
            }
        }
        pass_turn(turn, j * a.chunks + chunk + 1);  // its barrier also ends this tile's reads of shared memory
    }

    // dx_j (this chunk's columns) += dV (+ D dy): this CTA's rows and columns alone.
#pragma unroll
    for (int t = 0; t < v_cols / 8; ++t)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int key = wr * 16 + gq + 8 * h, col = wc * v_cols + t * 8 + 2 * tq;
            if (key >= keys_valid || col >= cols_valid) continue;
            const index_t tk = k0 + key;
            float2 add = make_float2(dv[t].v[2 * h], dv[t].v[2 * h + 1]);
            if (a.D != nullptr) {
                const float d = a.D[(col_base + col) / a.headdim];  // a pair never crosses a head (p even)
                const float2 g = *reinterpret_cast<const float2*>(a.dy + b * a.dy_batch + tk * a.dy_row + col_base + col);
                add.x += d * g.x;
                add.y += d * g.y;
            }
            float2* at = reinterpret_cast<float2*>(a.dx + b * a.dx_batch + tk * a.dx_row + col_base + col);
            float2 cur = *at;
            cur.x += add.x;
            cur.y += add.y;
            *at = cur;
        }
    // dK_j: staged, then added on its turn (one per chunk).
    if (wc < nk_warps) {
#pragma unroll
        for (int t = 0; t < n_cols / 8; ++t)
#pragma unroll
            for (int h = 0; h < 2; ++h)
                *reinterpret_cast<float2*>(sAcc + (wr * 16 + gq + 8 * h) * AP + wc * n_cols + t * 8 + 2 * tq) =
                    make_float2(dk[t].v[2 * h], dk[t].v[2 * h + 1]);
    }
    __syncthreads();
    int* turn = a.dk_turn + (index_t(b) * a.groups + grp) * a.tiles + j;
    wait_turn(turn, chunk);
    {
        float* dst = a.dk + b * a.dk_batch + grp * a.dk_group + k0 * a.dk_row;
        for (int idx = tid; idx < keys_valid * N; idx += threads) {
            const int r = idx / N, c = idx % N;
            float* at = dst + r * a.dk_row + c;
            __stcg(at, __ldcg(at) + sAcc[r * AP + c]);
        }
    }
    pass_turn(turn, chunk + 1);
}

}  // namespace kernels::cuda::attention_bwd

template <attention_policy Variant>
struct attention_backward_kernel<Variant, cuda> {
    template <class T>
    using tuning = cuda_attention_backward_tuning<T>;

    template <class T>
    struct scratch {
        T* dyt = nullptr;         // (batch, prefix, h p): dy in T
        float* delta = nullptr;   // (batch, g, prefix)
        int* turns = nullptr;     // dQ then dK turn counters, (batch, g, tiles) each
        T* rotated_c = nullptr;   // RoPE: (batch, prefix, g, n), as the forward rotates them
        T* rotated_b = nullptr;
        float* dq_rot = nullptr;  // RoPE: gradients of the rotated C and B, (batch, prefix, g, n)
        float* dk_rot = nullptr;
    };
    template <class T>
    static scratch<T> layout(workspace_arena& arena, const mixer_config& cfg, index_t batch, index_t prefix) {
        const auto rows = static_cast<std::size_t>(batch * prefix);
        const auto g = static_cast<std::size_t>(cfg.ngroups), n = static_cast<std::size_t>(cfg.d_state);
        const auto tiles = static_cast<std::size_t>((prefix + tuning<T>::key_tile - 1) / tuning<T>::key_tile);
        scratch<T> s;
        s.dyt = arena.take<T>(rows * static_cast<std::size_t>(cfg.d_inner()));
        s.delta = arena.take<float>(rows * g);
        s.turns = arena.take<int>(2 * static_cast<std::size_t>(batch) * g * tiles);
        if constexpr (Variant::position::rotary) {
            s.rotated_c = arena.take<T>(rows * g * n);
            s.rotated_b = arena.take<T>(rows * g * n);
            s.dq_rot = arena.take<float>(rows * g * n);
            s.dk_rot = arena.take<float>(rows * g * n);
        }
        return s;
    }
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t batch, index_t prefix) {
        workspace_arena measure;
        layout<T>(measure, cfg, batch, prefix);
        return measure.used();
    }

    // y: the forward's output (batch, L, h, p) on rows t < prefix; lse (batch, g, prefix) as the
    // forward kept it; dy the gradient of y. Adds into grads.x, .B, .C on rows t < prefix and into
    // grads.D (the caller zeroes them once; the mixer's three parts add into the same views).
    template <class T>
    static void run(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, index_t prefix,
                    tensor_view<const float, 4> y, tensor_view<const float, 3> lse, tensor_view<const float, 4> dy,
                    const ssm_grads<float>& grads, workspace_span span) {
        static_assert(cuda_storage_type<T>, "CUDA attention backward takes float, __nv_bfloat16 or __half");
        if (prefix <= 0) return;
        namespace k = kernels::cuda;
        namespace kb = kernels::cuda::attention_bwd;
        const index_t batch = in.batch(), L = in.seqlen(), g = in.ngroups(), n = in.d_state(), p = in.headdim();
        const index_t h = in.nheads();
        require(prefix <= L, "attention backward: prefix P = ", prefix, " exceeds the sequence length L = ", L);
        require(n == 16 || n == 32 || n == 64 || n == 128,
                "attention backward (CUDA): d_state must be one of 16, 32, 64, 128, got ", n);
        require(p % 16 == 0, "attention backward (CUDA): headdim must be a multiple of 16, got ", p);
        require(g > 0 && h % g == 0, "attention backward: ngroups = ", g, " does not divide nheads = ", h);
        expect_shape(lse, "lse", {batch, g, prefix});
        expect_shape(y, "y", {batch, L, h, p});
        expect_shape(dy, "dy", {batch, L, h, p});
        require(lse.stride(2) == 1, "attention backward: lse must be contiguous along the queries");
        require(in.x.stride(3) == 1 && in.x.stride(2) == p && grads.x.stride(3) == 1 && grads.x.stride(2) == p &&
                    dy.stride(3) == 1 && dy.stride(2) == p && y.stride(3) == 1 && y.stride(2) == p,
                "attention backward: the heads of x, dx, y and dy must be adjacent channels of one row");
        require(in.B.stride(3) == 1 && in.C.stride(3) == 1 && grads.B.stride(3) == 1 && grads.C.stride(3) == 1,
                "attention backward: B, C and their gradients must be contiguous along d_state");
        require(dy.stride(1) % 2 == 0 && dy.stride(0) % 2 == 0 && grads.x.stride(1) % 2 == 0 &&
                    grads.x.stride(0) % 2 == 0 && reinterpret_cast<std::uintptr_t>(dy.data()) % 8 == 0 &&
                    reinterpret_cast<std::uintptr_t>(grads.x.data()) % 8 == 0,
                "attention backward: dy and dx rows must start at 8-byte aligned addresses");
        auto aligned = [](const void* ptr, index_t row, index_t batch_stride) {
            return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0 && (row * index_t(sizeof(T))) % 16 == 0 &&
                   (batch_stride * index_t(sizeof(T))) % 16 == 0;
        };
        require(aligned(in.x.data(), in.x.stride(1), in.x.stride(0)) && aligned(in.B.data(), in.B.stride(1), in.B.stride(0)) &&
                    aligned(in.C.data(), in.C.stride(1), in.C.stride(0)) && (in.B.stride(2) * index_t(sizeof(T))) % 16 == 0,
                "attention backward (CUDA): x, B and C rows must start at 16-byte aligned addresses");
        require(batch * g <= (index_t(1) << 24), "attention backward: batch * ngroups too large");

        workspace_arena arena(span);
        const auto s = layout<T>(arena, cfg, batch, prefix);
        const int group_cols = static_cast<int>(h / g * p);

        // 1. Delta and dy in T.
        {
            const std::size_t warps = static_cast<std::size_t>(batch * prefix * g);
            kb::prepare_kernel<T><<<k::blocks_for(warps * 32, 256), 256, 0, ctx.stream>>>(
                y.data(), y.stride(0), y.stride(1), dy.data(), dy.stride(0), dy.stride(1), in.x.data(), in.x.stride(0),
                in.x.stride(1), Variant::skip_D ? in.D : nullptr, batch, prefix, static_cast<int>(g), group_cols,
                static_cast<int>(p), s.dyt, s.delta);
            k::check_launch("attention backward prepare_kernel");
        }
        // 2. dD.
        if constexpr (Variant::skip_D) {
            constexpr int threads = 256;
            kb::skip_d_kernel<T, threads><<<static_cast<unsigned>(batch * h), threads, 0, ctx.stream>>>(
                dy.data(), dy.stride(0), dy.stride(1), in.x.data(), in.x.stride(0), in.x.stride(1), prefix,
                static_cast<int>(h), static_cast<int>(p), grads.D.data(), grads.D.stride(0));
            k::check_launch("attention backward skip_d_kernel");
        }

        kb::args a;
        a.q = in.C.data();
        a.q_batch = in.C.stride(0), a.q_row = in.C.stride(1), a.q_group = in.C.stride(2);
        a.k = in.B.data();
        a.k_batch = in.B.stride(0), a.k_row = in.B.stride(1), a.k_group = in.B.stride(2);
        a.dq = grads.C.data();
        a.dq_batch = grads.C.stride(0), a.dq_row = grads.C.stride(1), a.dq_group = grads.C.stride(2);
        a.dk = grads.B.data();
        a.dk_batch = grads.B.stride(0), a.dk_row = grads.B.stride(1), a.dk_group = grads.B.stride(2);
        const index_t rot_rows = batch * prefix * g;
        if constexpr (Variant::position::rotary) {
            require(n % 2 == 0, "RoPE attention needs an even d_state, got ", n);
            kernels::cuda::prefill::rope_rotate_kernel<T>
                <<<k::blocks_for(static_cast<std::size_t>(rot_rows * (n / 2)), 256), 256, 0, ctx.stream>>>(
                    in.C.data(), in.B.data(), in.C.stride(0), in.C.stride(1), in.C.stride(2), batch, prefix,
                    static_cast<int>(g), static_cast<int>(n), static_cast<double>(Variant::position::theta), s.rotated_c,
                    s.rotated_b);
            k::check_launch("attention backward rope_rotate_kernel");
            const std::size_t rotated_bytes = sizeof(float) * static_cast<std::size_t>(rot_rows * n);
            k::check_cuda(cudaMemsetAsync(s.dq_rot, 0, rotated_bytes, ctx.stream), "cudaMemsetAsync (attention backward, dC rotated)");
            k::check_cuda(cudaMemsetAsync(s.dk_rot, 0, rotated_bytes, ctx.stream), "cudaMemsetAsync (attention backward, dB rotated)");
            a.q = s.rotated_c;
            a.k = s.rotated_b;
            a.q_batch = a.k_batch = prefix * g * n;
            a.q_row = a.k_row = g * n;
            a.q_group = a.k_group = n;
            a.dq = s.dq_rot;
            a.dk = s.dk_rot;
            a.dq_batch = a.dk_batch = prefix * g * n;
            a.dq_row = a.dk_row = g * n;
            a.dq_group = a.dk_group = n;
        }
        a.v = in.x.data();
        a.v_batch = in.x.stride(0), a.v_row = in.x.stride(1);
        a.dyt = s.dyt;
        a.dy = dy.data();
        a.dy_batch = dy.stride(0), a.dy_row = dy.stride(1);
        a.lse = lse.data();
        a.lse_batch = lse.stride(0), a.lse_group = lse.stride(1);
        a.delta = s.delta;
        a.D = Variant::skip_D ? in.D : nullptr;
        a.dx = grads.x.data();
        a.dx_batch = grads.x.stride(0), a.dx_row = grads.x.stride(1);
        a.prefix = prefix;
        a.batch = static_cast<int>(batch);
        a.groups = static_cast<int>(g);
        a.group_cols = group_cols;
        a.headdim = static_cast<int>(p);
        const double scale = Variant::scale::value(n);
        a.scale = static_cast<float>(scale);
        a.scale_log2 = static_cast<float>(scale * 1.4426950408889634);

        switch (n) {
            case 16: launch<T, 16>(ctx, a, s); break;
            case 32: launch<T, 32>(ctx, a, s); break;
            case 64: launch<T, 64>(ctx, a, s); break;
            default: launch<T, 128>(ctx, a, s); break;
        }

        if constexpr (Variant::position::rotary) {
            kb::rope_back_kernel<<<k::blocks_for(static_cast<std::size_t>(rot_rows * (n / 2)), 256), 256, 0, ctx.stream>>>(
                s.dq_rot, s.dk_rot, batch, prefix, static_cast<int>(g), static_cast<int>(n),
                static_cast<double>(Variant::position::theta), grads.C.data(), grads.B.data(), grads.C.stride(0),
                grads.C.stride(1), grads.C.stride(2));
            k::check_launch("attention backward rope_back_kernel");
        }
    }

private:
    template <class T, int N>
    static void launch(const cuda_context& ctx, kernels::cuda::attention_bwd::args& a, const scratch<T>& s) {
        namespace k = kernels::cuda;
        namespace kb = kernels::cuda::attention_bwd;
        using tune = tuning<T>;
        using smem = kb::key_tile_smem<T, N, tune>;
        a.tiles = static_cast<int>((a.prefix + tune::key_tile - 1) / tune::key_tile);
        a.chunks = (a.group_cols + tune::value_cols - 1) / tune::value_cols;
        const std::size_t turns = static_cast<std::size_t>(a.batch) * a.groups * a.tiles;
        k::check_cuda(cudaMemsetAsync(s.turns, 0, sizeof(int) * 2 * turns, ctx.stream),
                      "cudaMemsetAsync (attention backward turns)");
        a.dq_turn = s.turns;
        a.dk_turn = s.turns + turns;
        const std::size_t blocks = std::size_t(a.tiles) * a.chunks * a.groups * a.batch;
        require(blocks < (std::size_t(1) << 31), "attention backward: too many tiles for one launch");
        constexpr auto kernel = kb::key_tile_kernel<T, N, tune>;
        k::allow_shared_memory<kernel>(smem::bytes, "cudaFuncSetAttribute (attention backward key_tile_kernel)");
        kernel<<<static_cast<unsigned>(blocks), tune::warps * 32, smem::bytes, ctx.stream>>>(a);
        k::check_launch("attention backward key_tile_kernel");
    }
};

}  // namespace transmamba
