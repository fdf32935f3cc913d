#pragma once
// C B^T within a chunk, once per group (step (3)'s shared scores, ssd/dispatch.cuh): the warp-level
// product that chunk_scan also runs inline, the tile layout of the shared result, and its kernel.
#include "transmamba/backend/cuda/ssd/operands.cuh"
#include "transmamba/backend/cuda/ssd/policy.cuh"
#include "transmamba/backend/cuda/ssd/tiles.cuh"

namespace transmamba::kernels::cuda::ssd {

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

}  // namespace transmamba::kernels::cuda::ssd
