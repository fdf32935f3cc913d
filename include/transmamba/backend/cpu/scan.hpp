#pragma once
// The SSM scan on the CPU, both policies. The state of head k of sequence b is a (headdim x d_state)
// row-major matrix at state(b, k, :, :): read as the initial state, overwritten with the final one.
//   S_t = a_t S_{t-1} + dt_t x_t B_t^T,  a_t = exp(dt_t A),  y_t = S_t C_t + D x_t
//
// Three ways to evaluate it, all vectorised with Eigen's packets (AVX-512, AVX2, SSE, NEON: whatever
// the build targets), all taking the initial state and returning the final one:
//
// - row-wise (spans shorter than scan_tuning::min_tiled_span, i.e. decoding): one fused pass over the
//   state as it is stored, row i at a time, S_i = a S_i + (dt x_i) B; y_i = S_i . C + D x_i. One token
//   reads and writes the state once: memory-bound, no setup.
// - token by token (sequential_scan): the state transposed to (d_state x headdim) in the workspace, a
//   tile of `cols` state columns by `vecs` packets of headdim held in registers across a tile of
//   tokens; y accumulates along headdim, so no horizontal sums. 3 vector operations per state element
//   and token (a*S, + dt x B, + C S).
// - blocks of `max_block` tokens (chunked_ssd_scan): SSD's algebra within each block,
//     y_k = lam_k S_0 C_k + sum_{m<=k} (C_k . B_m) (lam_k / lam_m) dt_m x_m + D x_k,
//     S_T = lam_T S_0 + sum_m (lam_T / lam_m) dt_m x_m B_m^T,      lam_k = prod_{r<=k} a_r,
//   with the block-start state S_0 in registers: 2 + 1/T vector operations per element and token,
//   the (C_k . B_m) products once per group and block (shared by its heads). The block is the chunk
//   of SPEC section 4 at min(chunk_size, max_block) tokens: at this length the chunk's quadratic term
//   costs ~3% and every product of decays stays a product (no exp of differences, no division).
//
// The two tiled paths run one task per (sequence, range of heads); a task walks the tokens in blocks
// and, within a block, every head of its range, so that B, C and (C_k . B_m) are shared while hot and
// x, y are read and written a contiguous row segment at a time.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include <Eigen/Core>

#include "transmamba/backend/cpu/eigen.hpp"
#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/core/sequence_layout.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/scan.hpp"

namespace transmamba {

namespace kernels::cpu {

// The scan's tuning, in one place (CUB-style: constants, not code). Register tiles are sized to the
// register file Eigen targets (32 vector registers with AVX-512 or NEON, 16 with AVX2 or SSE).
template <class A>
struct scan_tuning {
    using packet = typename Eigen::internal::packet_traits<A>::type;
    static constexpr index_t width = Eigen::internal::unpacket_traits<packet>::size;
    static constexpr bool wide = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS >= 32;
    // Token by token: cols x vecs state packets + 2 vecs (dt x, y) + 3 broadcasts.
    static constexpr int recurrence_cols = wide ? 5 : 2;
    static constexpr int recurrence_vecs = wide ? 4 : 3;
    static constexpr index_t recurrence_tokens = 64;  // tokens per pass over the state
    // Blocks: cols x vecs state packets + vecs (dt x or y) + 1 broadcast.
    static constexpr int block_cols = wide ? 6 : 3;
    static constexpr int block_vecs = wide ? 4 : 3;
    static constexpr index_t max_block = 32;
    // Shorter spans go row-wise on the state as stored (no transposes, no workspace).
    static constexpr index_t min_tiled_span = 8;
    // Tasks per thread: enough to balance, few enough that heads of a task share B, C and C B^T.
    static constexpr index_t tasks_per_thread = 2;
};

template <class T>
void check_scan_views(const ssm_inputs<T>& in, const tensor_view<T, 4>& state) {
    require(state.is_contiguous(), "scan: the state must be contiguous (batch, nheads, headdim, d_state)");
    require(in.x.stride(3) == 1 && in.B.stride(3) == 1 && in.C.stride(3) == 1,
            "scan: x, B and C must be contiguous along their last dimension");
}

namespace ei = Eigen::internal;

// ---- Row-wise: the state as stored, one token -----------------------------------------------------
// S (p x n, row-major): S_i = a S_i + (dt x_i) B; y_i = S_i . C + D x_i.
template <class A>
void scan_token_rows(A* S, index_t p, index_t n, A a, A dt, const A* x, const A* B, const A* C, A D, A* y) {
    using P = typename scan_tuning<A>::packet;
    constexpr index_t W = scan_tuning<A>::width;
    const index_t nv = n / W * W;
    const P pa = ei::pset1<P>(a);
    for (index_t i = 0; i < p; ++i) {
        A* Si = S + i * n;
        const A dx = dt * x[i];
        const P pdx = ei::pset1<P>(dx);
        P acc0 = ei::pset1<P>(A(0)), acc1 = acc0;
        index_t j = 0;
        for (; j + 2 * W <= nv; j += 2 * W) {
            const P s0 = ei::pmadd(pdx, ei::ploadu<P>(B + j), ei::pmul(pa, ei::ploadu<P>(Si + j)));
            const P s1 = ei::pmadd(pdx, ei::ploadu<P>(B + j + W), ei::pmul(pa, ei::ploadu<P>(Si + j + W)));
            ei::pstoreu(Si + j, s0);
            ei::pstoreu(Si + j + W, s1);
            acc0 = ei::pmadd(s0, ei::ploadu<P>(C + j), acc0);
            acc1 = ei::pmadd(s1, ei::ploadu<P>(C + j + W), acc1);
        }
        for (; j < nv; j += W) {
            const P s0 = ei::pmadd(pdx, ei::ploadu<P>(B + j), ei::pmul(pa, ei::ploadu<P>(Si + j)));
            ei::pstoreu(Si + j, s0);
            acc0 = ei::pmadd(s0, ei::ploadu<P>(C + j), acc0);
        }
        A acc = ei::predux(ei::padd(acc0, acc1));
        for (; j < n; ++j) {
            Si[j] = a * Si[j] + dx * B[j];
            acc += Si[j] * C[j];
        }
        y[i] = acc + D * x[i];
    }
}

// ---- Register tiles over the transposed state -----------------------------------------------------
// sT: the tile's first state column (d_state index j0), rows of `ld_s` along headdim. Token rows of
// dtx (dt x), yc (y accumulated), B and C start at the tile's offsets.
template <class A>
struct tile_args {
    A* sT;
    index_t ld_s;
    index_t tokens;
    const A* dtx;  // (tokens, ld_x): dt_t x_t (blocks: w_t dt_t x_t), zero in the padding
    index_t ld_x;
    A* yc;         // (tokens, ld_x): y (blocks: S_0 C_t) accumulated over the column tiles
    const A* b;    // token rows of B
    const A* c;    // token rows of C
    index_t ld_b, ld_c;
    const A* decay;  // a_t per token (token by token); lam_T at decay[0] (blocks)
};

// The J x V packets of the state tile, to and from registers.
template <class A, int J, int V, class P = typename scan_tuning<A>::packet>
void load_state_tile(const tile_args<A>& g, P (&s)[J][V]) {
    constexpr index_t W = scan_tuning<A>::width;
    for (int j = 0; j < J; ++j)
        for (int v = 0; v < V; ++v) s[j][v] = ei::pload<P>(g.sT + j * g.ld_s + v * W);
}
template <class A, int J, int V, class P = typename scan_tuning<A>::packet>
void store_state_tile(const tile_args<A>& g, const P (&s)[J][V]) {
    constexpr index_t W = scan_tuning<A>::width;
    for (int j = 0; j < J; ++j)
        for (int v = 0; v < V; ++v) ei::pstore(g.sT + j * g.ld_s + v * W, s[j][v]);
}

// Token by token: S = a S + B_t[j] dtx_t; y_t += C_t[j] S.
template <class A, int J, int V>
void recurrence_tile(const tile_args<A>& args) {
    const tile_args<A> g = args;  // a local copy: packet stores may alias anything, a local they cannot
    using P = typename scan_tuning<A>::packet;
    constexpr index_t W = scan_tuning<A>::width;
    P s[J][V];
    load_state_tile<A, J, V>(g, s);
    for (index_t t = 0; t < g.tokens; ++t) {
        const P a = ei::pset1<P>(g.decay[t]);
        P d[V], y[V];
        for (int v = 0; v < V; ++v) {
            d[v] = ei::pload<P>(g.dtx + t * g.ld_x + v * W);
            y[v] = ei::pload<P>(g.yc + t * g.ld_x + v * W);
        }
        for (int j = 0; j < J; ++j) {
            const P b = ei::pset1<P>(g.b[t * g.ld_b + j]);
            const P c = ei::pset1<P>(g.c[t * g.ld_c + j]);
            for (int v = 0; v < V; ++v) {
                s[j][v] = ei::pmadd(b, d[v], ei::pmul(a, s[j][v]));
                y[v] = ei::pmadd(c, s[j][v], y[v]);
            }
        }
        for (int v = 0; v < V; ++v) ei::pstore(g.yc + t * g.ld_x + v * W, y[v]);
    }
    store_state_tile<A, J, V>(g, s);
}

// One block: carried_k += C_k[j] S_0 for every k, then S = lam_T S_0 + sum_m B_m[j] (w_m dt_m x_m).
template <class A, int J, int V>
void block_tile(const tile_args<A>& args) {
    const tile_args<A> g = args;  // a local copy: packet stores may alias anything, a local they cannot
    using P = typename scan_tuning<A>::packet;
    constexpr index_t W = scan_tuning<A>::width;
    P s[J][V];
    load_state_tile<A, J, V>(g, s);
    for (index_t k = 0; k < g.tokens; ++k) {
        P y[V];
        for (int v = 0; v < V; ++v) y[v] = ei::pload<P>(g.yc + k * g.ld_x + v * W);
        for (int j = 0; j < J; ++j) {
            const P c = ei::pset1<P>(g.c[k * g.ld_c + j]);
            for (int v = 0; v < V; ++v) y[v] = ei::pmadd(c, s[j][v], y[v]);
        }
        for (int v = 0; v < V; ++v) ei::pstore(g.yc + k * g.ld_x + v * W, y[v]);
    }
    const P lam = ei::pset1<P>(g.decay[0]);
    for (int j = 0; j < J; ++j)
        for (int v = 0; v < V; ++v) s[j][v] = ei::pmul(lam, s[j][v]);
    for (index_t m = 0; m < g.tokens; ++m) {
        P d[V];
        for (int v = 0; v < V; ++v) d[v] = ei::pload<P>(g.dtx + m * g.ld_x + v * W);
        for (int j = 0; j < J; ++j) {
            const P b = ei::pset1<P>(g.b[m * g.ld_b + j]);
            for (int v = 0; v < V; ++v) s[j][v] = ei::pmadd(b, d[v], s[j][v]);
        }
    }
    store_state_tile<A, J, V>(g, s);
}

// The tile shapes as types, so that the edge tiles (fewer columns, fewer packets) are chosen at run
// time among compile-time shapes.
template <bool Blocked>
struct tile_shape;
template <>
struct tile_shape<false> {
    template <class A>
    static constexpr int cols = scan_tuning<A>::recurrence_cols;
    template <class A>
    static constexpr int vecs = scan_tuning<A>::recurrence_vecs;
    template <class A, int J, int V>
    static void run(const tile_args<A>& g) { recurrence_tile<A, J, V>(g); }
};
template <>
struct tile_shape<true> {
    template <class A>
    static constexpr int cols = scan_tuning<A>::block_cols;
    template <class A>
    static constexpr int vecs = scan_tuning<A>::block_vecs;
    template <class A, int J, int V>
    static void run(const tile_args<A>& g) { block_tile<A, J, V>(g); }
};

template <bool Blocked, class A, int J, int V>
void run_tile(int cols, int vecs, const tile_args<A>& g) {
    if constexpr (V > 1)
        if (vecs < V) return run_tile<Blocked, A, J, V - 1>(cols, vecs, g);
    if constexpr (J > 1)
        if (cols < J) return run_tile<Blocked, A, J - 1, V>(cols, vecs, g);
    tile_shape<Blocked>::template run<A, J, V>(g);
}

// All tiles of one head over one block of tokens: headdim in slices of `vecs` packets (outer, so a
// slice of yc stays in L1), d_state in tiles of `cols` columns.
template <bool Blocked, class A>
void run_tiles(A* sT, index_t pp, index_t n, index_t tokens, const A* dtx, A* yc, const A* b, index_t ld_b,
               const A* c, index_t ld_c, const A* decay) {
    constexpr index_t W = scan_tuning<A>::width;
    constexpr int J = tile_shape<Blocked>::template cols<A>, V = tile_shape<Blocked>::template vecs<A>;
    const index_t packets = pp / W;
    for (index_t v0 = 0; v0 < packets; v0 += V) {
        const int vecs = static_cast<int>(std::min<index_t>(V, packets - v0));
        for (index_t j0 = 0; j0 < n; j0 += J) {
            const int cols = static_cast<int>(std::min<index_t>(J, n - j0));
            const tile_args<A> g{sT + j0 * pp + v0 * W, pp, tokens, dtx + v0 * W, pp, yc + v0 * W, b + j0, c + j0,
                                 ld_b, ld_c, decay};
            run_tile<Blocked, A, J, V>(cols, vecs, g);
        }
    }
}

// dst (cols x rows, rows of ld_dst) = src (rows x cols, rows of ld_src)^T, by W x W packet blocks.
// (Eigen's PacketBlock takes the packet type, e.g. __m512, as a template argument; GCC warns that its
// alignment attribute is not part of the template's identity, which is harmless here, as in Eigen.)
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif
template <class A>
void transpose_into(const A* src, index_t ld_src, index_t rows, index_t cols, A* dst, index_t ld_dst) {
    using P = typename scan_tuning<A>::packet;
    constexpr index_t W = scan_tuning<A>::width;
    const index_t r_full = W > 1 ? rows / W * W : 0, c_full = W > 1 ? cols / W * W : 0;
    if constexpr (W > 1) {
        for (index_t i0 = 0; i0 < r_full; i0 += W)
            for (index_t j0 = 0; j0 < c_full; j0 += W) {
                ei::PacketBlock<P, W> blk;
                for (index_t r = 0; r < W; ++r) blk.packet[r] = ei::ploadu<P>(src + (i0 + r) * ld_src + j0);
                ei::ptranspose(blk);
                for (index_t r = 0; r < W; ++r) ei::pstoreu(dst + (j0 + r) * ld_dst + i0, blk.packet[r]);
            }
    }
    for (index_t i = 0; i < rows; ++i)
        for (index_t j = i < r_full ? c_full : 0; j < cols; ++j) dst[j * ld_dst + i] = src[i * ld_src + j];
}
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

// Within one block: yc_k += sum_{m<=k} mix(k, m) dtx_m, rows of pp (a multiple of the packet width).
// Four packets of a row at a time, so that four independent chains of multiply-adds are in flight.
template <class A>
void mix_within_block(const A* mix, index_t T, const A* dtx, A* yc, index_t pp) {
    using P = typename scan_tuning<A>::packet;
    constexpr index_t W = scan_tuning<A>::width;
    for (index_t k = 0; k < T; ++k) {
        const A* mk = mix + k * T;
        A* yk = yc + k * pp;
        index_t i = 0;
        for (; i + 4 * W <= pp; i += 4 * W) {
            P a0 = ei::pload<P>(yk + i), a1 = ei::pload<P>(yk + i + W), a2 = ei::pload<P>(yk + i + 2 * W),
              a3 = ei::pload<P>(yk + i + 3 * W);
            for (index_t m = 0; m <= k; ++m) {
                const P f = ei::pset1<P>(mk[m]);
                const A* d = dtx + m * pp + i;
                a0 = ei::pmadd(f, ei::pload<P>(d), a0);
                a1 = ei::pmadd(f, ei::pload<P>(d + W), a1);
                a2 = ei::pmadd(f, ei::pload<P>(d + 2 * W), a2);
                a3 = ei::pmadd(f, ei::pload<P>(d + 3 * W), a3);
            }
            ei::pstore(yk + i, a0);
            ei::pstore(yk + i + W, a1);
            ei::pstore(yk + i + 2 * W, a2);
            ei::pstore(yk + i + 3 * W, a3);
        }
        for (; i < pp; i += W) {
            P a0 = ei::pload<P>(yk + i);
            for (index_t m = 0; m <= k; ++m) a0 = ei::pmadd(ei::pset1<P>(mk[m]), ei::pload<P>(dtx + m * pp + i), a0);
            ei::pstore(yk + i, a0);
        }
    }
}

// ---- The tiled driver ---------------------------------------------------------------------------
template <class A>
struct tiled_scratch {
    A* states;  // (batch, nheads, d_state, pp): the states transposed, headdim padded to packets
    A* per_thread;
    index_t block, pp, thread_elems;
    // Per thread, (block x pp) each: dt x; y accumulated; and for blocks, w dt x (w_m = prod_{m<r<T} a_r)
    // and the carried part S_0 C_k before its decay lam_k. Then C B^T (block x block).
    A* dtx(int th) const { return per_thread + th * thread_elems; }
    A* yc(int th) const { return dtx(th) + block * pp; }
    A* dtxw(int th) const { return yc(th) + block * pp; }
    A* carried(int th) const { return dtxw(th) + block * pp; }
    A* cb(int th) const { return carried(th) + block * pp; }
};

inline index_t padded_headdim(index_t p, index_t width) { return (p + width - 1) / width * width; }

// The most tokens one pass over the state takes.
template <class A, bool Blocked>
inline constexpr index_t tokens_per_pass = Blocked ? scan_tuning<A>::max_block : scan_tuning<A>::recurrence_tokens;

template <class A, bool Blocked>
index_t block_length(const mixer_config& cfg) {
    if constexpr (Blocked) return std::clamp<index_t>(cfg.chunk_size, 1, scan_tuning<A>::max_block);
    else return scan_tuning<A>::recurrence_tokens;
}

template <class A, bool Blocked>
tiled_scratch<A> tiled_layout(workspace_arena& arena, const mixer_config& cfg, index_t sequences) {
    tiled_scratch<A> s{};
    s.block = block_length<A, Blocked>(cfg);
    s.pp = padded_headdim(cfg.headdim, scan_tuning<A>::width);
    s.thread_elems = (Blocked ? 4 : 2) * s.block * s.pp + (Blocked ? s.block * s.block : 0);
    // Every piece a multiple of the packet width keeps the next one aligned.
    s.thread_elems = padded_headdim(s.thread_elems, scan_tuning<A>::width);
    s.states = arena.take<A>(static_cast<std::size_t>(sequences * cfg.nheads() * cfg.d_state * s.pp));
    s.per_thread = arena.take<A>(static_cast<std::size_t>(max_threads() * s.thread_elems));
    return s;
}

inline constexpr index_t cache_line = 64;

// A hint to bring the line holding `p` into L2, for reading or for writing; nothing where the compiler
// has no such builtin.
inline void prefetch_l2(const void* p, bool for_write) {
#if defined(__GNUC__)
    if (for_write) __builtin_prefetch(p, 1, 2);
    else __builtin_prefetch(p, 0, 2);
#else
    (void)p;
    (void)for_write;
#endif
}

// y_k = yc_k + lam_k carried_k over the first p channels of `tokens` rows.
template <class A>
void finish_block(const A* yc, const A* carried, const A* lam, index_t tokens, index_t p, index_t pp, A* y,
                  index_t ld_y) {
    using P = typename scan_tuning<A>::packet;
    constexpr index_t W = scan_tuning<A>::width;
    for (index_t k = 0; k < tokens; ++k) {
        const A* a = yc + k * pp;
        const A* c = carried + k * pp;
        A* out = y + k * ld_y;
        const P l = ei::pset1<P>(lam[k]);
        index_t i = 0;
        for (; i + W <= p; i += W) ei::pstoreu(out + i, ei::pmadd(l, ei::pload<P>(c + i), ei::pload<P>(a + i)));
        for (; i < p; ++i) out[i] = a[i] + lam[k] * c[i];
    }
}

// The SSM span of sequence q: its rows from the TransPoint to its end, in the view's time index.
struct ssm_span {
    index_t begin, end;
};
inline ssm_span ssm_rows(const sequence_layout& seqs, index_t q) {
    return {seqs.first_row(q) + seqs.prefix(q), seqs.first_row(q) + seqs.length(q)};
}
inline index_t longest_ssm_span(const sequence_layout& seqs) {
    index_t most = 0;
    for (index_t q = 0; q < seqs.count(); ++q) most = std::max(most, seqs.length(q) - seqs.prefix(q));
    return most;
}

template <class A>
void row_scan_heads(const ssm_inputs<A>& in, index_t b, index_t q, index_t k0, index_t k1, ssm_span rows,
                    tensor_view<A, 4> y, tensor_view<A, 4> state);

// The scan of every sequence over its SSM span by register tiles, token by token or in blocks; a
// sequence whose span is too short to pay for the transposes goes row-wise within its task.
template <bool Blocked, class A>
void tiled_scan(const mixer_config& cfg, const ssm_inputs<A>& in, const sequence_layout& seqs, tensor_view<A, 4> y,
                tensor_view<A, 4> state, workspace_span span) {
    using P = typename scan_tuning<A>::packet;
    constexpr index_t W = scan_tuning<A>::width;
    workspace_arena arena(span);
    const auto s = tiled_layout<A, Blocked>(arena, cfg, seqs.count());
    const index_t p = in.headdim(), n = in.d_state(), h = in.nheads(), hg = in.heads_per_group(), pp = s.pp;
    const index_t bs = in.B.stride(1), cs = in.C.stride(1), ys = y.stride(1);
    const index_t per_task = std::max<index_t>(
        1, (seqs.count() * h + max_threads() * scan_tuning<A>::tasks_per_thread - 1) /
               (max_threads() * scan_tuning<A>::tasks_per_thread));
    const index_t tasks_per_seq = (h + per_task - 1) / per_task;

    parallel_for(seqs.count() * tasks_per_seq, per_task * longest_ssm_span(seqs) * p * n, [&](index_t task, int thread) {
        const index_t q = task / tasks_per_seq, k0 = task % tasks_per_seq * per_task, k1 = std::min(h, k0 + per_task);
        const index_t b = seqs.batch_of(q);
        const auto [t_begin, t_end] = ssm_rows(seqs, q);
        if (t_end <= t_begin) return;
        if (t_end - t_begin < scan_tuning<A>::min_tiled_span)
            return row_scan_heads(in, b, q, k0, k1, ssm_span{t_begin, t_end}, y, state);
        A* const dtx = s.dtx(thread);
        A* const yc = s.yc(thread);
        auto transposed = [&](index_t k) { return s.states + (q * h + k) * n * pp; };
        for (index_t k = k0; k < k1; ++k) {
            A* sT = transposed(k);
            transpose_into(&state(q, k, 0, 0), n, p, n, sT, pp);
            for (index_t j = 0; j < n; ++j)  // padding rows of the state stay zero: dtx is zero there
                std::fill(sT + j * pp + p, sT + (j + 1) * pp, A(0));
        }
        for (index_t t0 = t_begin; t0 < t_end; t0 += s.block) {
            const index_t T = std::min(s.block, t_end - t0);
            index_t cb_group = -1;  // the group whose C B^T the scratch holds for this block
            for (index_t k = k0; k < k1; ++k) {
                const index_t grp = k / hg;
                const A* Bt = &in.B(b, t0, grp, 0);
                const A* Ct = &in.C(b, t0, grp, 0);
                // x and y are a row segment per token, too many streams for the hardware prefetcher:
                // ask for the next head's x and this head's y rows, into L2 (the tiles' pass over the
                // state would evict them from L1).
                for (index_t t = 0; t < T; ++t)
                    for (index_t i = 0; i < p; i += cache_line / index_t(sizeof(A))) {
                        if (k + 1 < k1) prefetch_l2(&in.x(b, t0 + t, k + 1, i), false);
                        prefetch_l2(&y(b, t0 + t, k, i), true);
                    }
                // a_t, and for blocks lam_k = prod_{r<=k} a_r and w_m = prod_{m<r<T} a_r: products of
                // decays, never a quotient.
                A decay[tokens_per_pass<A, Blocked>], lam[tokens_per_pass<A, Blocked>], w[tokens_per_pass<A, Blocked>];
                for (index_t t = 0; t < T; ++t) decay[t] = std::exp(in.dt(b, t0 + t, k) * in.A[k]);
                if constexpr (Blocked) {
                    A run = 1;
                    for (index_t t = 0; t < T; ++t) lam[t] = run *= decay[t];
                    run = 1;
                    for (index_t t = T - 1; t >= 0; --t) {
                        w[t] = run;
                        run *= decay[t];
                    }
                }
                // dt_t x_t, (for blocks) w_t dt_t x_t, and y_t = D x_t to start from; zero padding.
                A* const dtxw = s.dtxw(thread);
                for (index_t t = 0; t < T; ++t) {
                    const A dt = in.dt(b, t0 + t, k), D_k = in.D[k];
                    const A* xt = &in.x(b, t0 + t, k, 0);
                    A* d = dtx + t * pp;
                    A* dw = dtxw + t * pp;
                    A* yt = yc + t * pp;
                    const P pdt = ei::pset1<P>(dt), pD = ei::pset1<P>(D_k), pw = ei::pset1<P>(Blocked ? w[t] * dt : A(0));
                    index_t i = 0;
                    for (; i + W <= p; i += W) {
                        const P xi = ei::ploadu<P>(xt + i);
                        ei::pstore(d + i, ei::pmul(pdt, xi));
                        ei::pstore(yt + i, ei::pmul(pD, xi));
                        if constexpr (Blocked) ei::pstore(dw + i, ei::pmul(pw, xi));
                    }
                    for (; i < p; ++i) {
                        d[i] = dt * xt[i];
                        yt[i] = D_k * xt[i];
                        if constexpr (Blocked) dw[i] = w[t] * dt * xt[i];
                    }
                    for (; i < pp; ++i) {
                        d[i] = yt[i] = A(0);
                        if constexpr (Blocked) dw[i] = A(0);
                    }
                }
                if constexpr (!Blocked) {
                    run_tiles<false>(transposed(k), pp, n, T, dtx, yc, Bt, bs, Ct, cs, decay);
                    for (index_t t = 0; t < T; ++t) std::copy_n(yc + t * pp, p, &y(b, t0 + t, k, 0));
                } else {
                    A* const carried = s.carried(thread);
                    A* const cb = s.cb(thread);
                    if (grp != cb_group) {  // C_k . B_m for the block, once per group
                        map_rows(cb, T, T, T).noalias() =
                            map_rows(Ct, T, n, cs) * map_rows(Bt, T, n, bs).transpose();
                        cb_group = grp;
                    }
                    // Within the block: y_k += sum_{m<=k} (C_k . B_m) prod_{m<r<=k} a_r dt_m x_m.
                    A mix[tokens_per_pass<A, Blocked> * tokens_per_pass<A, Blocked>];
                    for (index_t k2 = 0; k2 < T; ++k2) {
                        A dec = 1;
                        for (index_t m = k2; m >= 0; --m) {
                            mix[k2 * T + m] = dec * cb[k2 * T + m];
                            dec *= decay[m];
                        }
                    }
                    mix_within_block(mix, T, dtx, yc, pp);
                    // From the block-start state: carried_k = S_0 C_k, and S = lam_T S_0 + sum_m w_m dt_m x_m B_m^T.
                    std::fill_n(carried, T * pp, A(0));
                    const A lam_T = lam[T - 1];
                    run_tiles<true>(transposed(k), pp, n, T, dtxw, carried, Bt, bs, Ct, cs, &lam_T);
                    finish_block(yc, carried, lam, T, p, pp, &y(b, t0, k, 0), ys);
                }
            }
        }
        for (index_t k = k0; k < k1; ++k) transpose_into(transposed(k), pp, n, p, &state(q, k, 0, 0), n);
    });
}

// Heads [k0, k1) of sequence q (view batch b) over its rows, row-wise on the state as stored.
template <class A>
void row_scan_heads(const ssm_inputs<A>& in, index_t b, index_t q, index_t k0, index_t k1, ssm_span rows,
                    tensor_view<A, 4> y, tensor_view<A, 4> state) {
    const index_t p = in.headdim(), n = in.d_state(), hg = in.heads_per_group();
    for (index_t k = k0; k < k1; ++k) {
        const index_t grp = k / hg;
        for (index_t t = rows.begin; t < rows.end; ++t) {
            const A dt = in.dt(b, t, k);
            scan_token_rows(&state(q, k, 0, 0), p, n, A(std::exp(dt * in.A[k])), dt, &in.x(b, t, k, 0),
                            &in.B(b, t, grp, 0), &in.C(b, t, grp, 0), in.D[k], &y(b, t, k, 0));
        }
    }
}

// Row-wise over short spans, one contiguous range of (sequence, head) pairs per thread: a range
// tends to stay on its core from call to call, and its states in that core's cache.
template <class A>
void row_scan(const ssm_inputs<A>& in, const sequence_layout& seqs, tensor_view<A, 4> y, tensor_view<A, 4> state) {
    const index_t p = in.headdim(), n = in.d_state(), h = in.nheads(), heads = seqs.count() * h;
    const index_t ranges = std::min<index_t>(max_threads(), heads);
    parallel_for(ranges, (heads + ranges - 1) / ranges * longest_ssm_span(seqs) * p * n, [&](index_t r, int) {
        for (index_t bh = heads * r / ranges; bh < heads * (r + 1) / ranges; ++bh) {
            const index_t q = bh / h, k = bh % h;
            row_scan_heads(in, seqs.batch_of(q), q, k, k + 1, ssm_rows(seqs, q), y, state);
        }
    });
}

template <bool Blocked>
struct cpu_scan {
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t batch, index_t seqlen) {
        if (seqlen < scan_tuning<T>::min_tiled_span) return 0;  // every span is row-wise
        workspace_arena measure;
        tiled_layout<T, Blocked>(measure, cfg, batch);
        return measure.used();
    }
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, const sequence_layout& seqs) {
        if (seqs.max_length() < scan_tuning<T>::min_tiled_span) return 0;
        workspace_arena measure;
        tiled_layout<T, Blocked>(measure, cfg, seqs.count());
        return measure.used();
    }
    template <class T>
    static void run(const mixer_config& cfg, const ssm_inputs<T>& in, index_t t_begin, index_t t_end,
                    tensor_view<T, 4> y, tensor_view<T, 4> state, workspace_span span) {
        if (t_end <= t_begin) return;
        run(cfg, in, sequence_layout::dense(in.batch(), t_end).split_at(t_begin), y, state, span);
    }
    // Each sequence from its TransPoint to its end, from and into state(s, ...).
    template <class T>
    static void run(const mixer_config& cfg, const ssm_inputs<T>& in, const sequence_layout& seqs,
                    tensor_view<T, 4> y, tensor_view<T, 4> state, workspace_span span) {
        static_assert(std::is_same_v<T, compute_t<T>>, "the CPU scan runs in float or double");
        check_scan_views(in, state);
        require(y.stride(3) == 1, "scan: y must be contiguous along headdim");
        const index_t longest = longest_ssm_span(seqs);
        if (longest <= 0) return;
        if (longest < scan_tuning<T>::min_tiled_span) row_scan(in, seqs, y, state);
        else tiled_scan<Blocked>(cfg, in, seqs, y, state, span);
    }
};

}  // namespace kernels::cpu

template <>
struct scan_kernel<sequential_scan, cpu> {
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t batch, index_t seqlen) {
        return kernels::cpu::cpu_scan<false>::scratch_bytes<T>(cfg, batch, seqlen);
    }
    template <class T>
    static void run(const cpu_context&, const mixer_config& cfg, const ssm_inputs<T>& in, index_t t_begin,
                    index_t t_end, tensor_view<T, 4> y, tensor_view<T, 4> state, workspace_span span) {
        kernels::cpu::cpu_scan<false>::run(cfg, in, t_begin, t_end, y, state, span);
    }
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, const sequence_layout& seqs) {
        return kernels::cpu::cpu_scan<false>::scratch_bytes<T>(cfg, seqs);
    }
    template <class T>
    static void run(const cpu_context&, const mixer_config& cfg, const ssm_inputs<T>& in, const sequence_layout& seqs,
                    tensor_view<T, 4> y, tensor_view<T, 4> state, workspace_span span) {
        kernels::cpu::cpu_scan<false>::run(cfg, in, seqs, y, state, span);
    }
};

template <>
struct scan_kernel<chunked_ssd_scan, cpu> {
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t batch, index_t seqlen) {
        return kernels::cpu::cpu_scan<true>::scratch_bytes<T>(cfg, batch, seqlen);
    }
    template <class T>
    static void run(const cpu_context&, const mixer_config& cfg, const ssm_inputs<T>& in, index_t t_begin,
                    index_t t_end, tensor_view<T, 4> y, tensor_view<T, 4> state, workspace_span span) {
        kernels::cpu::cpu_scan<true>::run(cfg, in, t_begin, t_end, y, state, span);
    }
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, const sequence_layout& seqs) {
        return kernels::cpu::cpu_scan<true>::scratch_bytes<T>(cfg, seqs);
    }
    template <class T>
    static void run(const cpu_context&, const mixer_config& cfg, const ssm_inputs<T>& in, const sequence_layout& seqs,
                    tensor_view<T, 4> y, tensor_view<T, 4> state, workspace_span span) {
        kernels::cpu::cpu_scan<true>::run(cfg, in, seqs, y, state, span);
    }
};

}  // namespace transmamba
