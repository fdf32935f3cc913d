#pragma once
// One TransMamba mixer with its sequence split across R ranks (context parallelism;
// docs/context_parallel.md has the algorithm and its communication volume). Rank r holds tokens
// token_slices(L, R).of(r) of every sequence, its part of u and of out, and a replica of the
// weights. Written once against `communicator` and the backend's component kernels: the ranks of
// simulated_ranks (one process: CPU, one GPU) and of nccl_communicator (one process per GPU) run the
// same code, phases of local work between collectives:
//
//   1. in_proj of the slice; all-gather of every rank's last d_conv - 1 in-projection rows, from which
//      each rank takes its conv halo (the rows before its slice, from one rank or several when slices
//      are shorter than the halo) and every rank the final conv window.
//   2. conv1d + SiLU and dt over halo + slice; the slice reduced to its (Lambda, U) pair
//      (parallel/state_scan.hpp); the slice's prefix rows (t < P) of xBC packed for the next step.
//   3. all-gather of the pairs; all-gather of the prefix's x, B, C (K = B, V = x, Q = C).
//   4. the state entering the slice folded from the pairs of the ranks before it; attention for the
//      queries the assignment policy gives this rank (zig-zag: balanced) over the gathered prefix.
//   5. zig-zag only: all-gather of the prefix outputs y, each rank keeping its own rows.
//   6. the Memory Converter over the slice's prefix tokens from the entering state (a slice that holds
//      P), the SSM scan over its tokens >= P, the gated RMSNorm and out_proj of the slice.
//
// Every rank's out equals its rows of the single-rank mixer; its final state (the SSM state after
// token L - 1, folded from all R pairs) and final conv window equal the single-rank mixer's.
#include <algorithm>
#include <array>
#include <concepts>
#include <cstddef>
#include <span>
#include <vector>

#include "transmamba/block/decode_state.hpp"
#include "transmamba/block/mixer.hpp"
#include "transmamba/core/checked_size.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/tensor_view.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/parallel/communicator.hpp"
#include "transmamba/parallel/query_assignment.hpp"
#include "transmamba/parallel/state_scan.hpp"
#include "transmamba/parallel/token_slices.hpp"

namespace transmamba {

// What one rank passes to and gets from a context-parallel forward pass.
template <class T>
struct context_parallel_rank_io {
    using A = compute_t<T>;
    tensor_view<const T, 3> u;                 // (batch, slice length, d_model): this rank's tokens
    tensor_view<T, 3> out;                     // (batch, slice length, d_model)
    workspace_span ws;                         // workspace_bytes(...) bytes in the backend's memory
    tensor_view<const A, 4> initial_state{};   // optional (batch, nheads, headdim, d_state), the same on every rank
    tensor_view<A, 4> final_state{};           // optional: the state after token L - 1
    tensor_view<A, 3> final_window{};          // optional (batch, d_conv - 1, d_in_proj): the conv window after L
};

template <class T, class Backend, class Policies = paper_policies, query_assignment Queries = zigzag_queries>
class context_parallel_mixer {
public:
    using layer_type = mixer<T, Backend, Policies>;
    using compute_type = compute_t<T>;
    using rank_io = context_parallel_rank_io<T>;
    using decode_state = mixer_decode_state<T, Backend>;

    explicit context_parallel_mixer(const layer_type& layer) : layer_(layer) {}

    const layer_type& layer() const { return layer_; }

    // Workspace bytes of every rank for `batch` sequences of L tokens at TransPoint P (P > L means L)
    // on R ranks.
    std::size_t workspace_bytes(index_t batch, index_t L, index_t P, index_t R) const {
        workspace_arena measure;
        layout(measure, shape_of(batch, L, P, R));
        return measure.used();
    }

    // All of this process's ranks, io[i] for local rank i. Checks everything before anything is
    // written, then runs the phases above; on an error no output is touched.
    template <communicator Comm>
        requires std::same_as<typename Comm::backend, Backend>
    void forward(Comm& comm, std::span<const rank_io> io, index_t L, index_t P) const {
        const pass_shape sh = check(comm, io, L, P);
        run(comm, io, sh, /*gather_dt=*/false);
    }

    // Decoding's prefill (mixer::prefill) across ranks, batch 1: every local rank's decode state is
    // left ready for mixer::step at position L, as the single-rank prefill leaves it: the SSM state
    // and the conv window, and below P (L < P) the KV cache of the whole prompt (keys B, values x,
    // dt), which the all-gather of the prefix already brought to every rank.
    template <communicator Comm>
        requires std::same_as<typename Comm::backend, Backend>
    void prefill(Comm& comm, std::span<const rank_io> io, index_t L, index_t P, index_t max_tokens,
                 std::span<decode_state* const> states) const {
        const auto& c = layer_.config();
        require(static_cast<index_t>(states.size()) == comm.local_count(), "context parallel prefill: ",
                comm.local_count(), " local ranks but ", states.size(), " decode states");
        require(P >= 0, "TransPoint P = ", P, " is negative (P must be >= 0)");
        require(L <= max_tokens, "prompt of ", L, " tokens exceeds max_tokens = ", max_tokens);
        for (const auto& r : io)
            require(r.u.extent(0) == 1, "prefill decodes one sequence: tensor 'u' must have batch 1, got ",
                    r.u.extent(0));
        std::vector<rank_io> with_states(io.begin(), io.end());
        for (std::size_t i = 0; i < with_states.size(); ++i) {
            require(states[i] != nullptr, "context parallel prefill: no decode state for local rank ", i);
            require(with_states[i].final_state.empty() && with_states[i].final_window.empty(),
                    "context parallel prefill: the decode state takes the final state and window");
        }
        const pass_shape sh = check(comm, std::span<const rank_io>(with_states), L, P);
        const index_t K = c.d_conv;
        for (std::size_t i = 0; i < with_states.size(); ++i) {
            decode_state& st = *states[i];
            st.reset(c, P, max_tokens, comm.context_of(static_cast<index_t>(i)));
            with_states[i].final_state = tensor_view<A, 4>(st.state.data(), {1, c.nheads(), c.headdim, c.d_state});
            with_states[i].final_window = tensor_view<A, 3>(st.window.data(), {1, K - 1, c.d_in_proj()});
        }
        const bool keep_cache = L < P;
        run(comm, std::span<const rank_io>(with_states), sh, /*gather_dt=*/keep_cache);

        for (std::size_t i = 0; i < with_states.size(); ++i) {
            decode_state& st = *states[i];
            const auto& ctx = comm.context_of(static_cast<index_t>(i));
            if (keep_cache) {
                // The workspace still holds the gathered prompt: every token is a prefix token.
                workspace_arena arena(with_states[i].ws);
                const buffers b = layout(arena, sh);
                const index_t cd = c.conv_dim(), gn = c.ngroups * c.d_state;
                traits::copy_rows(ctx, b.prefix + c.d_inner(), cd, st.keys.data(), gn, L, gn);
                traits::copy_rows(ctx, b.prefix, cd, st.values.data(), c.d_inner(), L, c.d_inner());
                traits::copy(ctx, b.prefix_dt, st.dts.data(), static_cast<std::size_t>(L * c.nheads()));
            } else {
                st.converted = true;
                st.release_cache();
            }
            st.position = L;
        }
    }

private:
    using A = compute_type;
    using traits = backend_traits<Backend>;
    using context = typename traits::context;
    using projection = typename layer_type::projection;
    using attention = typename layer_type::attention;
    using scan = typename layer_type::scan;
    using converter = typename layer_type::converter;
    using pair_kernel = state_scan_kernel<Backend>;

    // The sizes of one pass, the same on every rank (a collective's count must be).
    struct pass_shape {
        index_t batch = 0, L = 0, P = 0, R = 0;
        index_t halo = 0;        // d_conv - 1
        index_t rows = 0;        // halo + the longest slice: a rank's rows per sequence, padded
        index_t prefix_slot = 0;  // the most prefix tokens one rank holds: the prefix all-gather's slot
        index_t y_slot = 0;      // the most prefix queries one rank computes (zig-zag's y all-gather)
    };

    pass_shape shape_of(index_t batch, index_t L, index_t P, index_t R) const {
        const token_slices slices(L, R);
        pass_shape sh;
        sh.batch = batch, sh.L = L, sh.P = std::min(P, L), sh.R = R;
        sh.halo = layer_.config().d_conv - 1;
        sh.rows = sh.halo + slices.longest();
        for (index_t r = 0; r < R; ++r) {
            const token_slice s = slices.of(r);
            sh.prefix_slot = std::max(sh.prefix_slot, std::max<index_t>(0, std::min(s.end, sh.P) - s.begin));
            if constexpr (Queries::returns_rows) {
                index_t q = 0;
                for (const query_range& range : Queries::assigned(slices, r, sh.P)) q += range.size();
                sh.y_slot = std::max(sh.y_slot, q);
            }
        }
        return sh;
    }

    struct buffers {
        A* zxbcdt;       // (batch, rows, d_in_proj): halo then slice
        T* xbc;          // (batch, rows, conv_dim)
        A* dt;           // (batch, rows, nheads)
        A* a_coef;       // (nheads)
        A* d_coef;       // (nheads)
        A* y;            // (batch, rows, d_inner)
        T* normed;       // (batch, rows, d_inner)
        A* state;        // (batch, nheads, headdim, d_state): the state entering the slice, then the scan's
        A* tail_send;    // (batch, halo, d_in_proj)
        A* tail_recv;    // R slots of tail_send
        A* pair_send;    // state_pair_layout
        A* pair_recv;    // R slots
        T* prefix_send;  // (batch, prefix_slot, conv_dim)
        T* prefix_recv;  // R slots
        T* prefix;       // (batch, P, conv_dim): the gathered prefix, in token order
        A* dt_send;      // (batch, prefix_slot, nheads): prefill's KV cache only
        A* dt_recv;      // R slots
        A* prefix_dt;    // (batch, P, nheads)
        A* prefix_y;     // (batch, P, d_inner): the attention outputs this rank computes
        A* y_send;       // (batch, y_slot, d_inner): zig-zag
        A* y_recv;       // R slots
        workspace_span scratch;
    };

    buffers layout(workspace_arena& arena, const pass_shape& sh) const {
        const auto& c = layer_.config();
        const auto sz = [](index_t a, index_t b, index_t d) {
            return static_cast<std::size_t>(checked_mul(checked_mul(a, b, "context parallel buffer"), d,
                                                        "context parallel buffer"));
        };
        const index_t bt = sh.batch, R = sh.R, dp = c.d_in_proj(), cd = c.conv_dim(), h = c.nheads(),
                      di = c.d_inner();
        buffers b{};
        b.zxbcdt = arena.take<A>(sz(bt, sh.rows, dp));
        b.xbc = arena.take<T>(sz(bt, sh.rows, cd));
        b.dt = arena.take<A>(sz(bt, sh.rows, h));
        b.a_coef = arena.take<A>(h);
        b.d_coef = arena.take<A>(h);
        b.y = arena.take<A>(sz(bt, sh.rows, di));
        b.normed = arena.take<T>(sz(bt, sh.rows, di));
        b.state = arena.take<A>(sz(bt, h, c.headdim * c.d_state));
        b.tail_send = arena.take<A>(sz(bt, sh.halo, dp));
        b.tail_recv = arena.take<A>(sz(R, bt * sh.halo, dp));
        const auto pairs = static_cast<std::size_t>(pair_layout(sh).elements());
        b.pair_send = arena.take<A>(pairs);
        b.pair_recv = arena.take<A>(pairs * static_cast<std::size_t>(R));
        if (sh.P > 0) {
            b.prefix_send = arena.take<T>(sz(bt, sh.prefix_slot, cd));
            b.prefix_recv = arena.take<T>(sz(R, bt * sh.prefix_slot, cd));
            b.prefix = arena.take<T>(sz(bt, sh.P, cd));
            b.dt_send = arena.take<A>(sz(bt, sh.prefix_slot, h));
            b.dt_recv = arena.take<A>(sz(R, bt * sh.prefix_slot, h));
            b.prefix_dt = arena.take<A>(sz(bt, sh.P, h));
            b.prefix_y = arena.take<A>(sz(bt, sh.P, di));
            if constexpr (Queries::returns_rows) {
                b.y_send = arena.take<A>(sz(bt, sh.y_slot, di));
                b.y_recv = arena.take<A>(sz(R, bt * sh.y_slot, di));
            }
        }
        const std::size_t scratch =
            std::max({attention::template scratch_bytes<T>(c, bt, std::max<index_t>(sh.P, 1)),
                      converter::template scratch_bytes<T>(c, bt, sh.rows),
                      scan::template scratch_bytes<T>(c, bt, sh.rows),
                      pair_kernel::template scratch_bytes<A>(bt, h, sh.rows)});
        std::byte* s = arena.take<std::byte>(scratch);
        b.scratch = {s, arena.measuring() ? 0 : scratch};
        return b;
    }

    state_pair_layout pair_layout(const pass_shape& sh) const {
        const auto& c = layer_.config();
        return {sh.batch, c.nheads(), c.headdim, c.d_state};
    }

    template <class Comm>
    pass_shape check(const Comm& comm, std::span<const rank_io> io, index_t L, index_t P) const {
        const auto& c = layer_.config();
        const index_t R = comm.size();
        require(R >= 1, "context parallel: the communicator has ", R, " ranks");
        require(P >= 0, "TransPoint P = ", P, " is negative (P must be in [0, L])");
        require(static_cast<index_t>(io.size()) == comm.local_count(), "context parallel: ", comm.local_count(),
                " local ranks but ", io.size(), " rank inputs");
        require(!io.empty(), "context parallel: no rank inputs");
        const token_slices slices(L, R);  // checks L >= R >= 1
        const index_t batch = io[0].u.extent(0);
        require(batch > 0, "context parallel: tensor 'u' of local rank 0 is empty: shape ", shape_string(io[0].u.shape()));
        const pass_shape sh = shape_of(batch, L, P, R);
        const std::size_t need = workspace_bytes(batch, L, P, R);
        const extents<4> state_shape{batch, c.nheads(), c.headdim, c.d_state};
        for (std::size_t i = 0; i < io.size(); ++i) {
            const index_t r = comm.rank(static_cast<index_t>(i));
            const token_slice s = slices.of(r);
            const extents<3> shape{batch, s.size(), c.d_model};
            const auto& x = io[i];
            require(x.u.extent(0) == batch, "context parallel: rank ", r, " has ", x.u.extent(0),
                    " sequences, rank ", comm.rank(0), " has ", batch);
            require(x.u.extent(1) == s.size(), "context parallel: rank ", r, " holds tokens [", s.begin, ", ", s.end,
                    ") of L = ", L, " on ", R, " ranks, but its tensor 'u' has shape ", shape_string(x.u.shape()));
            expect_shape(x.u, "u", shape);
            expect_contiguous(x.u, "u");
            expect_shape(x.out, "out", shape);
            expect_contiguous(x.out, "out");
            if (!x.initial_state.empty()) {
                expect_shape(x.initial_state, "initial_state", state_shape);
                expect_contiguous(x.initial_state, "initial_state");
            }
            if (!x.final_state.empty()) {
                expect_shape(x.final_state, "final_state", state_shape);
                expect_contiguous(x.final_state, "final_state");
            }
            if (!x.final_window.empty()) {
                expect_shape(x.final_window, "final_window", {batch, sh.halo, c.d_in_proj()});
                expect_contiguous(x.final_window, "final_window");
            }
            require(x.initial_state.empty() == io[0].initial_state.empty(), "context parallel: rank ", r,
                    (x.initial_state.empty() ? " has no" : " has an"), " initial state and rank ", comm.rank(0),
                    (io[0].initial_state.empty() ? " has none" : " has one"), "; every rank needs the same");
            require(x.ws.bytes >= need, "context parallel: workspace of rank ", r, " too small: has ", x.ws.bytes,
                    " bytes, needs ", need);
            if constexpr (Policies::input_check::per_call) {
                const auto& ctx = comm.context_of(static_cast<index_t>(i));
                const index_t bad = traits::first_non_finite(ctx, x.u.data(), static_cast<std::size_t>(x.u.size()));
                require(bad < 0, "tensor 'u' of rank ", r, " holds a non-finite value at flat index ", bad);
                if (!x.initial_state.empty()) {
                    const index_t b2 = traits::first_non_finite(ctx, x.initial_state.data(),
                                                                static_cast<std::size_t>(x.initial_state.size()));
                    require(b2 < 0, "tensor 'initial_state' of rank ", r, " holds a non-finite value at flat index ", b2);
                }
            }
        }
        return sh;
    }

    // The views the kernels read over a rank's rows halo + slice (or over the gathered prefix).
    ssm_inputs<T> inputs_over(const T* xbc, const A* dt, const buffers& b, index_t batch, index_t rows_per_seq,
                              index_t first_row, index_t len) const {
        const auto& c = layer_.config();
        const index_t h = c.nheads(), p = c.headdim, g = c.ngroups, n = c.d_state, cd = c.conv_dim();
        const T* x0 = xbc + first_row * cd;
        return ssm_inputs<T>{
            tensor_view<const T, 4>(x0, {batch, len, h, p}, {rows_per_seq * cd, cd, p, 1}),
            tensor_view<const T, 4>(x0 + c.d_inner(), {batch, len, g, n}, {rows_per_seq * cd, cd, n, 1}),
            tensor_view<const T, 4>(x0 + c.d_inner() + g * n, {batch, len, g, n}, {rows_per_seq * cd, cd, n, 1}),
            tensor_view<const A, 3>(dt ? dt + first_row * h : nullptr, {batch, len, h}, {rows_per_seq * h, h, 1}),
            b.a_coef,
            b.d_coef,
        };
    }

    // Rows [end - halo, end) of the whole sequence's in-projection, from the all-gathered tails
    // (slot q holds rank q's last `halo` rows, right-aligned), zeros before token 0: the conv halo
    // of a slice starting at `end`, or the final window (end = L). Every such row lies within the
    // last `halo` rows of its owner, since the owner's slice ends at or before `end`.
    void assemble_window(const context& ctx, const token_slices& slices, const pass_shape& sh, const A* tails,
                         index_t end, A* dst, index_t dst_seq_stride) const {
        const index_t dp = layer_.config().d_in_proj(), H = sh.halo;
        for (index_t b = 0; b < sh.batch; ++b)
            for (index_t j = 0; j < H; ++j) {
                const index_t t = end - H + j;
                A* row = dst + b * dst_seq_stride + j * dp;
                if (t < 0) {
                    traits::fill(ctx, row, static_cast<std::size_t>(dp), A(0));
                    continue;
                }
                const index_t q = slices.owner(t), at = H - (slices.of(q).end - t);
                traits::copy(ctx, tails + ((q * sh.batch + b) * H + at) * dp, row, static_cast<std::size_t>(dp));
            }
    }

    template <class Comm>
    void run(Comm& comm, std::span<const rank_io> io, const pass_shape& sh, bool gather_dt) const {
        const auto& c = layer_.config();
        const auto& w = layer_.params();
        const index_t nl = comm.local_count(), R = sh.R, bt = sh.batch, H = sh.halo, rows = sh.rows;
        const index_t dp = c.d_in_proj(), cd = c.conv_dim(), h = c.nheads(), p = c.headdim, n = c.d_state,
                      di = c.d_inner(), dm = c.d_model;
        const token_slices slices(sh.L, R);
        const state_pair_layout pl = pair_layout(sh);

        std::vector<buffers> buf;
        for (index_t i = 0; i < nl; ++i) {
            workspace_arena arena(io[std::size_t(i)].ws);
            buf.push_back(layout(arena, sh));
        }
        auto sends = [&](auto member) {
            std::vector<const element_of<decltype(member)>*> v;
            for (const auto& b : buf) v.push_back(b.*member);
            return v;
        };
        auto recvs = [&](auto member) {
            std::vector<element_of<decltype(member)>*> v;
            for (const auto& b : buf) v.push_back(b.*member);
            return v;
        };
        auto gather = [&](auto send_member, auto recv_member, std::size_t count) {
            const auto s = sends(send_member);
            const auto r = recvs(recv_member);
            using E = element_of<decltype(recv_member)>;
            all_gather<E>(comm, std::span<const E* const>(s), std::span<E* const>(r), count);
        };

        // ---- 1. in_proj of the slice, the tails out ----------------------------------------------
        for (index_t i = 0; i < nl; ++i) {
            const auto& ctx = comm.context_of(i);
            const auto& b = buf[std::size_t(i)];
            const token_slice s = slices.of(comm.rank(i));
            const index_t len = s.size();
            for (index_t q = 0; q < bt; ++q)
                traits::gemm_nt(ctx, len, dp, dm, io[std::size_t(i)].u.data() + q * len * dm, dm, w.in_proj.data(), dm,
                                b.zxbcdt + (q * rows + H) * dp, dp);
            if (H > 0) {
                // The last min(H, len) rows, right-aligned in the slot; rows before them are never read.
                const index_t have = std::min(H, len);
                traits::fill(ctx, b.tail_send, static_cast<std::size_t>(bt * H * dp), A(0));
                for (index_t q = 0; q < bt; ++q)
                    traits::copy(ctx, b.zxbcdt + (q * rows + H + len - have) * dp, b.tail_send + (q * H + H - have) * dp,
                                 static_cast<std::size_t>(have * dp));
            }
        }
        if (H > 0) gather(&buffers::tail_send, &buffers::tail_recv, static_cast<std::size_t>(bt * H * dp));

        // ---- 2. halo, conv, dt; the slice's (Lambda, U); the prefix rows out ------------------------
        for (index_t i = 0; i < nl; ++i) {
            const auto& ctx = comm.context_of(i);
            const auto& b = buf[std::size_t(i)];
            const token_slice s = slices.of(comm.rank(i));
            const index_t len = s.size();
            if (H > 0) assemble_window(ctx, slices, sh, b.tail_recv, s.begin, b.zxbcdt, rows * dp);
            // Rows past a shorter slice (padding to `rows`) are zeroed, so everything stays finite.
            for (index_t q = 0; q < bt; ++q)
                if (H + len < rows)
                    traits::fill(ctx, b.zxbcdt + (q * rows + H + len) * dp, static_cast<std::size_t>((rows - H - len) * dp),
                                 A(0));
            projection::conv_silu(ctx, c, bt, rows, b.zxbcdt, w.conv_weight.data(), w.conv_bias.data(), b.xbc);
            projection::time_steps(ctx, c, bt * rows, b.zxbcdt, w.dt_bias.data(), w.A_log.data(), w.D.data(), b.dt,
                                   b.a_coef, b.d_coef);
            const ssm_inputs<T> in = inputs_over(b.xbc, b.dt, b, bt, rows, H, len);
            const tensor_view<A, 4> U(b.pair_send, {bt, h, p, n});
            traits::fill(ctx, U.data(), static_cast<std::size_t>(U.size()), A(0));
            converter::run(ctx, c, in, len, U, b.scratch);
            pair_kernel::decay(ctx, in, 0, len, b.pair_send + pl.decay_offset(), b.scratch);

            if (sh.P > 0) {
                const index_t mine = std::max<index_t>(0, std::min(s.end, sh.P) - s.begin);
                for (index_t q = 0; q < bt; ++q) {
                    if (mine > 0) {
                        traits::copy(ctx, b.xbc + (q * rows + H) * cd, b.prefix_send + q * sh.prefix_slot * cd,
                                     static_cast<std::size_t>(mine * cd));
                        if (gather_dt)
                            traits::copy(ctx, b.dt + (q * rows + H) * h, b.dt_send + q * sh.prefix_slot * h,
                                         static_cast<std::size_t>(mine * h));
                    }
                    if (mine < sh.prefix_slot) {  // padding: sent, never read, but defined
                        traits::fill(ctx, b.prefix_send + (q * sh.prefix_slot + mine) * cd,
                                     static_cast<std::size_t>((sh.prefix_slot - mine) * cd), T(0));
                        if (gather_dt)
                            traits::fill(ctx, b.dt_send + (q * sh.prefix_slot + mine) * h,
                                         static_cast<std::size_t>((sh.prefix_slot - mine) * h), A(0));
                    }
                }
            }
        }

        // ---- 3. the pairs and the prefix ---------------------------------------------------------
        gather(&buffers::pair_send, &buffers::pair_recv, static_cast<std::size_t>(pl.elements()));
        if (sh.P > 0) {
            gather(&buffers::prefix_send, &buffers::prefix_recv, static_cast<std::size_t>(bt * sh.prefix_slot * cd));
            if (gather_dt) gather(&buffers::dt_send, &buffers::dt_recv, static_cast<std::size_t>(bt * sh.prefix_slot * h));
        }

        // ---- 4. entering state; attention for this rank's queries ---------------------------------
        for (index_t i = 0; i < nl; ++i) {
            const auto& ctx = comm.context_of(i);
            const auto& b = buf[std::size_t(i)];
            const auto& x = io[std::size_t(i)];
            const index_t r = comm.rank(i);
            const A* initial = x.initial_state.empty() ? nullptr : x.initial_state.data();
            pair_kernel::fold(ctx, pl, b.pair_recv, r, initial, b.state);
            if (!x.final_state.empty()) pair_kernel::fold(ctx, pl, b.pair_recv, R, initial, x.final_state.data());
            if (!x.final_window.empty() && H > 0)
                assemble_window(ctx, slices, sh, b.tail_recv, sh.L, x.final_window.data(), H * dp);
            if (sh.P == 0) continue;

            // The gathered prefix in token order: rank q's slot holds its tokens [begin_q, min(end_q, P)).
            for (index_t q = 0; q < R; ++q) {
                const token_slice sq = slices.of(q);
                const index_t cnt = std::max<index_t>(0, std::min(sq.end, sh.P) - sq.begin);
                for (index_t seq = 0; seq < bt && cnt > 0; ++seq) {
                    traits::copy(ctx, b.prefix_recv + ((q * bt + seq) * sh.prefix_slot) * cd,
                                 b.prefix + (seq * sh.P + sq.begin) * cd, static_cast<std::size_t>(cnt * cd));
                    if (gather_dt)
                        traits::copy(ctx, b.dt_recv + ((q * bt + seq) * sh.prefix_slot) * h,
                                     b.prefix_dt + (seq * sh.P + sq.begin) * h, static_cast<std::size_t>(cnt * h));
                }
            }
            const ssm_inputs<T> pin = inputs_over(b.prefix, nullptr, b, bt, sh.P, 0, sh.P);
            const tensor_view<A, 4> py(b.prefix_y, {bt, sh.P, h, p});
            index_t packed = 0;
            for (const query_range& range : Queries::assigned(slices, r, sh.P)) {
                if (range.size() == 0) continue;
                attend(ctx, pin, range, py, b.scratch);
                if constexpr (Queries::returns_rows)
                    for (index_t seq = 0; seq < bt; ++seq)
                        traits::copy(ctx, b.prefix_y + (seq * sh.P + range.begin) * di,
                                     b.y_send + (seq * sh.y_slot + packed) * di, static_cast<std::size_t>(range.size() * di));
                packed += range.size();
            }
            if constexpr (Queries::returns_rows)
                if (packed < sh.y_slot)
                    for (index_t seq = 0; seq < bt; ++seq)
                        traits::fill(ctx, b.y_send + (seq * sh.y_slot + packed) * di,
                                     static_cast<std::size_t>((sh.y_slot - packed) * di), A(0));
        }

        // ---- 5. zig-zag: the prefix outputs back to their owners ---------------------------------
        if constexpr (Queries::returns_rows)
            if (sh.P > 0) gather(&buffers::y_send, &buffers::y_recv, static_cast<std::size_t>(bt * sh.y_slot * di));

        // ---- 6. own prefix rows; converter and scan of the slice; norm and out_proj ------------------
        for (index_t i = 0; i < nl; ++i) {
            const auto& ctx = comm.context_of(i);
            const auto& b = buf[std::size_t(i)];
            const auto& x = io[std::size_t(i)];
            const token_slice s = slices.of(comm.rank(i));
            const index_t len = s.size();
            const index_t ssm_from = std::clamp<index_t>(sh.P - s.begin, 0, len);  // local index of the first SSM token
            // Halo and padding rows of y are normalised and never used: zero keeps them finite.
            for (index_t q = 0; q < bt; ++q) {
                traits::fill(ctx, b.y + q * rows * di, static_cast<std::size_t>(H * di), A(0));
                if (H + len < rows)
                    traits::fill(ctx, b.y + (q * rows + H + len) * di, static_cast<std::size_t>((rows - H - len) * di), A(0));
            }
            if (ssm_from > 0) take_prefix_rows(ctx, slices, sh, b, s, ssm_from);

            const ssm_inputs<T> in = inputs_over(b.xbc, b.dt, b, bt, rows, H, len);
            const tensor_view<A, 4> y(b.y + H * di, {bt, len, h, p}, {rows * di, di, p, 1});
            const tensor_view<A, 4> S(b.state, {bt, h, p, n});
            if (ssm_from > 0 && ssm_from < len) converter::run(ctx, c, in, ssm_from, S, b.scratch);
            if (ssm_from < len) scan::run(ctx, c, in, ssm_from, len, y, S, b.scratch);
            projection::gated_rmsnorm(ctx, c, bt, rows, H + ssm_from, Policies::attention::gate_by_z, b.y, b.zxbcdt,
                                      w.norm_weight.data(), b.normed);
            for (index_t q = 0; q < bt; ++q)
                traits::gemm_nt(ctx, len, dm, di, b.normed + (q * rows + H) * di, di, w.out_proj.data(), di,
                                x.out.data() + q * len * dm, dm);
        }
    }

    // Attention of queries [range.begin, range.end) over keys [0, range.end) of the gathered prefix.
    // A backend whose kernel takes a first query (after its log-sum-exp output: CPU and CUDA)
    // computes just that band; the others compute all queries below range.end (the same values
    // for the band's rows, more work).
    void attend(const context& ctx, const ssm_inputs<T>& pin, query_range range, tensor_view<A, 4> py,
                workspace_span scratch) const {
        const auto& c = layer_.config();
        if constexpr (requires { attention::run(ctx, c, pin, range.end, py, scratch, tensor_view<A, 3>{}, range.begin); })
            attention::run(ctx, c, pin, range.end, py, scratch, tensor_view<A, 3>{}, range.begin);
        else attention::run(ctx, c, pin, range.end, py, scratch);
    }

    // This slice's prefix rows of y [0, count): computed here (contiguous) or gathered back (zig-zag).
    void take_prefix_rows(const context& ctx, const token_slices& slices, const pass_shape& sh, const buffers& b,
                          token_slice s, index_t count) const {
        const index_t di = layer_.config().d_inner(), H = sh.halo, rows = sh.rows;
        if constexpr (!Queries::returns_rows) {
            for (index_t seq = 0; seq < sh.batch; ++seq)
                traits::copy(ctx, b.prefix_y + (seq * sh.P + s.begin) * di, b.y + (seq * rows + H) * di,
                             static_cast<std::size_t>(count * di));
        } else {
            // Walk every rank's assigned ranges in its slot order, copying what falls in [begin, begin + count).
            const index_t lo = s.begin, hi = s.begin + count;
            for (index_t q = 0; q < sh.R; ++q) {
                index_t at = 0;
                for (const query_range& range : Queries::assigned(slices, q, sh.P)) {
                    const index_t a = std::max(range.begin, lo), e = std::min(range.end, hi);
                    if (a < e)
                        for (index_t seq = 0; seq < sh.batch; ++seq)
                            traits::copy(ctx, b.y_recv + ((q * sh.batch + seq) * sh.y_slot + at + (a - range.begin)) * di,
                                         b.y + (seq * rows + H + (a - lo)) * di, static_cast<std::size_t>((e - a) * di));
                    at += range.size();
                }
            }
        }
    }

    // The element type of a buffers member pointer (A* buffers::* -> A).
    template <class M>
    struct element_of_member;
    template <class E>
    struct element_of_member<E* buffers::*> {
        using type = E;
    };
    template <class M>
    using element_of = typename element_of_member<M>::type;

    const layer_type& layer_;
};

}  // namespace transmamba
