#pragma once
// Causal softmax attention with Q=C, K=B, V=x over the prefix t < P, on the GPU (SPEC.md section 3).
//
// A FlashAttention-2 style tiled online softmax: no L x L matrix exists anywhere. What differs from
// a per-head attention kernel is that the heads of a group share Q=C and K=B, hence the scores and
// the softmax: one CTA takes a (query tile, group, slice of value columns) and computes its scores
// ONCE, then applies them to up to `value_cols` value columns, i.e. to several heads at once (the
// heads of a group are adjacent channels of x and of y, so a slice of heads is a slice of columns).
//
// bf16 / fp16 (tensor cores, mma.sync m16n8k16, float32 accumulation and softmax statistics):
//   per key tile, every warp computes a 16 x (key_tile / s_key_warps) piece of S = Q K^T with Q
//   held in registers; the CTA exchanges row maxima through shared memory, each warp writes its
//   piece of P = exp(S - m) to shared memory, and every warp then multiplies the whole P tile by
//   its own block of V columns (ldmatrix.trans), so no score is computed twice within a CTA.
//   The loop is software-pipelined (S of tile j+1 is interleaved with P V of tile j), two CTA
//   barriers per key tile, K and V double-buffered with cp.async 1.5 tiles ahead, and O is
//   rescaled only when a row's running max grows by more than 2^8 (see softmax_step).
// float32: a plain SIMT kernel (float32 products and sums; matches the float64 oracle to ~1e-7).
// Built for sm_90a (CMAKE_CUDA_ARCHITECTURES 90a) and run on an sm_90 device, bf16 / fp16 with
// d_state 64 or 128 go to the Hopper kernel instead (sm90/attention_sm90.cuh: wgmma, TMA, warp
// specialisation); the kernels here stay the portable path (uses_sm90 decides).
// RoPE (rotate-half) is applied by a small pass that writes rotated copies of C and B, in the
// storage type, to the scratch space; the attention kernels are the same for every variant.
// Measured figures and what bounds them: bench/cuda/attention.md.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "transmamba/backend/cuda/attention_args.cuh"
#include "transmamba/backend/cuda/device_attributes.cuh"
#include "transmamba/backend/cuda/sm90/attention_sm90.cuh"
#include "transmamba/backend/cuda/traits.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/rotary.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/attention.hpp"

namespace transmamba {

// ---------------------------------------------------------------------------------------------
// Tuning (kept out of the algorithm). One tensor-core policy per CTA value width; the width used
// for a call is picked from the group's width h/g * p (attention_kernel<., cuda>::value_width).
// ---------------------------------------------------------------------------------------------
template <int ValueCols>
struct cuda_attention_tuning;

// 8 warps, 64 queries x 512 value columns per CTA: the O tile (64 x 512 floats) fills half of the
// register file, as FA2's two CTAs of 128 x 128 do, so one CTA runs per SM (255 registers, 194 KB
// of shared memory). A 32-key tile measured 13% slower (more barriers and rescales per key).
template <>
struct cuda_attention_tuning<512> {
    static constexpr int value_cols = 512;
    static constexpr int warps = 8;
    static constexpr int query_tile = 64;
    static constexpr int key_tile = 64;
    static constexpr int pv_row_tiles = 2;  // 16-row tiles of O per warp (2 x 4 warps over 64 x 512)
    static constexpr int min_blocks_per_sm = 1;
};
// 4 heads of 64 (g = 8 of 32 heads). Measured for g = 1 too (8 slices of 256 instead of 4 of 512):
// 1.19 ms against 0.92 ms at L = 4096, the scores recomputed twice as often.
template <>
struct cuda_attention_tuning<256> {
    static constexpr int value_cols = 256;
    static constexpr int warps = 8;
    static constexpr int query_tile = 64;
    static constexpr int key_tile = 64;
    static constexpr int pv_row_tiles = 2;
    static constexpr int min_blocks_per_sm = 1;
};
// Narrow groups: small O tiles, two CTAs per SM (128 registers).
template <>
struct cuda_attention_tuning<128> {
    static constexpr int value_cols = 128;
    static constexpr int warps = 8;
    static constexpr int query_tile = 64;
    static constexpr int key_tile = 64;
    static constexpr int pv_row_tiles = 1;
    static constexpr int min_blocks_per_sm = 2;
};
template <>
struct cuda_attention_tuning<64> {
    static constexpr int value_cols = 64;
    static constexpr int warps = 8;
    static constexpr int query_tile = 64;
    static constexpr int key_tile = 64;
    static constexpr int pv_row_tiles = 1;
    static constexpr int min_blocks_per_sm = 2;
};

// CTA order (attention_tile): the keys and values of the slices of one wave take at most l2_share
// of the L2. Measured against one wave of all slices (heaviest tile first over the whole grid):
// 5-14% faster for g = 8 and g = 32 and for g = 1 at L = 16384. But a wave must also hold at least
// min_cta_waves rounds of CTAs over the whole GPU, or its causal tail (few heavy tiles) idles most
// SMs at every wave boundary: with it, g = 1 at L = 1024..4096 runs 6-12% faster (H100, bf16,
// L = 4096: 0.945 -> 0.827 ms), g = 8 and L >= 8192 unchanged (docs/PERF.md).
struct cuda_attention_schedule {
    static constexpr double l2_share = 0.5;
    static constexpr int min_cta_waves = 8;
};

// The float32 SIMT kernel.
struct cuda_attention_simt_tuning {
    static constexpr int threads = 256;
    static constexpr int query_tile = 32;
    static constexpr int key_tile = 32;
    static constexpr int value_cols = 64;
    static constexpr int threads_per_row = threads / query_tile;  // 8
};

// The prefill attention kernels and their building blocks (the nested namespace keeps these names
// apart from the other kernels' helpers in kernels::cuda).
namespace kernels::cuda::prefill {

// ---- tensor-core building blocks (sm_80+ PTX; all of it runs on sm_90) ----------------------

__device__ inline unsigned smem_address(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }

// 16 bytes global -> shared, zero-filled when !valid (nothing is read then).
__device__ inline void cp_async_16(unsigned dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(valid ? 16 : 0));
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `Pending` of this thread's most recent groups are still in flight.
template <int Pending>
__device__ inline void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}

// Four 8x8 matrices of 16-bit elements; `addr` is a shared-space address (see smem_address).
__device__ inline void ldmatrix_x4(std::uint32_t (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ inline void ldmatrix_x4_trans(std::uint32_t (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// c (16 x 8, f32) += a (16 x 16, row) * b (16 x 8, col), 16-bit operands of type T.
template <class T>
__device__ inline void mma_16816(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        static_assert(std::is_same_v<T, __half>, "tensor-core attention takes bf16 or fp16");
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

// 2^x on the special-function unit (about 2 ulp; 2^-inf = 0); the softmax needs no denormals.
__device__ inline float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Two floats as one register of two T (lo in the low half).
template <class T>
__device__ inline std::uint32_t pack2(float lo, float hi) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<const std::uint32_t*>(&v);
    } else {
        const __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<const std::uint32_t*>(&v);
    }
}

// A Rows x Cols tile of T (rows `row_stride` apart in global memory) into shared memory with rows
// Cols + 8 elements apart: 16 bytes of padding make the row pitch an odd number of 16-byte units,
// so ldmatrix's 8 row addresses hit 8 different bank groups. Rows >= rows_valid and columns >=
// cols_valid (a multiple of 8) are zero-filled: a zero key or value contributes nothing, where a
// stale one could hold a NaN that 0 * NaN would spread.
template <int Rows, int Cols, int Threads, class T>
__device__ inline void load_tile_async(unsigned dst, const T* src, index_t row_stride, int rows_valid, int cols_valid) {
    constexpr int chunks_per_row = Cols / 8;
    constexpr int rows_per_pass = Threads / chunks_per_row;
    constexpr int passes = (Rows + rows_per_pass - 1) / rows_per_pass;
    static_assert(Threads % chunks_per_row == 0, "a pass covers whole rows");
    const int r0 = static_cast<int>(threadIdx.x) / chunks_per_row, c = static_cast<int>(threadIdx.x) % chunks_per_row * 8;
    const bool col_valid = c < cols_valid;
    const T* from = src + r0 * row_stride + c;  // advanced by whole passes: one add per chunk
#pragma unroll
    for (int i = 0; i < passes; ++i) {
        const int r = r0 + i * rows_per_pass;
        if (Rows % rows_per_pass == 0 || r < Rows) {
            const bool valid = col_valid && r < rows_valid;
            cp_async_16(dst + sizeof(T) * (r * (Cols + 8) + c), valid ? from : src, valid);
        }
        from += rows_per_pass * row_stride;
    }
}

// The tensor-core kernel. Software-pipelined over key tiles j, two CTA barriers per tile:
//   phase 1 (after X_j): O += P_j V_j, interleaved with S_{j+1} = Q K_{j+1}^T and its partial row
//                        maxima (independent work: the scores' mma chain hides behind P V)
//   Y_j:                 partial maxima visible; V_j and K_{j+1} are consumed, so V_{j+2} and K_{j+3}
//                        start loading into their buffers (cp.async, 1.5 tiles ahead of use)
//   phase 2:             row maxima, P_{j+1} = exp(S_{j+1} - m) into shared memory, O rescaled
//                        (only when a row's max grew by more than 2^8: see softmax_step)
//   X_{j+1}:             P_{j+1}, V_{j+1}, K_{j+2} visible
template <class T, int N, class Tuning>
__global__ void __launch_bounds__(Tuning::warps * 32, Tuning::min_blocks_per_sm)
    attention_mma_kernel(const attention_args<T> a) {
    constexpr int threads = Tuning::warps * 32;
    constexpr int BR = Tuning::query_tile, BC = Tuning::key_tile, VC = Tuning::value_cols;
    // S = Q K^T: warp (rs, kh) owns rows rs*16.. of the query tile and keys kh*s_keys.. of the key tile.
    constexpr int s_row_warps = BR / 16;
    constexpr int s_key_warps = Tuning::warps / s_row_warps;
    constexpr int s_keys = BC / s_key_warps;
    constexpr int s_ntiles = s_keys / 8;
    // O += P V: warp (rp, cb) owns rows rp*16*MT.. and value columns cb*warp_cols.. of the tile.
    constexpr int MT = Tuning::pv_row_tiles;
    constexpr int pv_row_warps = BR / (16 * MT);
    constexpr int pv_col_warps = Tuning::warps / pv_row_warps;
    constexpr int warp_cols = VC / pv_col_warps;
    constexpr int pv_ntiles = warp_cols / 8;
    static_assert(N % 16 == 0 && BR % 16 == 0 && BC % 16 == 0);
    static_assert(Tuning::warps % s_row_warps == 0 && s_keys % 16 == 0, "S partition: whole 16-key pieces");
    static_assert(Tuning::warps % pv_row_warps == 0 && warp_cols % 16 == 0, "O partition: whole 16-column pieces");
    // k-steps of the two products.
    constexpr int s_steps = N / 16, pv_steps = BC / 16;
    // Shared-memory row pitches (elements), each an odd number of 16-byte units.
    constexpr int QP = N + 8, VP = VC + 8, PP = BC + 8;
    constexpr unsigned E = sizeof(T);

    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* sQ = reinterpret_cast<T*>(smem_raw);  // BR x QP
    T* sK = sQ + BR * QP;                    // 2 buffers of BC x QP
    T* sV = sK + 2 * BC * QP;                // 2 buffers of BC x VP
    T* sP = sV + 2 * BC * VP;                // BR x PP: P of one key tile, in T
    float* row_max = reinterpret_cast<float*>(sP + BR * PP);  // s_key_warps x BR partial maxima
    float* row_sum = row_max + s_key_warps * BR;               // s_key_warps x BR partial sums (end)

    const auto where = attention_tile::of_block(a);
    const index_t q0 = a.first_query + index_t(where.tile) * BR;
    const int rows_valid = static_cast<int>(std::min<index_t>(BR, a.prefix - q0));
    const int c0 = where.chunk * VC;
    const int cols_valid = std::min(VC, a.group_cols - c0);
    const index_t kv_end = std::min<index_t>(q0 + BR, a.prefix);  // causal: this tile sees keys [0, kv_end)
    const int key_tiles = static_cast<int>((kv_end + BC - 1) / BC);

    const T* gQ = a.q + where.b * a.q_batch + where.grp * a.q_group + q0 * a.q_row;
    const T* gK = a.k + where.b * a.k_batch + where.grp * a.k_group;
    const T* gV = a.v + where.b * a.v_batch + index_t(where.grp) * a.group_cols + c0;

    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    const int rs = warp % s_row_warps, kh = warp / s_row_warps;
    const int rp = warp % pv_row_warps, cb = warp / pv_row_warps;
    const int quad_row = lane >> 2, quad_col = (lane & 3) * 2;
    // This lane's ldmatrix row addresses (shared space, bytes); the unrolled loops add constants.
    // A operands (Q, P; rows x k): lane -> row lane % 16, k-half lane / 16.
    // B from K (keys x states, not transposed): lane -> key (lane & 7) + 8 * (lane / 16), state-half (lane / 8) & 1.
    // B from V (keys x columns, transposed): lane -> key (lane & 7) + 8 * ((lane / 8) & 1), column-half lane / 16.
    const unsigned q_addr = smem_address(sQ) + E * ((rs * 16 + (lane & 15)) * QP + (lane >> 4) * 8);
    const unsigned k_addr =
        smem_address(sK) + E * ((kh * s_keys + (lane & 7) + ((lane >> 4) << 3)) * QP + ((lane >> 3) & 1) * 8);
    const unsigned v_addr =
        smem_address(sV) + E * (((lane & 7) + ((lane >> 3) & 1) * 8) * VP + cb * warp_cols + (lane >> 4) * 8);
    const unsigned p_addr = smem_address(sP) + E * ((rp * 16 * MT + (lane & 15)) * PP + (lane >> 4) * 8);

    auto load_k = [&](int j) {  // K_j into buffer j % 2
        const index_t k0 = index_t(j) * BC;
        const int keys_valid = static_cast<int>(std::min<index_t>(BC, a.prefix - k0));
        load_tile_async<BC, N, threads>(smem_address(sK) + (j & 1) * (E * BC * QP), gK + k0 * a.k_row, a.k_row,
                                        keys_valid, N);
    };
    auto load_v = [&](int j) {  // V_j into buffer j % 2
        const index_t k0 = index_t(j) * BC;
        const int keys_valid = static_cast<int>(std::min<index_t>(BC, a.prefix - k0));
        load_tile_async<BC, VC, threads>(smem_address(sV) + (j & 1) * (E * BC * VP), gV + k0 * a.v_row, a.v_row,
                                         keys_valid, cols_valid);
    };

    std::uint32_t q_frag[s_steps][4];       // this warp's 16 query rows, all of d_state, as mma A fragments
    float s[s_ntiles][4];                   // this warp's piece of S of the next key tile
    float m_s[2] = {-INFINITY, -INFINITY};  // reference max of the S rows (scaled, log2 units)
    float l_s[2] = {0.f, 0.f};              // running sum over this warp's keys (quad-partial)
    float m_o[MT][2];                       // reference max of the O rows
    float o[MT][pv_ntiles][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        m_o[mt][0] = m_o[mt][1] = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < pv_ntiles; ++nt) o[mt][nt][0] = o[mt][nt][1] = o[mt][nt][2] = o[mt][nt][3] = 0.f;
    }

    // S piece of key tile j: zero, k-steps [ks0, ks1) accumulated, then scale + mask + row maxima.
    auto scores_zero = [&] {
#pragma unroll
        for (int nt = 0; nt < s_ntiles; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    };
    auto scores_step = [&](int j, int ks) {
        const unsigned tK = k_addr + (j & 1) * (E * BC * QP) + E * ks * 16;
#pragma unroll
        for (int np = 0; np < s_ntiles / 2; ++np) {
            std::uint32_t kf[4];
            ldmatrix_x4(kf, tK + E * np * 16 * QP);
            mma_16816<T>(s[2 * np], q_frag[ks], kf[0], kf[1]);
            mma_16816<T>(s[2 * np + 1], q_frag[ks], kf[2], kf[3]);
        }
    };
    auto scores_finish = [&](int j) {
        // Scale (log2 units, so exp2 below is exp), causal mask on the tiles that cross the diagonal:
        // key k0 + key_local is visible to query q0 + row_local iff key_local + k0 - q0 <= row_local.
        const index_t k0 = index_t(j) * BC;
        const bool diagonal = k0 + BC - 1 > q0;
        const int shift = static_cast<int>(k0 - q0) + kh * s_keys + quad_col - (rs * 16 + quad_row);
#pragma unroll
        for (int nt = 0; nt < s_ntiles; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[nt][e] *= a.scale_log2;
                if (diagonal && shift + nt * 8 + (e & 1) > (e >> 1) * 8) s[nt][e] = -INFINITY;
            }
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < s_ntiles; ++nt) {
            mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
        }
        if ((lane & 3) == 0) {
            row_max[kh * BR + rs * 16 + quad_row] = mx[0];
            row_max[kh * BR + rs * 16 + quad_row + 8] = mx[1];
        }
    };
    // After the partial maxima are visible: the rows' reference maxima, P into shared memory, O
    // rescaled. The reference max of a row moves only when the tile's max exceeds it by more than
    // max_slack (log2 units), so P <= 2^max_slack and most tiles skip the O rescale (the result
    // O / l does not depend on the reference, as long as O and l share it: the S and O roles of a
    // row take the same decisions from the same maxima). Key 0 is in tile 0 and visible to every
    // row, so the reference is finite from tile 0 on; exp2(-inf - finite) = 0 is the first rescale.
    constexpr float max_slack = 8.f;
    auto tile_max = [&](int row, float old) {
        float m = old;
#pragma unroll
        for (int w = 0; w < s_key_warps; ++w) m = fmaxf(m, row_max[w * BR + row]);
        return m;
    };
    auto softmax_step = [&] {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float m_tile = tile_max(rs * 16 + quad_row + h * 8, m_s[h]);
            if (m_tile > m_s[h] + max_slack) {
                l_s[h] *= exp2_approx(m_s[h] - m_tile);
                m_s[h] = m_tile;
            }
#pragma unroll
            for (int nt = 0; nt < s_ntiles; ++nt) {
                s[nt][2 * h] = exp2_approx(s[nt][2 * h] - m_s[h]);
                s[nt][2 * h + 1] = exp2_approx(s[nt][2 * h + 1] - m_s[h]);
                l_s[h] += s[nt][2 * h] + s[nt][2 * h + 1];
            }
        }
#pragma unroll
        for (int nt = 0; nt < s_ntiles; ++nt)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                T* dst = sP + (rs * 16 + quad_row + h * 8) * PP + kh * s_keys + nt * 8 + quad_col;
                *reinterpret_cast<std::uint32_t*>(dst) = pack2<T>(s[nt][2 * h], s[nt][2 * h + 1]);
            }
        float alpha[MT][2];
        bool moved = false;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float m_tile = tile_max(rp * 16 * MT + mt * 16 + quad_row + h * 8, m_o[mt][h]);
                alpha[mt][h] = 1.f;
                if (m_tile > m_o[mt][h] + max_slack) {
                    alpha[mt][h] = exp2_approx(m_o[mt][h] - m_tile);
                    m_o[mt][h] = m_tile;
                    moved = true;
                }
            }
        if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < pv_ntiles; ++nt) {
                    o[mt][nt][0] *= alpha[mt][0];
                    o[mt][nt][1] *= alpha[mt][0];
                    o[mt][nt][2] *= alpha[mt][1];
                    o[mt][nt][3] *= alpha[mt][1];
                }
        }
    };
    // Phase 1: O (rows of rp, columns of cb) += P_j (rows of rp) V_j (columns of cb), and when
    // WithScores, S_{j+1} with it: the score units (one K ldmatrix, two mma) are spread evenly
    // between the P V units (one V ldmatrix, 2*MT mma) in one basic block, so that the scores'
    // dependent mma chain issues between independent P V mma instead of stalling.
    constexpr int pv_units = pv_steps * (pv_ntiles / 2), s_units = s_steps * (s_ntiles / 2);
    auto phase1 = [&](int j, auto with_scores) {
        constexpr bool WithScores = decltype(with_scores)::value;
        const unsigned tV = v_addr + (j & 1) * (E * BC * VP);
        const unsigned tK = k_addr + ((j + 1) & 1) * (E * BC * QP);
        if constexpr (WithScores) {
#pragma unroll
            for (int nt = 0; nt < s_ntiles; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        }
        std::uint32_t pf[MT][4];
#pragma unroll
        for (int u = 0; u < pv_units; ++u) {
            const int kk = u / (pv_ntiles / 2), np = u % (pv_ntiles / 2);
            if (np == 0) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(pf[mt], p_addr + E * (mt * 16 * PP + kk * 16));
            }
            std::uint32_t vf[4];
            ldmatrix_x4_trans(vf, tV + E * (kk * 16 * VP + np * 16));
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                mma_16816<T>(o[mt][2 * np], pf[mt], vf[0], vf[1]);
                mma_16816<T>(o[mt][2 * np + 1], pf[mt], vf[2], vf[3]);
            }
            if constexpr (WithScores) {
#pragma unroll
                for (int us = u * s_units / pv_units; us < (u + 1) * s_units / pv_units; ++us) {
                    const int ks = us / (s_ntiles / 2), sp = us % (s_ntiles / 2);
                    std::uint32_t kf[4];
                    ldmatrix_x4(kf, tK + E * (sp * 16 * QP + ks * 16));
                    mma_16816<T>(s[2 * sp], q_frag[ks], kf[0], kf[1]);
                    mma_16816<T>(s[2 * sp + 1], q_frag[ks], kf[2], kf[3]);
                }
            }
        }
    };

    // Prologue: Q, K_0, V_0, K_1 (group 0), V_1 (group 1); S_0; K_2 (group 2); P_0.
    load_tile_async<BR, N, threads>(smem_address(sQ), gQ, a.q_row, rows_valid, N);
    load_k(0);
    load_v(0);
    if (key_tiles > 1) load_k(1);
    cp_async_commit();
    if (key_tiles > 1) load_v(1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < s_steps; ++ks) ldmatrix_x4(q_frag[ks], q_addr + E * ks * 16);
    scores_zero();
#pragma unroll
    for (int ks = 0; ks < s_steps; ++ks) scores_step(0, ks);
    scores_finish(0);
    __syncthreads();  // Y_{-1}: K_0 consumed, partial maxima of tile 0 visible
    if (key_tiles > 2) load_k(2);
    cp_async_commit();
    softmax_step();
    cp_async_wait<1>();
    __syncthreads();  // X_0

    for (int j = 0; j + 1 < key_tiles; ++j) {
        phase1(j, std::true_type{});
        scores_finish(j + 1);
        __syncthreads();  // Y_j
        if (j + 2 < key_tiles) load_v(j + 2);
        if (j + 3 < key_tiles) load_k(j + 3);
        cp_async_commit();
        softmax_step();
        cp_async_wait<1>();  // all but the group just issued: V_{j+1}, K_{j+2}
        __syncthreads();     // X_{j+1}
    }
    phase1(key_tiles - 1, std::false_type{});
    cp_async_wait<0>();

    // Row sums: each S warp holds its key pieces' sums, partial over the quad.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float l = l_s[h];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        if ((lane & 3) == 0) row_sum[kh * BR + rs * 16 + quad_row + h * 8] = l;
    }
    __syncthreads();

    // y = O / l (+ D x), rows < prefix and columns inside the group only.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = rp * 16 * MT + mt * 16 + quad_row + h * 8;
            if (r >= rows_valid) continue;
            float l = 0.f;
#pragma unroll
            for (int w = 0; w < s_key_warps; ++w) l += row_sum[w * BR + r];
            const float inv = 1.f / l;
            const index_t t = q0 + r;
            // m_o is the row's reference max in log2 units, l the sum of exp2(s - m_o).
            if (a.lse != nullptr && where.chunk == 0 && cb == 0 && (lane & 3) == 0)
                a.lse[where.b * a.lse_batch + where.grp * a.lse_group + t] =
                    (m_o[mt][h] + log2f(l)) * 0.6931471805599453f;
            float* yr = a.y + where.b * a.y_batch + t * a.y_row + index_t(where.grp) * a.group_cols + c0;
            const T* xr = gV + t * a.v_row;
#pragma unroll
            for (int nt = 0; nt < pv_ntiles; ++nt) {
                const int col = cb * warp_cols + nt * 8 + quad_col;
                if (col >= cols_valid) continue;
                float2 out = make_float2(o[mt][nt][2 * h] * inv, o[mt][nt][2 * h + 1] * inv);
                if (a.D != nullptr) {
                    const float d = a.D[(where.grp * a.group_cols + c0 + col) / a.headdim];
                    out.x += d * to_float(xr[col]);
                    out.y += d * to_float(xr[col + 1]);
                }
                *reinterpret_cast<float2*>(yr + col) = out;
            }
        }
}

// The float32 kernel: 32 queries x 64 value columns per CTA, 8 threads per query row; each thread
// holds 4 scores of its row and 8 output columns. Scores, softmax and sums in float32.
template <class Tuning>
__global__ void __launch_bounds__(Tuning::threads) attention_simt_kernel(const attention_args<float> a) {
    constexpr int BR = Tuning::query_tile, BC = Tuning::key_tile, VC = Tuning::value_cols;
    constexpr int TPR = Tuning::threads_per_row;
    constexpr int keys_per_thread = BC / TPR, cols_per_thread = VC / TPR;
    static_assert(BR * TPR == Tuning::threads && TPR <= 32 && 32 % TPR == 0);
    const int n = a.state, pitch = n + 1;  // odd pitch: threads of one row read different banks

    extern __shared__ float smem_f[];
    float* sQ = smem_f;          // BR x pitch
    float* sK = sQ + BR * pitch;  // BC x pitch
    float* sV = sK + BC * pitch;  // BC x VC
    float* sP = sV + BC * VC;     // BR x (BC + 1)

    const auto where = attention_tile::of_block(a);
    const index_t q0 = a.first_query + index_t(where.tile) * BR;
    const int rows_valid = static_cast<int>(std::min<index_t>(BR, a.prefix - q0));
    const int c0 = where.chunk * VC;
    const int cols_valid = std::min(VC, a.group_cols - c0);
    const index_t kv_end = std::min<index_t>(q0 + BR, a.prefix);
    const int key_tiles = static_cast<int>((kv_end + BC - 1) / BC);
    const float* gQ = a.q + where.b * a.q_batch + where.grp * a.q_group + q0 * a.q_row;
    const float* gK = a.k + where.b * a.k_batch + where.grp * a.k_group;
    const float* gV = a.v + where.b * a.v_batch + index_t(where.grp) * a.group_cols + c0;

    const int tid = static_cast<int>(threadIdx.x), r = tid / TPR, sub = tid % TPR;
    for (int i = tid; i < BR * n; i += Tuning::threads) {
        const int rr = i / n, c = i % n;
        sQ[rr * pitch + c] = rr < rows_valid ? gQ[rr * a.q_row + c] : 0.f;
    }
    float m = -INFINITY, l = 0.f, o[cols_per_thread] = {};
    for (int j = 0; j < key_tiles; ++j) {
        const index_t k0 = index_t(j) * BC;
        const int keys_valid = static_cast<int>(std::min<index_t>(BC, a.prefix - k0));
        __syncthreads();  // the previous tile is consumed
        for (int i = tid; i < BC * n; i += Tuning::threads) {
            const int kr = i / n, c = i % n;
            sK[kr * pitch + c] = kr < keys_valid ? gK[(k0 + kr) * a.k_row + c] : 0.f;
        }
        for (int i = tid; i < BC * VC; i += Tuning::threads) {
            const int kr = i / VC, c = i % VC;
            sV[i] = (kr < keys_valid && c < cols_valid) ? gV[(k0 + kr) * a.v_row + c] : 0.f;
        }
        __syncthreads();
        float s[keys_per_thread];
        float mx = -INFINITY;
#pragma unroll
        for (int e = 0; e < keys_per_thread; ++e) {
            const int kr = sub * keys_per_thread + e;
            float dot = 0.f;
            for (int c = 0; c < n; ++c) dot = fmaf(sQ[r * pitch + c], sK[kr * pitch + c], dot);
            s[e] = (k0 + kr > q0 + r) ? -INFINITY : dot * a.scale;
            mx = fmaxf(mx, s[e]);
        }
#pragma unroll
        for (int off = 1; off < TPR; off <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        const float m_new = fmaxf(m, mx);  // finite from tile 0 on: key 0 is visible to every row
        const float alpha = expf(m - m_new);
        m = m_new;
        float sum = 0.f;
#pragma unroll
        for (int e = 0; e < keys_per_thread; ++e) {
            const float pe = expf(s[e] - m_new);
            sum += pe;
            sP[r * (BC + 1) + sub * keys_per_thread + e] = pe;
        }
        l = l * alpha + sum;
        __syncwarp();  // the row's 8 threads are lanes of one warp
#pragma unroll
        for (int cc = 0; cc < cols_per_thread; ++cc) o[cc] *= alpha;
        for (int kr = 0; kr < BC; ++kr) {
            const float pe = sP[r * (BC + 1) + kr];
#pragma unroll
            for (int cc = 0; cc < cols_per_thread; ++cc) o[cc] = fmaf(pe, sV[kr * VC + sub + cc * TPR], o[cc]);
        }
    }
#pragma unroll
    for (int off = 1; off < TPR; off <<= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
    if (r >= rows_valid) return;
    const index_t t = q0 + r;
    float* yr = a.y + where.b * a.y_batch + t * a.y_row + index_t(where.grp) * a.group_cols + c0;
    const float* xr = gV + t * a.v_row;
    const float inv = 1.f / l;
    if (a.lse != nullptr && where.chunk == 0 && sub == 0) a.lse[where.b * a.lse_batch + where.grp * a.lse_group + t] = m + logf(l);
#pragma unroll
    for (int cc = 0; cc < cols_per_thread; ++cc) {
        const int col = sub + cc * TPR;
        if (col >= cols_valid) continue;
        float out = o[cc] * inv;
        if (a.D != nullptr) out += a.D[(where.grp * a.group_cols + c0 + col) / a.headdim] * xr[col];
        yr[col] = out;
    }
}

// Rotate-half RoPE of C and B at positions t < prefix into (batch, prefix, g, n) buffers of T:
// dims i and i + n/2 turned by t * theta^(-2i/n) (core/rotary.hpp: the angle in float64).
template <class T>
__global__ void rope_rotate_kernel(const T* __restrict__ C, const T* __restrict__ B, index_t batch_stride,
                                   index_t row_stride, index_t group_stride, index_t batch, index_t prefix, int groups,
                                   int n, double theta, T* __restrict__ rc, T* __restrict__ rb) {
    const int half = n / 2;
    const index_t total = batch * prefix * groups * half;
    for (index_t idx = blockIdx.x * index_t(blockDim.x) + threadIdx.x; idx < total;
         idx += index_t(gridDim.x) * blockDim.x) {
        const int i = static_cast<int>(idx % half);
        const index_t row = idx / half;  // ((b * prefix + t) * groups + grp)
        const int grp = static_cast<int>(row % groups);
        const index_t bt = row / groups, t = bt % prefix, b = bt / prefix;
        const rotation r = rope_rotation(t, i, n, theta);
        const index_t src = b * batch_stride + t * row_stride + grp * group_stride;
        const auto c = rope_rotate(to_float(C[src + i]), to_float(C[src + i + half]), r);
        const auto k = rope_rotate(to_float(B[src + i]), to_float(B[src + i + half]), r);
        T* oc = rc + row * n;
        T* ob = rb + row * n;
        oc[i] = from_float<T>(c.first);
        oc[i + half] = from_float<T>(c.second);
        ob[i] = from_float<T>(k.first);
        ob[i + half] = from_float<T>(k.second);
    }
}

}  // namespace kernels::cuda::prefill

template <attention_policy Variant>
struct attention_kernel<Variant, cuda> {
    template <class T>
    struct scratch {
        T* rotated_c = nullptr;  // (batch, prefix, g, n), RoPE variants only
        T* rotated_b = nullptr;
    };
    template <class T>
    static scratch<T> layout(workspace_arena& arena, const mixer_config& cfg, index_t batch, index_t prefix) {
        scratch<T> s;
        if constexpr (Variant::position::rotary) {
            const auto n = static_cast<std::size_t>(batch * prefix * cfg.ngroups * cfg.d_state);
            s.rotated_c = arena.take<T>(n);
            s.rotated_b = arena.take<T>(n);
        }
        return s;
    }
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t batch, index_t prefix) {
        workspace_arena measure;
        layout<T>(measure, cfg, batch, prefix);
        return measure.used();
    }

    // The CTA value width (columns of one group that one CTA handles) for a group of `cols`
    // columns: each CTA computes S (~d_state work per query and key) once and P V (~width work),
    // so take the width with the least (d_state + width) * CTAs, padding included; ties go wider.
    static int value_width(index_t cols, index_t d_state) {
        int best = 512;
        index_t best_cost = -1;
        for (int w : {512, 256, 128, 64}) {
            const index_t cost = (cols + w - 1) / w * (d_state + w);
            if (best_cost < 0 || cost < best_cost) {
                best = w;
                best_cost = cost;
            }
        }
        return best;
    }

    // Writes y(b, t, :, :) for first_query <= t < prefix; other rows are not touched. With `lse`
    // (batch, g, prefix; contiguous along the queries), also each (group, query)'s log-sum-exp of
    // its scaled scores, which the backward pass recomputes the softmax from (attention_backward.cuh);
    // without it the kernels skip that one store. A first_query above 0 computes a band of queries
    // against all the keys they see (the same values as those rows of the whole prefix), the work
    // one rank of the context-parallel layer takes (parallel/query_assignment.hpp).
    template <class T>
    static void run(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, index_t prefix,
                    tensor_view<compute_t<T>, 4> y, workspace_span span, tensor_view<compute_t<T>, 3> lse = {},
                    index_t first_query = 0) {
        static_assert(cuda_storage_type<T>, "CUDA attention takes float, __nv_bfloat16 or __half");
        require(first_query >= 0, "attention: first_query = ", first_query, " is negative");
        if (prefix <= 0 || first_query >= prefix) return;
        const index_t batch = in.batch(), L = in.seqlen(), g = in.ngroups(), n = in.d_state(), p = in.headdim();
        const index_t h = in.nheads();
        require(prefix <= L, "attention: prefix P = ", prefix, " exceeds the sequence length L = ", L);
        require(n == 16 || n == 32 || n == 64 || n == 128,
                "attention (CUDA): d_state must be one of 16, 32, 64, 128, got ", n);
        require(p == 16 || p == 32 || p == 64 || p == 128,
                "attention (CUDA): headdim must be one of 16, 32, 64, 128, got ", p);
        require(g > 0 && h % g == 0, "attention: ngroups = ", g, " does not divide nheads = ", h);
        require(in.x.stride(3) == 1 && in.x.stride(2) == p,
                "attention: the heads of x must be adjacent channels of one row");
        require(in.B.stride(3) == 1 && in.C.stride(3) == 1 && in.B.strides() == in.C.strides(),
                "attention: B and C must share a layout with contiguous states");
        expect_shape(y, "y", {batch, L, h, p});
        require(y.stride(3) == 1 && y.stride(2) == p, "attention: the heads of y must be adjacent channels of one row");
        require(batch * g <= (index_t(1) << 30), "attention: batch * ngroups too large");
        if (!lse.empty()) {
            expect_shape(lse, "lse", {batch, g, prefix});
            require(lse.stride(2) == 1, "attention: lse must be contiguous along the queries");
        }

        workspace_arena arena(span);
        const auto s = layout<T>(arena, cfg, batch, prefix);
        namespace k = kernels::cuda;
        namespace kp = kernels::cuda::prefill;
        kp::attention_args<T> a;
        a.q = in.C.data();
        a.q_batch = in.C.stride(0), a.q_row = in.C.stride(1), a.q_group = in.C.stride(2);
        a.k = in.B.data();
        a.k_batch = in.B.stride(0), a.k_row = in.B.stride(1), a.k_group = in.B.stride(2);
        if constexpr (Variant::position::rotary) {
            const index_t rows = batch * prefix * g * (n / 2);
            kp::rope_rotate_kernel<T><<<k::blocks_for(static_cast<std::size_t>(rows), 256), 256, 0, ctx.stream>>>(
                in.C.data(), in.B.data(), in.C.stride(0), in.C.stride(1), in.C.stride(2), batch, prefix,
                static_cast<int>(g), static_cast<int>(n), static_cast<double>(Variant::position::theta), s.rotated_c,
                s.rotated_b);
            k::check_launch("rope_rotate_kernel");
            a.q = s.rotated_c;
            a.k = s.rotated_b;
            a.q_batch = a.k_batch = prefix * g * n;
            a.q_row = a.k_row = g * n;
            a.q_group = a.k_group = n;
        }
        a.v = in.x.data();
        a.v_batch = in.x.stride(0), a.v_row = in.x.stride(1);
        a.y = y.data();
        a.y_batch = y.stride(0), a.y_row = y.stride(1);
        a.D = Variant::skip_D ? in.D : nullptr;
        if (!lse.empty()) {
            a.lse = lse.data();
            a.lse_batch = lse.stride(0);
            a.lse_group = lse.stride(1);
        }
        a.prefix = prefix;
        a.first_query = first_query;
        a.batch = static_cast<int>(batch);
        a.groups = static_cast<int>(g);
        a.group_cols = static_cast<int>(h / g * p);
        a.headdim = static_cast<int>(p);
        a.state = static_cast<int>(n);
        const double scale = Variant::scale::value(n);
        a.scale = static_cast<float>(scale);
        a.scale_log2 = static_cast<float>(scale * 1.4426950408889634);

        if constexpr (std::is_same_v<T, float>) {
            launch_simt(ctx, a);
        } else {
            // cp.async moves 16 bytes: rows and bases must be 16-byte aligned.
            auto aligned = [](const void* ptr, index_t row) {
                return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0 && (row * index_t(sizeof(T))) % 16 == 0;
            };
            require(aligned(a.q, a.q_row) && aligned(a.k, a.k_row) && aligned(a.v, a.v_row) &&
                        (a.q_batch * index_t(sizeof(T))) % 16 == 0 && (a.v_batch * index_t(sizeof(T))) % 16 == 0,
                    "attention (CUDA): x, B and C rows must start at 16-byte aligned addresses "
                    "(row stride and base a multiple of 8 elements)");
            if constexpr (cuda_sm90a_built) {
                if (uses_sm90(n)) {
                    if (n == 64) launch_sm90<T, 64>(ctx, a);
                    else launch_sm90<T, 128>(ctx, a);
                    return;
                }
            }
            switch (n) {
                case 16: launch_mma<T, 16>(ctx, a); break;
                case 32: launch_mma<T, 32>(ctx, a); break;
                case 64: launch_mma<T, 64>(ctx, a); break;
                default: launch_mma<T, 128>(ctx, a); break;
            }
        }
    }

    // Whether a bf16 / fp16 call with this d_state runs the Hopper kernel (sm90/attention_sm90.cuh):
    // built for sm_90a, the kernel enabled, d_state 64 or 128, and the current device an sm_90 (the only 9.x).
    static bool uses_sm90(index_t d_state) {
        if constexpr (!cuda_sm90a_built || !cuda_attention_sm90_tuning<128>::enabled) {
            return false;
        } else {
            namespace k = kernels::cuda;
            return (d_state == 64 || d_state == 128) &&
                   k::cached_device_attribute<cudaDevAttrComputeCapabilityMajor>("cudaDeviceGetAttribute (major)") == 9;
        }
    }
    // The sm90 kernel's value width: 64 or 128, by the cost rule of value_width.
    static int sm90_value_width(index_t cols, index_t d_state) {
        const index_t wide = (cols + 127) / 128 * (d_state + 128), narrow = (cols + 63) / 64 * (d_state + 64);
        return wide <= narrow ? 128 : 64;
    }

private:
    template <class T, int N>
    static void launch_sm90(const cuda_context& ctx, kernels::cuda::prefill::attention_args<T>& a) {
        if (sm90_value_width(a.group_cols, N) == 128) launch_sm90_tuned<T, N, cuda_attention_sm90_tuning<128>>(ctx, a);
        else launch_sm90_tuned<T, N, cuda_attention_sm90_tuning<64>>(ctx, a);
    }

    template <class T, int N, class Tuning>
    static void launch_sm90_tuned(const cuda_context& ctx, kernels::cuda::prefill::attention_args<T>& a) {
        namespace k = kernels::cuda;
        namespace s9 = kernels::cuda::sm90;
        using layout = s9::attention_smem<T, N, Tuning>;
        a.query_tiles = static_cast<int>((a.prefix - a.first_query + Tuning::query_tile - 1) / Tuning::query_tile);
        a.col_chunks = (a.group_cols + Tuning::value_cols - 1) / Tuning::value_cols;
        a.slices_per_wave = slices_per_wave(a, std::size_t(a.prefix) * (N + Tuning::value_cols) * sizeof(T), 1);
        const auto blocks = std::size_t(a.query_tiles) * a.col_chunks * a.groups * a.batch;
        require(blocks < (std::size_t(1) << 31), "attention: too many tiles for one launch");
        s9::attention_sm90_params<T> p;
        p.a = a;
        const index_t cols = index_t(a.groups) * a.group_cols;
        p.q_map = s9::tiled_map<T, 4>(a.q, {N, a.prefix, a.groups, a.batch}, {a.q_row, a.q_group, a.q_batch},
                                      Tuning::query_tile, "attention (sm90): the tensor map of C");
        p.k_map = s9::tiled_map<T, 4>(a.k, {N, a.prefix, a.groups, a.batch}, {a.k_row, a.k_group, a.k_batch},
                                      Tuning::key_tile, "attention (sm90): the tensor map of B");
        p.v_map = s9::tiled_map<T, 3>(a.v, {cols, a.prefix, a.batch}, {a.v_row, a.v_batch}, Tuning::key_tile,
                                      "attention (sm90): the tensor map of x");
        constexpr auto kernel = s9::attention_sm90_kernel<T, N, Tuning>;
        k::allow_shared_memory<kernel>(layout::launch_bytes, "cudaFuncSetAttribute (attention_sm90_kernel shared memory)");
        kernel<<<static_cast<unsigned>(blocks), Tuning::threads, layout::launch_bytes, ctx.stream>>>(p);
        k::check_launch("attention_sm90_kernel");
    }

    // Slices per wave (see attention_tile): as many as fit in l2_share of this device's L2, given
    // the bytes of keys and values one slice reads.
    template <class T>
    static int slices_per_wave(const kernels::cuda::prefill::attention_args<T>& a, std::size_t slice_bytes,
                               int blocks_per_sm) {
        const int l2 = kernels::cuda::l2_cache_bytes();
        const int sms = kernels::cuda::multiprocessor_count();
        const auto budget = static_cast<std::size_t>(cuda_attention_schedule::l2_share * l2);
        const std::size_t slices = std::size_t(a.col_chunks) * a.groups * a.batch;
        const std::size_t fit = slice_bytes > 0 ? budget / slice_bytes : slices;
        const std::size_t cta_rounds = std::size_t(cuda_attention_schedule::min_cta_waves) * sms * blocks_per_sm;
        const std::size_t enough = (cta_rounds + a.query_tiles - 1) / std::max(a.query_tiles, 1);
        return static_cast<int>(std::clamp<std::size_t>(std::max(fit, enough), 1, slices));
    }

    template <class T, int N>
    static void launch_mma(const cuda_context& ctx, kernels::cuda::prefill::attention_args<T>& a) {
        switch (value_width(a.group_cols, N)) {
            case 512: launch_mma_tuned<T, N, cuda_attention_tuning<512>>(ctx, a); break;
            case 256: launch_mma_tuned<T, N, cuda_attention_tuning<256>>(ctx, a); break;
            case 128: launch_mma_tuned<T, N, cuda_attention_tuning<128>>(ctx, a); break;
            default: launch_mma_tuned<T, N, cuda_attention_tuning<64>>(ctx, a); break;
        }
    }

    template <class T, int N, class Tuning>
    static void launch_mma_tuned(const cuda_context& ctx, kernels::cuda::prefill::attention_args<T>& a) {
        namespace k = kernels::cuda;
        namespace kp = kernels::cuda::prefill;
        constexpr int BR = Tuning::query_tile, BC = Tuning::key_tile, VC = Tuning::value_cols;
        constexpr int s_key_warps = Tuning::warps / (BR / 16);
        constexpr std::size_t smem = sizeof(T) * (std::size_t(BR) * (N + 8) + 2 * std::size_t(BC) * (N + 8) +
                                                  2 * std::size_t(BC) * (VC + 8) + std::size_t(BR) * (BC + 8)) +
                                     sizeof(float) * 2 * s_key_warps * BR;
        a.query_tiles = static_cast<int>((a.prefix - a.first_query + BR - 1) / BR);
        a.col_chunks = (a.group_cols + VC - 1) / VC;
        a.slices_per_wave = slices_per_wave(a, std::size_t(a.prefix) * (N + VC) * sizeof(T), Tuning::min_blocks_per_sm);
        const auto blocks = std::size_t(a.query_tiles) * a.col_chunks * a.groups * a.batch;
        require(blocks < (std::size_t(1) << 31), "attention: too many tiles for one launch");
        constexpr auto kernel = kp::attention_mma_kernel<T, N, Tuning>;
        k::allow_shared_memory<kernel>(smem, "cudaFuncSetAttribute (attention_mma_kernel shared memory)");
        kernel<<<static_cast<unsigned>(blocks), Tuning::warps * 32, smem, ctx.stream>>>(a);
        k::check_launch("attention_mma_kernel");
    }

    static void launch_simt(const cuda_context& ctx, kernels::cuda::prefill::attention_args<float>& a) {
        namespace k = kernels::cuda;
        namespace kp = kernels::cuda::prefill;
        using tuning = cuda_attention_simt_tuning;
        a.query_tiles = static_cast<int>((a.prefix - a.first_query + tuning::query_tile - 1) / tuning::query_tile);
        a.col_chunks = (a.group_cols + tuning::value_cols - 1) / tuning::value_cols;
        a.slices_per_wave =
            slices_per_wave(a, std::size_t(a.prefix) * (a.state + tuning::value_cols) * sizeof(float), 1);
        const std::size_t smem = sizeof(float) * (std::size_t(tuning::query_tile + tuning::key_tile) * (a.state + 1) +
                                                  tuning::key_tile * tuning::value_cols +
                                                  tuning::query_tile * (tuning::key_tile + 1));
        const auto blocks = std::size_t(a.query_tiles) * a.col_chunks * a.groups * a.batch;
        require(blocks < (std::size_t(1) << 31), "attention: too many tiles for one launch");
        constexpr auto kernel = kp::attention_simt_kernel<tuning>;
        k::allow_shared_memory<kernel>(smem, "cudaFuncSetAttribute (attention_simt_kernel shared memory)");
        kernel<<<static_cast<unsigned>(blocks), tuning::threads, smem, ctx.stream>>>(a);
        k::check_launch("attention_simt_kernel");
    }
};

}  // namespace transmamba
