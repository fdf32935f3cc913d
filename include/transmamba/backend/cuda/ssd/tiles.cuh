#pragma once
// Shared-memory tiles of the chunked SSD kernels: bank-conflict-free row paddings, cp.async staging
// of global tiles, and the weighted X^T fragment that chunk_state multiplies.
#include <cstddef>

#include "transmamba/backend/cuda/types.cuh"
#include "transmamba/backend/cuda/warp_mma.cuh"

namespace transmamba::kernels::cuda::ssd {

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

// The cp.async asm writes shared memory through an address the compiler cannot see (a 32-bit
// shared-window operand), and the wait is what makes those writes visible to this thread: without
// a "memory" clobber NVVM may keep or move ordinary C++ accesses of the tile across them (the
// float paths read their tiles with plain loads, unlike the 16-bit paths' asm volatile ldmatrix).
// The clobbers make each statement a compiler memory fence; ordering between threads still comes
// from the barrier after the wait.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(mma::smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
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

}  // namespace transmamba::kernels::cuda::ssd
