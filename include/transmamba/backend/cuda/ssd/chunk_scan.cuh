#pragma once
// Step (3) of the chunked SSD (ssd/dispatch.cuh): y = (L o C B^T o dt) X + diag(exp(l)) C S_in^T + D x
// per (b, chunk, head, headdim columns), query tiles in turn, flash-attention style.
#include "transmamba/backend/cuda/ssd/chunk_cb.cuh"
#include "transmamba/backend/cuda/ssd/operands.cuh"
#include "transmamba/backend/cuda/ssd/policy.cuh"
#include "transmamba/backend/cuda/ssd/tiles.cuh"

namespace transmamba::kernels::cuda::ssd {

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

}  // namespace transmamba::kernels::cuda::ssd
