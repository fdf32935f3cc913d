#pragma once
// One TransMamba mixer (SPEC.md section 3): the shared projections feed causal attention for tokens
// t < P and the SSM for t >= P, joined by the Memory Converter at P. Written once against
// backend_traits and the component kernels; the backend and every component are template
// arguments.
//
//   u -> in_proj -> [z | xBC | dt_raw];  xBC -> conv1d + SiLU -> x, B, C;  dt = softplus(...)
//   t <  P:  y_t = softmax(C_t B_{<=t}^T * scale) x_{<=t} + D x_t            (attention_kernel)
//   at P:    S = sum_{j<P} (prod a) dt_j x_j B_j^T                             (converter_kernel)
//   t >= P:  S_t = a_t S_{t-1} + dt_t x_t B_t^T;  y_t = S_t C_t + D x_t        (scan_kernel)
//   out = out_proj(rmsnorm_g(y * gate) * norm.weight),  gate = silu(z) for t >= P, 1 before
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>

#include "transmamba/backend/traits.hpp"
#include "transmamba/block/decode_state.hpp"
#include "transmamba/block/mixer_params.hpp"
#include "transmamba/core/check_flag.hpp"
#include "transmamba/core/checked_size.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/core/sequence_layout.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/tensor_view.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/mixer_policies.hpp"

namespace transmamba {

// An owning, growable workspace in a backend's memory: reserve() allocates only when a call needs
// more than any call before it, so repeated forward passes allocate nothing.
template <class Backend>
class workspace {
public:
    workspace_span reserve(std::size_t bytes) {
        if (bytes > buffer_.size()) buffer_.resize(bytes);
        return {buffer_.data(), buffer_.size()};
    }
    std::size_t capacity() const { return buffer_.size(); }

private:
    typename backend_traits<Backend>::template buffer<std::byte> buffer_;
};

// Optional state inputs/outputs of a forward pass: the state before token 0 (default zeros) and
// the state after the last token (default: not returned). Both (batch, nheads, headdim, d_state).
template <class A>
struct mixer_state_io {
    tensor_view<const A, 4> initial_state{};
    tensor_view<A, 4> final_state{};
};

template <class T, class Backend, class Policies = paper_policies>
class mixer {
public:
    using value_type = T;
    using backend = Backend;
    using policies = Policies;
    using compute_type = compute_t<T>;
    using params_type = mixer_params<T, Backend>;
    using traits = backend_traits<Backend>;
    using context = typename traits::context;

    using projection = projection_kernel<typename Policies::projection, Backend>;
    using attention = attention_kernel<typename Policies::attention, Backend>;
    using decode_attention = decode_attention_kernel<typename Policies::attention, Backend>;
    using decode_scan = decode_scan_kernel<Backend>;
    using scan = scan_kernel<typename Policies::scan, Backend>;
    using converter = converter_kernel<typename Policies::converter, Backend>;

    explicit mixer(const mixer_config& cfg) : params_(cfg) {}

    const mixer_config& config() const { return params_.config; }
    const params_type& params() const { return params_; }
    // Mutable access marks the parameters for a finiteness check before the next forward pass.
    params_type& params() {
        checked_.clear();
        return params_;
    }

    // Bytes of workspace a forward pass over (batch, seqlen) needs, whatever the TransPoint.
    std::size_t workspace_bytes(index_t batch, index_t seqlen) const {
        return workspace_bytes(sequence_layout::dense(batch, seqlen));
    }
    // ... and over the sequences of a layout (a packed batch: its cu_seqlens), whatever the TransPoints.
    std::size_t workspace_bytes(const sequence_layout& seqs) const {
        workspace_arena measure;
        layout(measure, seqs, /*own_state=*/true);
        return measure.used();
    }

    // out (batch, L, d_model) = mixer(u (batch, L, d_model)) with the first `transpoint` tokens of
    // every sequence mixed by attention (transpoint > L means L). Everything is checked before
    // anything is written: on an error, out and final_state are untouched.
    void forward(tensor_view<const T, 3> u, tensor_view<T, 3> out, index_t transpoint, workspace_span ws,
                 mixer_state_io<compute_type> state = {}, const context& ctx = {}) const {
        const index_t batch = u.extent(0), L = u.extent(1);
        require(u.extent(2) == config().d_model, "tensor 'u' has shape ", shape_string(u.shape()),
                ", expected (batch, L, ", config().d_model, ")");
        require(batch > 0 && L > 0, "tensor 'u' is empty: shape ", shape_string(u.shape()));
        require(transpoint >= 0, "TransPoint P = ", transpoint, " is negative (P must be in [0, L])");
        forward(u, out, sequence_layout::dense(batch, L).split_at(transpoint), ws, state, ctx);
    }

    // The same over the sequences of `seqs`, each with its own TransPoint counted from its own start:
    // dense, u (batch, L, d_model); packed, u (1, total, d_model) with the sequences back to back
    // (sequence_layout::packed(cu_seqlens)), nothing padded. The states are per sequence,
    // (sequences, nheads, headdim, d_state). Packed, every sequence's output and final state equal
    // those of a forward pass over that sequence alone (tests/block/test_packed.cpp).
    void forward(tensor_view<const T, 3> u, tensor_view<T, 3> out, const sequence_layout& seqs, workspace_span ws,
                 mixer_state_io<compute_type> state = {}, const context& ctx = {}) const {
        const auto& c = config();
        const extents<3> shape = seqs.is_packed() ? extents<3>{1, seqs.rows(), c.d_model}
                                                  : extents<3>{seqs.count(), seqs.max_length(), c.d_model};
        expect_shape(u, "u", shape);
        expect_contiguous(u, "u");
        expect_shape(out, "out", shape);
        expect_contiguous(out, "out");
        if constexpr (!has_packed_batches<Backend>) {
            require(!seqs.is_packed(), "packed (cu_seqlens) batches run on the CPU backend only, for now");
            require(seqs.uniform_transpoint(), "per-sequence TransPoints run on the CPU backend only, for now");
        }
        const extents<4> state_shape{seqs.count(), c.nheads(), c.headdim, c.d_state};
        if (!state.initial_state.empty()) {
            expect_shape(state.initial_state, "initial_state", state_shape);
            expect_contiguous(state.initial_state, "initial_state");
        }
        if (!state.final_state.empty()) {
            expect_shape(state.final_state, "final_state", state_shape);
            expect_contiguous(state.final_state, "final_state");
        }
        require(ws.bytes >= workspace_bytes(seqs), "workspace too small for ", seqs.count(), " sequences of ",
                seqs.rows(), " tokens: has ", ws.bytes, " bytes, needs ", workspace_bytes(seqs));
        check_inputs(u, state.initial_state, ctx);

        workspace_arena arena(ws);
        const bool own_state = state.final_state.empty();
        const auto buf = layout(arena, seqs, own_state);
        run(u, out, seqs, buf, state, ctx);
    }

    // ---- Decoding (SPEC.md section 5): one sequence, batch 1 -------------------------------------
    using decode_state = mixer_decode_state<T, Backend>;

    // Workspace for prefill() over `prompt_len` tokens and for every step() after it, with a KV
    // cache of `cache_tokens` = min(P, max_tokens) tokens (max_tokens is always enough). It does not
    // grow with max_tokens past P: an SSM layer decodes a sequence of any length in this much.
    std::size_t decode_workspace_bytes(index_t prompt_len, index_t cache_tokens) const {
        workspace_arena measure;
        step_layout(measure, cache_tokens);
        return std::max(measure.used(), workspace_bytes(1, std::max<index_t>(prompt_len, 1)));
    }

    // One forward pass over a prompt u (1, L, d_model) at TransPoint `transpoint`, leaving `st` ready
    // for step() at position L: the conv window, and the KV cache (L < P) or the SSM state (L >= P).
    // `max_tokens` bounds the tokens that can be cached below P (prompt plus generated ones); past P
    // decoding goes on in constant memory.
    void prefill(tensor_view<const T, 3> u, tensor_view<T, 3> out, index_t transpoint, index_t max_tokens,
                 workspace_span ws, decode_state& st, const context& ctx = {}) const {
        const auto& c = config();
        const index_t L = u.extent(1);
        require(u.extent(0) == 1, "prefill decodes one sequence: tensor 'u' must have batch 1, got ", u.extent(0));
        require(transpoint >= 0, "TransPoint P = ", transpoint, " is negative (P must be >= 0)");
        require(L <= max_tokens, "prompt of ", L, " tokens exceeds max_tokens = ", max_tokens);
        const index_t cache = std::min(transpoint, max_tokens);
        (void)checked_mul(cache, c.ngroups * c.d_state + c.d_inner() + c.nheads(), "KV cache elements for min(P = ",
                          transpoint, ", max_tokens = ", max_tokens, ") tokens");
        require(ws.bytes >= decode_workspace_bytes(L, cache), "workspace too small for prefill: has ", ws.bytes,
                " bytes, needs ", decode_workspace_bytes(L, cache));
        const index_t P = transpoint;  // may exceed the prompt: the cache then keeps growing while decoding
        st.reset(c, P, max_tokens, ctx);
        const tensor_view<A, 4> state(st.state.data(), {1, c.nheads(), c.headdim, c.d_state});
        forward(u, out, P, ws, {{}, state}, ctx);  // checks everything else; P > L is read as L

        // The workspace still holds the pass's activations: take the decoding state from them.
        workspace_arena arena(ws);
        const auto buf = layout(arena, sequence_layout::dense(1, L), /*own_state=*/false);
        const index_t K = c.d_conv, history = std::min(K - 1, L);
        traits::copy(ctx, buf.zxbcdt + (L - history) * c.d_in_proj(), st.window.data() + (K - 1 - history) * c.d_in_proj(),
                     static_cast<std::size_t>(history * c.d_in_proj()));
        if (L < P) {
            const index_t cd = c.conv_dim(), gn = c.ngroups * c.d_state;
            traits::copy_rows(ctx, buf.xbc + c.d_inner(), cd, st.keys.data(), gn, L, gn);
            traits::copy_rows(ctx, buf.xbc, cd, st.values.data(), c.d_inner(), L, c.d_inner());
            traits::copy(ctx, buf.dt, st.dts.data(), static_cast<std::size_t>(L * c.nheads()));
        } else {
            st.converted = true;  // the pass's final state already is the SSM state after token L - 1
            st.release_cache();
        }
        st.position = L;
    }

    // One token: u (d_model) -> out (d_model) at position st.position, which then advances.
    void step(tensor_view<const T, 1> u, tensor_view<T, 1> out, workspace_span ws, decode_state& st,
              const context& ctx = {}) const {
        const auto& c = config();
        expect_shape(u, "u", {c.d_model});
        expect_shape(out, "out", {c.d_model});
        const index_t t = st.position, P = st.transpoint, cap = st.capacity(c);
        require(t >= P || t < cap, "decoding past max_tokens = ", cap, " inside the attention prefix (position ", t, ")");
        require(ws.bytes >= decode_workspace_bytes(1, cap), "workspace too small for a decoding step: has ", ws.bytes,
                " bytes, needs ", decode_workspace_bytes(1, cap));
        check_inputs(tensor_view<const T, 3>(u.data(), {1, 1, c.d_model}), {}, ctx);

        workspace_arena arena(ws);
        const auto b = step_layout(arena, cap);
        const index_t K = c.d_conv, dp = c.d_in_proj(), cd = c.conv_dim(), h = c.nheads(), p = c.headdim,
                      g = c.ngroups, n = c.d_state;
        // The conv sees the history rows and the newest token's in-projection, in order.
        traits::copy(ctx, st.window.data(), b.window, static_cast<std::size_t>((K - 1) * dp));
        A* newest = b.window + (K - 1) * dp;
        traits::gemm_nt(ctx, 1, dp, c.d_model, u.data(), c.d_model, params_.in_proj.data(), c.d_model, newest, dp);
        projection::conv_silu(ctx, c, 1, K, b.window, params_.conv_weight.data(), params_.conv_bias.data(), b.xbc);
        projection::time_steps(ctx, c, 1, newest, params_.dt_bias.data(), params_.A_log.data(), params_.D.data(), b.dt,
                               b.a_coef, b.d_coef);
        const T* xbc = b.xbc + (K - 1) * cd;  // x | B | C of the newest token

        if (t < P) {
            traits::copy(ctx, xbc + c.d_inner(), st.keys.data() + t * g * n, static_cast<std::size_t>(g * n));
            traits::copy(ctx, xbc, st.values.data() + t * h * p, static_cast<std::size_t>(h * p));
            traits::copy(ctx, b.dt, st.dts.data() + t * h, static_cast<std::size_t>(h));
            decode_attention::run(ctx, c, xbc + c.d_inner() + g * n, st.keys.data(), st.values.data(), b.d_coef, t + 1,
                                  b.y, b.scratch);
        } else {
            const tensor_view<A, 4> S(st.state.data(), {1, h, p, n});
            if (!st.converted) {  // the first SSM token: the Memory Converter turns the cache into S
                traits::fill(ctx, S.data(), static_cast<std::size_t>(S.size()), A(0));
                const ssm_inputs<T> prefix{
                    tensor_view<const T, 4>(st.values.data(), {1, P, h, p}),
                    tensor_view<const T, 4>(st.keys.data(), {1, P, g, n}),
                    tensor_view<const T, 4>(st.keys.data(), {1, P, g, n}),
                    tensor_view<const A, 3>(st.dts.data(), {1, P, h}),
                    b.a_coef,
                    b.d_coef,
                };
                converter::run(ctx, c, prefix, P, S, b.scratch);
                st.converted = true;
                st.release_cache();
            }
            const ssm_inputs<T> token{
                tensor_view<const T, 4>(xbc, {1, 1, h, p}),
                tensor_view<const T, 4>(xbc + c.d_inner(), {1, 1, g, n}),
                tensor_view<const T, 4>(xbc + c.d_inner() + g * n, {1, 1, g, n}),
                tensor_view<const A, 3>(b.dt, {1, 1, h}),
                b.a_coef,
                b.d_coef,
            };
            decode_scan::run(ctx, c, token, tensor_view<A, 4>(b.y, {1, 1, h, p}), S);
        }
        projection::gated_rmsnorm(ctx, c, 1, 1, t >= P ? 0 : 1, Policies::attention::gate_by_z, b.y, newest,
                                  params_.norm_weight.data(), b.normed);
        traits::gemm_nt(ctx, 1, c.d_model, c.d_inner(), b.normed, c.d_inner(), params_.out_proj.data(), c.d_inner(),
                        out.data(), c.d_model);
        traits::copy(ctx, b.window + dp, st.window.data(), static_cast<std::size_t>((K - 1) * dp));
        ++st.position;
    }

    // ---- Batched decoding: one token for each of n sequences at once ------------------------------
    // Row r of u and out (n, d_model) is the next token of the sequence whose state is states[r],
    // each at its own position and stage: below its TransPoint it appends to its KV cache and
    // attends, at it the Memory Converter turns the cache into the SSM state, past it the SSM steps.
    // The caches are paged (st.paged): a sequence below its TransPoint must hold a page for its
    // position (decode/batch.hpp takes it from a pool, and gives a converted cache's pages back).
    // The projections are GEMMs over all n rows; the attention or SSM step runs per sequence. Each
    // row equals what step() gives for that sequence alone.
    std::size_t batch_step_workspace_bytes(index_t n, index_t cache_tokens) const {
        workspace_arena measure;
        batch_step_layout(measure, n, cache_tokens);
        return measure.used();
    }
    void step_batch(tensor_view<const T, 2> u, tensor_view<T, 2> out, workspace_span ws,
                    std::span<decode_state* const> states, const context& ctx = {}) const {
        static_assert(has_packed_batches<Backend>, "batched decoding runs on the CPU backend for now");
        const auto& c = config();
        const index_t n = u.extent(0);
        expect_shape(u, "u", {n, c.d_model});
        expect_shape(out, "out", {n, c.d_model});
        expect_contiguous(u, "u");
        expect_contiguous(out, "out");
        require(n > 0 && static_cast<index_t>(states.size()) == n, "batched step: ", n, " rows of 'u' for ",
                states.size(), " decoding states");
        index_t cache_tokens = 1;
        for (index_t r = 0; r < n; ++r) {
            const decode_state& st = *states[std::size_t(r)];
            const index_t t = st.position;
            if (t >= st.transpoint) continue;
            require(st.paged.page_tokens > 0 && st.paged.pages() * st.paged.page_tokens > t,
                    "batched step: sequence row ", r, " at position ", t, " below its TransPoint ", st.transpoint,
                    " has no KV page for its token");
            cache_tokens = std::max(cache_tokens, t + 1);
        }
        require(ws.bytes >= batch_step_workspace_bytes(n, cache_tokens), "workspace too small for a batched step: has ",
                ws.bytes, " bytes, needs ", batch_step_workspace_bytes(n, cache_tokens));
        check_inputs(tensor_view<const T, 3>(u.data(), {1, n, c.d_model}), {}, ctx);

        workspace_arena arena(ws);
        const auto b = batch_step_layout(arena, n, cache_tokens);
        const index_t K = c.d_conv, dp = c.d_in_proj(), cd = c.conv_dim(), h = c.nheads(), p = c.headdim,
                      g = c.ngroups, nst = c.d_state, di = c.d_inner();
        traits::gemm_nt(ctx, n, dp, c.d_model, u.data(), c.d_model, params_.in_proj.data(), c.d_model, b.zx, dp);
        // Each sequence's conv sees its history rows then its newest token: n windows of d_conv rows,
        // one dense batch for the conv kernel, whose last row per window is the one wanted.
        for (index_t r = 0; r < n; ++r) {
            A* win = b.window + r * K * dp;
            traits::copy(ctx, states[std::size_t(r)]->window.data(), win, static_cast<std::size_t>((K - 1) * dp));
            traits::copy(ctx, b.zx + r * dp, win + (K - 1) * dp, static_cast<std::size_t>(dp));
        }
        projection::conv_silu(ctx, c, n, K, b.window, params_.conv_weight.data(), params_.conv_bias.data(), b.xbc);
        projection::time_steps(ctx, c, n, b.zx, params_.dt_bias.data(), params_.A_log.data(), params_.D.data(), b.dt,
                               b.a_coef, b.d_coef);
        auto newest_xbc = [&](index_t r) { return b.xbc + (r * K + K - 1) * cd; };

        // Sequences at their TransPoint first, one at a time (each conversion is parallel inside).
        for (index_t r = 0; r < n; ++r) {
            decode_state& st = *states[std::size_t(r)];
            if (st.position >= st.transpoint && !st.converted) convert_paged(ctx, st, b.a_coef, b.d_coef, b.convert);
        }
        const index_t work = std::max(h * p * nst, cache_tokens * (g * nst + h * p));
        parallel_for(n, work, [&](index_t r, int thread) {
            decode_state& st = *states[std::size_t(r)];
            const index_t t = st.position;
            const T* xbc = newest_xbc(r);
            A* y = b.y + r * di;
            if (t < st.transpoint) {
                std::copy_n(xbc + di, g * nst, st.paged.key_row(t, g * nst));
                std::copy_n(xbc, h * p, st.paged.value_row(t, h * p));
                std::copy_n(b.dt + r * h, h, st.paged.dt_row(t, h));
                const workspace_span slice{b.attention + std::size_t(thread) * b.attention_bytes, b.attention_bytes};
                decode_attention::run_paged(ctx, c, xbc + di + g * nst, st.paged, b.d_coef, t + 1, y, slice);
            } else {
                const ssm_inputs<T> token{
                    tensor_view<const T, 4>(xbc, {1, 1, h, p}),
                    tensor_view<const T, 4>(xbc + di, {1, 1, g, nst}),
                    tensor_view<const T, 4>(xbc + di + g * nst, {1, 1, g, nst}),
                    tensor_view<const A, 3>(b.dt + r * h, {1, 1, h}),
                    b.a_coef,
                    b.d_coef,
                };
                decode_scan::run(ctx, c, token, tensor_view<A, 4>(y, {1, 1, h, p}),
                                 tensor_view<A, 4>(st.state.data(), {1, h, p, nst}));
            }
        });
        // Attention rows are not gated: each row is a one-token sequence whose TransPoint is 1
        // (attention) or 0 (SSM).
        for (index_t r = 0; r < n; ++r)
            b.gate_points[r] = states[std::size_t(r)]->position < states[std::size_t(r)]->transpoint ? 1 : 0;
        projection::gated_rmsnorm(ctx, c,
                                  sequence_layout::dense(n, 1).split_at(std::span<const index_t>(b.gate_points, std::size_t(n))),
                                  Policies::attention::gate_by_z, b.y, b.zx, params_.norm_weight.data(), b.normed);
        traits::gemm_nt(ctx, n, c.d_model, di, b.normed, di, params_.out_proj.data(), di, out.data(), c.d_model);
        for (index_t r = 0; r < n; ++r) {
            decode_state& st = *states[std::size_t(r)];
            traits::copy(ctx, b.window + (r * K + 1) * dp, st.window.data(), static_cast<std::size_t>((K - 1) * dp));
            ++st.position;
        }
    }

    // Convenience: grows `ws` as needed.
    void forward(tensor_view<const T, 3> u, tensor_view<T, 3> out, index_t transpoint, workspace<Backend>& ws,
                 mixer_state_io<compute_type> state = {}, const context& ctx = {}) const {
        forward(u, out, transpoint, ws.reserve(workspace_bytes(u.extent(0), u.extent(1))), state, ctx);
    }
    void forward(tensor_view<const T, 3> u, tensor_view<T, 3> out, const sequence_layout& seqs, workspace<Backend>& ws,
                 mixer_state_io<compute_type> state = {}, const context& ctx = {}) const {
        forward(u, out, seqs, ws.reserve(workspace_bytes(seqs)), state, ctx);
    }

private:
    using A = compute_type;

    struct buffers {
        A* zxbcdt;       // (batch*L, d_in_proj)
        T* xbc;          // (batch*L, conv_dim), after conv + SiLU, in the storage type
        A* dt;           // (batch*L, nheads)
        A* a_coef;       // (nheads): A = -exp(A_log)
        A* d_coef;       // (nheads): D in the compute type
        A* y;            // (batch*L, d_inner)
        T* normed;       // (batch*L, d_inner): the out-projection's input
        A* state;        // (batch, nheads, headdim, d_state) when the caller does not take it
        workspace_span scratch;  // shared by attention, converter and scan, which run one after another
    };

    buffers layout(workspace_arena& arena, const sequence_layout& seqs, bool own_state) const {
        const auto& c = config();
        const auto rows = static_cast<std::size_t>(seqs.rows());
        buffers b{};
        b.zxbcdt = arena.take<A>(rows * c.d_in_proj());
        b.xbc = arena.take<T>(rows * c.conv_dim());
        b.dt = arena.take<A>(rows * c.nheads());
        b.a_coef = arena.take<A>(c.nheads());
        b.d_coef = arena.take<A>(c.nheads());
        b.y = arena.take<A>(rows * c.d_inner());
        b.normed = arena.take<T>(rows * c.d_inner());
        b.state = own_state
                      ? arena.take<A>(static_cast<std::size_t>(seqs.count() * c.nheads() * c.headdim * c.d_state))
                      : nullptr;
        const std::size_t scratch = std::max({scratch_of<attention>(c, seqs), scratch_of<converter>(c, seqs),
                                              scratch_of<scan>(c, seqs)});
        std::byte* s = arena.take<std::byte>(scratch);
        b.scratch = {s, arena.measuring() ? 0 : scratch};
        return b;
    }
    // A kernel's scratch for a layout: backends with packed kernels size it from the layout, the
    // others from the dense (batch, L) it then is.
    template <class Kernel>
    static std::size_t scratch_of(const mixer_config& c, const sequence_layout& seqs) {
        if constexpr (has_packed_batches<Backend>) return Kernel::template scratch_bytes<T>(c, seqs);
        else return Kernel::template scratch_bytes<T>(c, seqs.count(), seqs.max_length());
    }

    struct step_buffers {
        A* window;   // (d_conv, d_in_proj): history then the newest token
        T* xbc;      // (d_conv, conv_dim)
        A* dt;       // (nheads)
        A* a_coef;   // (nheads)
        A* d_coef;   // (nheads)
        A* y;        // (nheads * headdim)
        T* normed;   // (d_inner)
        workspace_span scratch;
    };
    step_buffers step_layout(workspace_arena& arena, index_t cache) const {
        const auto& c = config();
        step_buffers b{};
        b.window = arena.take<A>(static_cast<std::size_t>(c.d_conv * c.d_in_proj()));
        b.xbc = arena.take<T>(static_cast<std::size_t>(c.d_conv * c.conv_dim()));
        b.dt = arena.take<A>(c.nheads());
        b.a_coef = arena.take<A>(c.nheads());
        b.d_coef = arena.take<A>(c.nheads());
        b.y = arena.take<A>(c.d_inner());
        b.normed = arena.take<T>(c.d_inner());
        const std::size_t scratch = std::max({decode_attention::template scratch_bytes<T>(c, std::max<index_t>(cache, 1)),
                                              converter::template scratch_bytes<T>(c, 1, std::max<index_t>(cache, 1))});
        std::byte* s = arena.take<std::byte>(scratch);
        b.scratch = {s, arena.measuring() ? 0 : scratch};
        return b;
    }

    struct batch_step_buffers {
        A* zx;            // (n, d_in_proj): the newest tokens' in-projections
        A* window;        // (n * d_conv, d_in_proj): per sequence its history, then its newest row
        T* xbc;           // (n * d_conv, conv_dim)
        A* dt;            // (n, nheads)
        A* a_coef;        // (nheads)
        A* d_coef;        // (nheads)
        A* y;             // (n, d_inner)
        T* normed;        // (n, d_inner)
        index_t* gate_points;  // (n): host memory (the CPU backend's)
        workspace_span convert;      // the converter's, for one sequence at a time
        std::byte* attention;        // per thread, attention_bytes each
        std::size_t attention_bytes;
    };
    batch_step_buffers batch_step_layout(workspace_arena& arena, index_t n, index_t cache_tokens) const {
        const auto& c = config();
        const auto rows = static_cast<std::size_t>(n), windows = static_cast<std::size_t>(n * c.d_conv);
        batch_step_buffers b{};
        b.zx = arena.take<A>(rows * c.d_in_proj());
        b.window = arena.take<A>(windows * c.d_in_proj());
        b.xbc = arena.take<T>(windows * c.conv_dim());
        b.dt = arena.take<A>(rows * c.nheads());
        b.a_coef = arena.take<A>(c.nheads());
        b.d_coef = arena.take<A>(c.nheads());
        b.y = arena.take<A>(rows * c.d_inner());
        b.normed = arena.take<T>(rows * c.d_inner());
        b.gate_points = arena.take<index_t>(rows);
        const std::size_t convert = converter::template scratch_bytes<T>(c, 1, std::max<index_t>(cache_tokens, 1));
        b.convert = {arena.take<std::byte>(convert), arena.measuring() ? 0 : convert};
        // Rounded to the arena's alignment, so that every thread's slice starts aligned.
        const std::size_t per_thread = (decode_attention::template scratch_bytes<T>(c, std::max<index_t>(cache_tokens, 1)) +
                                        workspace_arena::alignment - 1) /
                                       workspace_arena::alignment * workspace_arena::alignment;
        b.attention = arena.take<std::byte>(per_thread * static_cast<std::size_t>(max_threads()));
        b.attention_bytes = per_thread;
        return b;
    }

    // The Memory Converter over a paged cache, page by page in token order: each page's chunk
    // state decays what came before it, which composes to the converter over the whole prefix.
    void convert_paged(const context& ctx, decode_state& st, const A* a_coef, const A* d_coef,
                       workspace_span scratch) const {
        const auto& c = config();
        const index_t P = st.transpoint, h = c.nheads(), p = c.headdim, g = c.ngroups, n = c.d_state;
        const index_t page = st.paged.page_tokens;
        const tensor_view<A, 4> S(st.state.data(), {1, h, p, n});
        traits::fill(ctx, S.data(), static_cast<std::size_t>(S.size()), A(0));
        for (index_t first = 0, i = 0; first < P; first += page, ++i) {
            const index_t len = std::min(page, P - first);
            const ssm_inputs<T> prefix{
                tensor_view<const T, 4>(st.paged.values[std::size_t(i)], {1, len, h, p}),
                tensor_view<const T, 4>(st.paged.keys[std::size_t(i)], {1, len, g, n}),
                tensor_view<const T, 4>(st.paged.keys[std::size_t(i)], {1, len, g, n}),
                tensor_view<const A, 3>(st.paged.dts[std::size_t(i)], {1, len, h}),
                a_coef,
                d_coef,
            };
            converter::run(ctx, c, prefix, len, S, scratch);
        }
        st.converted = true;
    }

    void check_inputs(tensor_view<const T, 3> u, tensor_view<const A, 4> initial_state, const context& ctx) const {
        if (!checked_.done()) {
            check_finite(params_, "mixer", ctx);
            checked_.set();
        }
        if constexpr (!Policies::input_check::per_call) return;
        const index_t bad = traits::first_non_finite(ctx, u.data(), static_cast<std::size_t>(u.size()));
        require(bad < 0, "tensor 'u' holds a non-finite value at flat index ", bad);
        if (!initial_state.empty()) {
            const index_t bad_state =
                traits::first_non_finite(ctx, initial_state.data(), static_cast<std::size_t>(initial_state.size()));
            require(bad_state < 0, "tensor 'initial_state' holds a non-finite value at flat index ", bad_state);
        }
    }

    void run(tensor_view<const T, 3> u, tensor_view<T, 3> out, const sequence_layout& seqs, const buffers& buf,
             const mixer_state_io<A>& io, const context& ctx) const {
        const auto& c = config();
        const auto& w = params_;
        // The views' (batch, L): (sequences, L) dense, (1, total) packed; the layout says which rows
        // are whose.
        const index_t vb = u.extent(0), vL = u.extent(1), rows = seqs.rows();
        const index_t h = c.nheads(), p = c.headdim, g = c.ngroups, n = c.d_state, cd = c.conv_dim();

        traits::gemm_nt(ctx, rows, c.d_in_proj(), c.d_model, u.data(), c.d_model, w.in_proj.data(), c.d_model,
                        buf.zxbcdt, c.d_in_proj());
        if constexpr (has_packed_batches<Backend>)
            projection::conv_silu(ctx, c, seqs, buf.zxbcdt, w.conv_weight.data(), w.conv_bias.data(), buf.xbc);
        else projection::conv_silu(ctx, c, vb, vL, buf.zxbcdt, w.conv_weight.data(), w.conv_bias.data(), buf.xbc);
        projection::time_steps(ctx, c, rows, buf.zxbcdt, w.dt_bias.data(), w.A_log.data(), w.D.data(), buf.dt,
                               buf.a_coef, buf.d_coef);

        // x, B, C are strided views into xBC.
        ssm_inputs<T> in{
            tensor_view<const T, 4>(buf.xbc, {vb, vL, h, p}, {vL * cd, cd, p, 1}),
            tensor_view<const T, 4>(buf.xbc + c.d_inner(), {vb, vL, g, n}, {vL * cd, cd, n, 1}),
            tensor_view<const T, 4>(buf.xbc + c.d_inner() + g * n, {vb, vL, g, n}, {vL * cd, cd, n, 1}),
            tensor_view<const A, 3>(buf.dt, {vb, vL, h}),
            buf.a_coef,
            buf.d_coef,
        };
        const tensor_view<A, 4> y(buf.y, {vb, vL, h, p});
        const tensor_view<A, 4> S(own(buf, io), {seqs.count(), h, p, n});

        if (io.initial_state.empty()) traits::fill(ctx, S.data(), static_cast<std::size_t>(S.size()), A(0));
        else traits::copy(ctx, io.initial_state.data(), S.data(), static_cast<std::size_t>(S.size()));
        if constexpr (has_packed_batches<Backend>) {
            attention::run(ctx, c, in, seqs, y, buf.scratch);
            converter::run(ctx, c, in, seqs, S, buf.scratch);
            scan::run(ctx, c, in, seqs, y, S, buf.scratch);
            projection::gated_rmsnorm(ctx, c, seqs, Policies::attention::gate_by_z, buf.y, buf.zxbcdt,
                                      w.norm_weight.data(), buf.normed);
        } else {
            const index_t P = seqs.prefix(0);  // dense, one TransPoint (forward() checked)
            attention::run(ctx, c, in, P, y, buf.scratch);
            converter::run(ctx, c, in, P, S, buf.scratch);
            scan::run(ctx, c, in, P, vL, y, S, buf.scratch);
            projection::gated_rmsnorm(ctx, c, vb, vL, P, Policies::attention::gate_by_z, buf.y, buf.zxbcdt,
                                      w.norm_weight.data(), buf.normed);
        }
        traits::gemm_nt(ctx, rows, c.d_model, c.d_inner(), buf.normed, c.d_inner(), w.out_proj.data(), c.d_inner(),
                        out.data(), c.d_model);
    }

    static A* own(const buffers& buf, const mixer_state_io<A>& io) {
        return io.final_state.empty() ? buf.state : io.final_state.data();
    }

    params_type params_;
    mutable check_flag checked_;  // forward() is const and may run on several threads at once
};

}  // namespace transmamba
