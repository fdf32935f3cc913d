#pragma once
// The Hopper (sm_90a) prefill attention: Q = C, K = B, V = x, causal (SPEC section 3), with the
// group sharing of the portable kernel (attention.cuh): one CTA takes (query tile, group, slice of
// value columns), computes the scores once and applies them to the slice, i.e. to several heads.
//
// FlashAttention-3 style warp specialisation, 3 warpgroups per CTA:
//   warpgroup 0, the producer: one thread issues the bulk tensor copies (TMA) of the Q tile once
//     and of the K and V tiles of each key step into a ring of `stages` buffers; it gives its
//     registers back (setmaxnreg) to the consumers.
//   warpgroups 1 and 2, the consumers: 64 query rows each. Per key tile j:
//     S = Q K_j^T        wgmma SS (both operands in shared memory, 128-byte swizzled, K-major)
//     online softmax     float32 row max and sum in registers (exp2 of pre-scaled scores)
//     O += P V_j         wgmma RS: P stays in registers (the accumulator layout of S, packed to
//                        16 bits, is the A operand layout), V read transposed from shared memory
//     then release the stage to the producer (an mbarrier arrival per warp).
//   Within a warpgroup, S_{j+1} and P_j V_j are issued back to back and the softmax of tile j + 1
//   runs while P_j V_j is on the tensor cores (FA3's intra-warpgroup overlap); across the two
//   warpgroups, which run unsynchronised, one's softmax overlaps the other's products.
// Causal: a query tile reads only the key tiles at or below its diagonal; key tiles equal query
// tiles (128), so only the last tile of each CTA needs the mask. Keys past the prefix are read
// as zero by the copy engine (the maps end at the prefix) and masked as any later key.
// Measured figures, the bars they miss and the likely causes: bench/cuda/attention.md.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "transmamba/backend/cuda/attention_args.cuh"
#include "transmamba/backend/cuda/sm90/barrier.cuh"
#include "transmamba/backend/cuda/sm90/tma.cuh"
#include "transmamba/backend/cuda/sm90/wgmma.cuh"
#include "transmamba/backend/cuda/types.cuh"
#include "transmamba/backend/cuda/warp_mma.cuh"

namespace transmamba {

// Built for sm_90a (CMAKE_CUDA_ARCHITECTURES naming 90a defines TRANSMAMBA_CUDA_SM90A): only then
// do the Hopper kernels hold code; otherwise the portable kernels run everywhere.
#if defined(TRANSMAMBA_CUDA_SM90A)
inline constexpr bool cuda_sm90a_built = true;
#else
inline constexpr bool cuda_sm90a_built = false;
#endif

// Tuning of the sm90 kernel (kept out of the algorithm).
template <int ValueCols>
struct cuda_attention_sm90_tuning {
    static constexpr bool enabled = true;  // false: the portable mma.sync kernel runs on sm_90a too
    static constexpr int value_cols = ValueCols;  // 64 or 128: the O tile is 64 x value_cols per warpgroup
    static constexpr int consumers = 2;           // math warpgroups of 64 query rows
    static constexpr int query_tile = 64 * consumers;
    static constexpr int key_tile = 128;
    static constexpr int stages = 3;              // K / V buffers in flight (224 KB at n = value_cols = 128)
    static constexpr int threads = 128 * (consumers + 1);
    static constexpr int producer_registers = 24;
    static constexpr int consumer_registers = 240;
};

namespace kernels::cuda::sm90 {

// Shared memory of one CTA (offsets in bytes from a 1024-byte aligned base; every tile 1024-byte
// aligned for the 128-byte swizzle). Tiles are stored as column blocks of 64 elements: block c of
// a rows x cols tile holds rows x 64 elements at c * rows * 128 bytes.
template <class T, int N, class Tuning>
struct attention_smem {
    static constexpr int BM = Tuning::query_tile, BN = Tuning::key_tile, VC = Tuning::value_cols;
    static constexpr std::size_t q_bytes = std::size_t(BM) * N * sizeof(T);
    static constexpr std::size_t k_bytes = std::size_t(BN) * N * sizeof(T);
    static constexpr std::size_t v_bytes = std::size_t(BN) * VC * sizeof(T);
    static constexpr std::size_t q = 0;
    static constexpr std::size_t k = q + q_bytes;
    static constexpr std::size_t v = k + Tuning::stages * k_bytes;
    static constexpr std::size_t barriers = v + Tuning::stages * v_bytes;
    // q_full, k_full[stages], v_full[stages], empty[stages]
    static constexpr std::size_t bytes = barriers + sizeof(barrier) * (1 + 3 * Tuning::stages);
    static constexpr std::size_t launch_bytes = bytes + 1024;  // slack to align the base
    static_assert(q_bytes % 1024 == 0 && k_bytes % 1024 == 0 && v_bytes % 1024 == 0);
};

template <class T>
struct attention_sm90_params {
    prefill::attention_args<T> a;
    CUtensorMap q_map;  // C (or its rotated copy): (n, prefix, groups, batch)
    CUtensorMap k_map;  // B: the same layout
    CUtensorMap v_map;  // x: (h p, prefix, batch)
};

// 2^x on the special-function unit (2^-inf = 0); the softmax needs no denormals.
__device__ inline float exp2_fast(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

template <class T, int N, class Tuning>
__global__ void __launch_bounds__(Tuning::threads, 1)
    attention_sm90_kernel(const __grid_constant__ attention_sm90_params<T> p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using layout = attention_smem<T, N, Tuning>;
    constexpr int BM = Tuning::query_tile, BN = Tuning::key_tile, VC = Tuning::value_cols;
    constexpr int stages = Tuning::stages;
    constexpr int row_bytes = 128;  // one swizzled row of a 64-element column block
    static_assert(N % 64 == 0 && VC % 64 == 0 && BN % 16 == 0);
    const auto& a = p.a;

    extern __shared__ unsigned char smem_raw[];
    unsigned char* base = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) &
                                                           ~std::uintptr_t(1023));
    unsigned char* sQ = base + layout::q;
    unsigned char* sK = base + layout::k;
    unsigned char* sV = base + layout::v;
    barrier* bars = reinterpret_cast<barrier*>(base + layout::barriers);
    barrier& q_full = bars[0];
    barrier* k_full = bars + 1;
    barrier* v_full = bars + 1 + stages;
    barrier* empty = bars + 1 + 2 * stages;

    const auto where = prefill::attention_tile::of_block(a);
    const index_t q0 = a.first_query + index_t(where.tile) * BM;
    const index_t kv_end = q0 + BM < a.prefix ? q0 + BM : a.prefix;
    const int key_tiles = static_cast<int>((kv_end + BN - 1) / BN);
    const int c0 = where.chunk * VC;

    const int warpgroup = static_cast<int>(threadIdx.x) / 128;
    if (threadIdx.x == 0) {
        q_full.init(1);
        for (int s = 0; s < stages; ++s) {
            k_full[s].init(1);
            v_full[s].init(1);
            empty[s].init(4 * Tuning::consumers);  // one arrival per consumer warp
        }
        barrier::fence_initialised();
    }
    __syncthreads();

    if (warpgroup == 0) {
        decrease_registers<Tuning::producer_registers>();
        if (threadIdx.x != 0) return;
        // The producer thread.
        const std::int32_t grp = where.grp, b = where.b;
        q_full.arrive_expect_bytes(static_cast<std::uint32_t>(layout::q_bytes));
#pragma unroll
        for (int c = 0; c < N / 64; ++c)
            load_box(sQ + c * BM * row_bytes, p.q_map, {c * 64, static_cast<std::int32_t>(q0), grp, b}, &q_full.word);
        const std::int32_t v_col = where.grp * a.group_cols + c0;
        for (int j = 0; j < key_tiles; ++j) {
            const int s = j % stages;
            if (j >= stages) empty[s].wait(((j / stages) & 1) ^ 1);
            const std::int32_t k0 = j * BN;
            k_full[s].arrive_expect_bytes(static_cast<std::uint32_t>(layout::k_bytes));
#pragma unroll
            for (int c = 0; c < N / 64; ++c)
                load_box(sK + s * layout::k_bytes + c * BN * row_bytes, p.k_map, {c * 64, k0, grp, b}, &k_full[s].word);
            v_full[s].arrive_expect_bytes(static_cast<std::uint32_t>(layout::v_bytes));
#pragma unroll
            for (int c = 0; c < VC / 64; ++c)
                load_box(sV + s * layout::v_bytes + c * BN * row_bytes, p.v_map, {v_col + c * 64, k0, b}, &v_full[s].word);
        }
        return;
    }

    // A consumer warpgroup: query rows q0 + 64 * cw .. + 63.
    increase_registers<Tuning::consumer_registers>();
    const int cw = warpgroup - 1;
    const int tid = static_cast<int>(threadIdx.x) % 128, warp = tid / 32, lane = tid % 32;
    // This thread's two rows (within the CTA tile) and its first column within each 8-column group.
    const int row0 = cw * 64 + warp * 16 + lane / 4;
    const int col0 = 2 * (lane % 4);

    float o[VC / 2];
    float s[BN / 2];
#pragma unroll
    for (int i = 0; i < VC / 2; ++i) o[i] = 0.f;
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) s[i] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

    const std::uint32_t q_addr = static_cast<std::uint32_t>(__cvta_generic_to_shared(sQ)) + cw * 64 * row_bytes;
    const std::uint32_t k_addr = static_cast<std::uint32_t>(__cvta_generic_to_shared(sK));
    const std::uint32_t v_addr = static_cast<std::uint32_t>(__cvta_generic_to_shared(sV));
    q_full.wait(0);

    // The wgmma of one pipeline stage (from the fence to the wait that covers them) must not be
    // interleaved with other instructions touching their accumulators, or ptxas serialises every
    // wgmma of the kernel (warning C7514): so the operand holds and the fence come first, then the
    // issues of S_{j+1} and P_j V_j, the barrier waits for their tiles before all of them.
    // S = Q K_j^T into s: N / 16 steps of k16; step ks reads column block ks / 4 at byte 32 (ks % 4).
    auto issue_scores = [&](int j) {
        const int st = j % stages;
#pragma unroll
        for (int ks = 0; ks < N / 16; ++ks) {
            const std::uint32_t off = (ks % 4) * 32;
            const std::uint64_t da = smem_descriptor(q_addr + (ks / 4) * BM * row_bytes + off, 16, 1024);
            const std::uint64_t db = smem_descriptor(
                k_addr + st * static_cast<std::uint32_t>(layout::k_bytes) + (ks / 4) * BN * row_bytes + off, 16, 1024);
            wgmma_ss<T, BN>(s, da, db, ks > 0 ? 1 : 0);
        }
        wgmma_commit();
    };
    // O += P V_j: BN / 16 steps of k16 over keys; step kk starts 16 rows (2048 bytes) down.
    std::uint32_t pf[BN / 16][4];
    auto issue_values = [&](int j) {
        const int st = j % stages;
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            const std::uint64_t db = smem_descriptor(
                v_addr + st * static_cast<std::uint32_t>(layout::v_bytes) + kk * 16 * row_bytes, BN * row_bytes, 1024);
            wgmma_rs<T, VC>(o, pf[kk], db, 1);
        }
        wgmma_commit();
    };
    auto wait_keys = [&](int j) { k_full[j % stages].wait((j / stages) & 1); };
    auto wait_values = [&](int j) { v_full[j % stages].wait((j / stages) & 1); };
    // Softmax of the scores of tile j in s (complete): mask, row maxima, P = exp2(S - m) in place,
    // row sums; returns the rescale factor of O for each row.
    auto softmax = [&](int j, float (&alpha)[2]) {
        hold_registers(s);
        // Causal mask: only the last key tile reaches past this warpgroup's first row.
        const index_t k0 = index_t(j) * BN;
        if (k0 + BN - 1 > q0 + cw * 64) {
            const int shift = static_cast<int>(k0 - q0) + col0 - row0;  // key - query, less i's offsets
#pragma unroll
            for (int i = 0; i < BN / 2; ++i)
                if (shift + 8 * (i / 4) + (i % 2) > 8 * ((i / 2) % 2)) s[i] = -INFINITY;
        }
        // The two rows (h = 0: row0, h = 1: row0 + 8); a row lives in a quad of lanes.
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float mx = -INFINITY;
#pragma unroll
            for (int c = 0; c < BN / 8; ++c) mx = fmaxf(mx, fmaxf(s[4 * c + 2 * h], s[4 * c + 2 * h + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            // Key 0 is visible to every row and lies in tile 0, so m is finite from tile 0 on.
            const float m_new = fmaxf(m[h], mx * a.scale_log2);
            alpha[h] = exp2_fast(m[h] - m_new);
            m[h] = m_new;
            float sum = 0.f;
#pragma unroll
            for (int c = 0; c < BN / 8; ++c)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float& x = s[4 * c + 2 * h + e];
                    x = exp2_fast(fmaf(x, a.scale_log2, -m_new));
                    sum += x;
                }
            l[h] = l[h] * alpha[h] + sum;
        }
    };
    // O rescaled, then P packed to T as the A operand (both only once P V of the previous tile is done).
    auto rescale_and_pack = [&](const float (&alpha)[2]) {
#pragma unroll
        for (int i = 0; i < VC / 2; ++i) o[i] *= alpha[(i / 2) % 2];
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
            for (int r = 0; r < 4; ++r) pf[kk][r] = mma::pack2<T>(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
    };
    auto release = [&](int j) {
        __syncwarp();
        if (lane == 0) empty[j % stages].arrive();
    };

    // Intra-warpgroup pipelining (FA3): while the tensor cores run P_j V_j, this warpgroup computes
    // the softmax of tile j + 1, whose scores were issued just before P_j V_j.
    {
        float alpha[2];
        wait_keys(0);
        hold_registers(s);
        wgmma_fence();
        issue_scores(0);
        wgmma_wait<0>();
        softmax(0, alpha);
        rescale_and_pack(alpha);
    }
    // The last tile is peeled: a branch around the issue of S inside one pipeline stage would
    // make ptxas copy the accumulators there and serialise the wgmma (C7514).
    for (int j = 0; j + 1 < key_tiles; ++j) {
        wait_keys(j + 1);
        wait_values(j);
        hold_registers(s);
        hold_registers(o);
        wgmma_fence();
        issue_scores(j + 1);
        issue_values(j);
        float alpha[2];
        wgmma_wait<1>();  // S_{j+1} complete; P_j V_j may still run
        softmax(j + 1, alpha);
        wgmma_wait<0>();
        hold_registers(o);
        hold_registers(pf);
        release(j);
        rescale_and_pack(alpha);
    }
    {
        const int j = key_tiles - 1;
        wait_values(j);
        hold_registers(o);
        wgmma_fence();
        issue_values(j);
        wgmma_wait<0>();
        hold_registers(o);
        hold_registers(pf);
        release(j);
    }

    // y = O / l (+ D x) for rows < prefix and columns inside the group.
    const int cols_valid = a.group_cols - c0 < VC ? a.group_cols - c0 : VC;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float sum = l[h];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const index_t t = q0 + row0 + 8 * h;
        if (t >= a.prefix) continue;
        const float inv = 1.f / sum;
        // m is the row's running max in log2 units, sum the sum of exp2(s - m).
        if (a.lse != nullptr && where.chunk == 0 && (lane & 3) == 0)
            a.lse[where.b * a.lse_batch + where.grp * a.lse_group + t] = (m[h] + log2f(sum)) * 0.6931471805599453f;
        float* yr = a.y + where.b * a.y_batch + t * a.y_row + index_t(where.grp) * a.group_cols + c0;
        const T* xr = a.v + where.b * a.v_batch + t * a.v_row + index_t(where.grp) * a.group_cols + c0;
#pragma unroll
        for (int c = 0; c < VC / 8; ++c) {
            const int col = 8 * c + col0;
            if (col >= cols_valid) continue;
            float2 out = make_float2(o[4 * c + 2 * h] * inv, o[4 * c + 2 * h + 1] * inv);
            if (a.D != nullptr) {
                const float d = a.D[(where.grp * a.group_cols + c0 + col) / a.headdim];
                out.x += d * to_float(xr[col]);
                out.y += d * to_float(xr[col + 1]);
            }
            *reinterpret_cast<float2*>(yr + col) = out;
        }
    }
#else
    (void)p;
    __trap();  // built without sm_90a: the dispatch never launches this kernel then
#endif
}

}  // namespace kernels::cuda::sm90
}  // namespace transmamba
