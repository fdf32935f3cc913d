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
//
// This header is the host side: support checks, the scratch layout, and the launches of the
// kernels in ssd/chunk_state.cuh, state_passing.cuh, chunk_cb.cuh and chunk_scan.cuh; tuning in
// ssd/policy.cuh, operands and scratch in ssd/operands.cuh, shared tiles in ssd/tiles.cuh.
#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/backend/cuda/context.cuh"
#include "transmamba/backend/cuda/ssd/chunk_scan.cuh"
#include "transmamba/backend/cuda/ssd/chunk_state.cuh"
#include "transmamba/backend/cuda/ssd/state_passing.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"

namespace transmamba::kernels::cuda::ssd {

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
