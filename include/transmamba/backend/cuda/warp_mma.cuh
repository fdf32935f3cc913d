#pragma once
// Warp-level matrix multiply-accumulate on the tensor cores (mma.sync, sm_80+), the building block
// of the chunked SSD kernels. One warp computes D (16 x 8, float) += A (16 x K) * B (K x 8):
//   16-bit storage (bf16, fp16): m16n8k16, operands as pairs of 16-bit values per register;
//   float storage: m16n8k8 on tf32 operands, optionally as 3xTF32 (a = a_hi + a_lo, the product
//   a_hi b_hi + a_hi b_lo + a_lo b_hi), which keeps float32 accuracy at three times the work.
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16 / m16n8k8"); lane = 4 g + t:
//   accumulator  v[i]: row g + 8 (i / 2), column 2 t + (i % 2)
//   16-bit A     r[i]: row g + 8 (i % 2), columns 2 t + 8 (i / 2) and the next one (low half first)
//   16-bit B     r[i]: rows 2 t + 8 i and the next one, column g
//   tf32 A       r[i]: row g + 8 (i % 2), column t + 4 (i / 2)
//   tf32 B       r[i]: row t + 4 i, column g
// Fragments are built either from a functor f(row, col) -> float (any layout, any source), or with
// ldmatrix from 16-bit shared-memory tiles.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace transmamba::kernels::cuda::mma {

// How float operands use the tensor cores.
enum class float_mode {
    tf32,    // one tf32 product: ~1e-3 relative error, the fastest
    tf32x3,  // 3xTF32: float32 accuracy, three tf32 products
};

template <class T>
inline constexpr bool is_16bit = std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;

// The K extent of one mma for storage type T.
template <class T>
inline constexpr int k_step = is_16bit<T> ? 16 : 8;

struct frag_c {
    float v[4];
};

template <class T>
struct frag_a {
    std::uint32_t hi[4];
    std::uint32_t lo[is_16bit<T> ? 1 : 4];  // the tf32 remainder, float only
};

template <class T>
struct frag_b {
    std::uint32_t hi[2];
    std::uint32_t lo[is_16bit<T> ? 1 : 2];
};

__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x & 31u); }

__device__ __forceinline__ void zero(frag_c& c) {
#pragma unroll
    for (int i = 0; i < 4; ++i) c.v[i] = 0.0f;
}

// Two floats rounded to T and packed, lo in the low half (cvt puts its first operand in the high half).
template <class T>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi) {
    std::uint32_t r;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    else asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// The two 16-bit values of a packed register as floats (low half first).
template <class T>
__device__ __forceinline__ float2 unpack2(std::uint32_t r) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        return make_float2(__uint_as_float(r << 16), __uint_as_float(r & 0xffff0000u));
    } else {
        __half2 h;
        *reinterpret_cast<std::uint32_t*>(&h) = r;
        return __half22float2(h);
    }
}

__device__ __forceinline__ std::uint32_t to_tf32(float v) {
    std::uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return r;
}

// v = hi + lo with both parts representable in tf32 (lo carries the next 11 bits).
__device__ __forceinline__ void split_tf32(float v, std::uint32_t& hi, std::uint32_t& lo) {
    hi = to_tf32(v);
    lo = to_tf32(v - __uint_as_float(hi));
}

// A fragment of the 16 x k_step<T> tile whose element (r, c) is f(r, c).
template <class T, class F>
__device__ __forceinline__ void make_a(frag_a<T>& a, F&& f) {
    const int g = lane_id() >> 2, t = lane_id() & 3;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i & 1);
        if constexpr (is_16bit<T>) {
            const int col = 2 * t + 8 * (i >> 1);
            a.hi[i] = pack2<T>(f(row, col), f(row, col + 1));
        } else {
            split_tf32(f(row, t + 4 * (i >> 1)), a.hi[i], a.lo[i]);
        }
    }
}

// B fragment of the k_step<T> x 8 tile whose element (k, n) is f(k, n).
template <class T, class F>
__device__ __forceinline__ void make_b(frag_b<T>& b, F&& f) {
    const int g = lane_id() >> 2, t = lane_id() & 3;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        if constexpr (is_16bit<T>) {
            const int k = 2 * t + 8 * i;
            b.hi[i] = pack2<T>(f(k, g), f(k + 1, g));
        } else {
            split_tf32(f(t + 4 * i, g), b.hi[i], b.lo[i]);
        }
    }
}

// ---- ldmatrix (16-bit tiles in shared memory; every row address 16-byte aligned) ----

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
    return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldsm_x4(std::uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldsm_x4_trans(std::uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// A (16 x 16) from a tile stored row-major as A[m][k] (k contiguous), ld elements per row.
template <class T>
__device__ __forceinline__ void load_a_mk(frag_a<T>& a, const T* tile, int ld, int m0, int k0) {
    if constexpr (is_16bit<T>) {
        const int l = lane_id();
        ldsm_x4(a.hi, tile + (m0 + (l & 15)) * ld + k0 + (l >> 4) * 8);
    } else {
        make_a(a, [&](int r, int c) { return tile[(m0 + r) * ld + k0 + c]; });
    }
}

// A (16 x K) from a tile stored as A^T, i.e. At[k][m] (m contiguous).
template <class T>
__device__ __forceinline__ void load_a_km(frag_a<T>& a, const T* tile, int ld, int m0, int k0) {
    if constexpr (is_16bit<T>) {
        const int l = lane_id(), j = l >> 3;
        ldsm_x4_trans(a.hi, tile + (k0 + (l & 7) + (j >> 1) * 8) * ld + m0 + (j & 1) * 8);
    } else {
        make_a(a, [&](int r, int c) { return tile[(k0 + c) * ld + m0 + r]; });
    }
}

// Two B fragments (K x 8 each, columns n0.. and n0+8..) from a tile stored as Bt[n][k] (k contiguous).
template <class T>
__device__ __forceinline__ void load_b2_nk(frag_b<T> (&b)[2], const T* tile, int ld, int n0, int k0) {
    if constexpr (is_16bit<T>) {
        const int l = lane_id(), j = l >> 3;
        std::uint32_t r[4];
        ldsm_x4(r, tile + (n0 + (l & 7) + (j >> 1) * 8) * ld + k0 + (j & 1) * 8);
        b[0].hi[0] = r[0];
        b[0].hi[1] = r[1];
        b[1].hi[0] = r[2];
        b[1].hi[1] = r[3];
    } else {
#pragma unroll
        for (int h = 0; h < 2; ++h)
            make_b(b[h], [&](int k, int n) { return tile[(n0 + 8 * h + n) * ld + k0 + k]; });
    }
}

// Two B fragments from a tile stored as B[k][n] (n contiguous).
template <class T>
__device__ __forceinline__ void load_b2_kn(frag_b<T> (&b)[2], const T* tile, int ld, int n0, int k0) {
    if constexpr (is_16bit<T>) {
        const int l = lane_id(), j = l >> 3;
        std::uint32_t r[4];
        ldsm_x4_trans(r, tile + (k0 + (l & 7) + (j & 1) * 8) * ld + n0 + (j >> 1) * 8);
        b[0].hi[0] = r[0];
        b[0].hi[1] = r[1];
        b[1].hi[0] = r[2];
        b[1].hi[1] = r[3];
    } else {
#pragma unroll
        for (int h = 0; h < 2; ++h)
            make_b(b[h], [&](int k, int n) { return tile[(k0 + k) * ld + n0 + 8 * h + n]; });
    }
}

// ---- float tiles: 128-bit shared-memory loads, k walked in a permuted order ----
// A product sums over k, so A and B may take k in any order as long as they take the same one.
// Scalar fragment loads (make_a / make_b) cost one shared-memory load per register; instead, float
// operands take their k-steps in pairs over k0 .. k0 + 15, lane (g, t) holding k0 + 4t .. 4t + 3
// of a row in one 128-bit load: the first k-step uses k0 + 4t and 4t + 1 as its columns t and
// t + 4, the second k0 + 4t + 2 and 4t + 3.

// A tf32 operand register; with 3xTF32 also its remainder (lo is left alone in plain tf32 mode,
// where the product never reads it).
template <float_mode Mode>
__device__ __forceinline__ void set_tf32(std::uint32_t& hi, std::uint32_t& lo, float v) {
    if constexpr (Mode == float_mode::tf32x3) split_tf32(v, hi, lo);
    else hi = to_tf32(v);
}

__device__ __forceinline__ float4 load_float4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// The A fragments of the k-step pair at k0 for the 16 rows [m0, m0 + 16) of a float tile A[m][k]
// (k contiguous; rows 16-byte aligned).
template <float_mode Mode>
__device__ __forceinline__ void load_a_pair_mk(frag_a<float> (&a)[2], const float* tile, int ld, int m0, int k0) {
    const int g = lane_id() >> 2, t = lane_id() & 3;
    const float4 top = load_float4(tile + (m0 + g) * ld + k0 + 4 * t);
    const float4 bottom = load_float4(tile + (m0 + g + 8) * ld + k0 + 4 * t);
    // registers: 0 (row g, column t), 1 (row g + 8, column t), 2 (row g, column t + 4), 3 (row g + 8, column t + 4)
    set_tf32<Mode>(a[0].hi[0], a[0].lo[0], top.x);
    set_tf32<Mode>(a[0].hi[1], a[0].lo[1], bottom.x);
    set_tf32<Mode>(a[0].hi[2], a[0].lo[2], top.y);
    set_tf32<Mode>(a[0].hi[3], a[0].lo[3], bottom.y);
    set_tf32<Mode>(a[1].hi[0], a[1].lo[0], top.z);
    set_tf32<Mode>(a[1].hi[1], a[1].lo[1], bottom.z);
    set_tf32<Mode>(a[1].hi[2], a[1].lo[2], top.w);
    set_tf32<Mode>(a[1].hi[3], a[1].lo[3], bottom.w);
}

// The B fragments of the k-step pair for one column of B, from the lane's four consecutive k
// (k0 + 4t .. 4t + 3 of the column, e.g. a row of a tile stored as Bt[n][k]).
template <float_mode Mode>
__device__ __forceinline__ void load_b_pair(frag_b<float> (&b)[2], const float* lane_k) {
    const float4 v = load_float4(lane_k);
    set_tf32<Mode>(b[0].hi[0], b[0].lo[0], v.x);
    set_tf32<Mode>(b[0].hi[1], b[0].lo[1], v.y);
    set_tf32<Mode>(b[1].hi[0], b[1].lo[0], v.z);
    set_tf32<Mode>(b[1].hi[1], b[1].lo[1], v.w);
}

// The A fragment of one k-step taken from the accumulator c (16 x 8) of an earlier product: the
// lane holds columns 2t and 2t + 1 of rows g and g + 8, used as the k-step's columns t and t + 4
// (so B must supply k = 2t and 2t + 1 as its rows t and t + 4).
template <float_mode Mode>
__device__ __forceinline__ void a_from_accumulator(frag_a<float>& a, const frag_c& c) {
    set_tf32<Mode>(a.hi[0], a.lo[0], c.v[0]);
    set_tf32<Mode>(a.hi[1], a.lo[1], c.v[2]);
    set_tf32<Mode>(a.hi[2], a.lo[2], c.v[1]);
    set_tf32<Mode>(a.hi[3], a.lo[3], c.v[3]);
}

// ---- the products ----

__device__ __forceinline__ void mma_bf16(frag_c& d, const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d.v[0]), "+f"(d.v[1]), "+f"(d.v[2]), "+f"(d.v[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_f16(frag_c& d, const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d.v[0]), "+f"(d.v[1]), "+f"(d.v[2]), "+f"(d.v[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_tf32(frag_c& d, const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d.v[0]), "+f"(d.v[1]), "+f"(d.v[2]), "+f"(d.v[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d += a * b for storage type T; Mode only matters for float.
template <class T, float_mode Mode = float_mode::tf32x3>
__device__ __forceinline__ void mma(frag_c& d, const frag_a<T>& a, const frag_b<T>& b) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        mma_bf16(d, a.hi, b.hi);
    } else if constexpr (std::is_same_v<T, __half>) {
        mma_f16(d, a.hi, b.hi);
    } else {
        if constexpr (Mode == float_mode::tf32x3) {  // the small cross terms first
            mma_tf32(d, a.lo, b.hi);
            mma_tf32(d, a.hi, b.lo);
        }
        mma_tf32(d, a.hi, b.hi);
    }
}

// acc[i] += a * b_i for four accumulator tiles whose B operands are interleaved in two 128-bit
// rows: component i of k_row and k1_row is tile i's column g at the k-step's rows t and t + 4
// (the k-step's two keys). One pair of loads feeds four tiles (ssd::float_column's layout).
template <float_mode Mode>
__device__ __forceinline__ void mma_four_tiles(frag_c* acc, const frag_a<float>& a, float4 k_row, float4 k1_row) {
    const float r0[4] = {k_row.x, k_row.y, k_row.z, k_row.w}, r1[4] = {k1_row.x, k1_row.y, k1_row.z, k1_row.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        frag_b<float> b;
        set_tf32<Mode>(b.hi[0], b.lo[0], r0[i]);
        set_tf32<Mode>(b.hi[1], b.lo[1], r1[i]);
        mma<float, Mode>(acc[i], a, b);
    }
}

}  // namespace transmamba::kernels::cuda::mma
