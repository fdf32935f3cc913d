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

#include "transmamba/backend/traits.hpp"
#include "transmamba/block/mixer_params.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/numeric.hpp"
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
    using scan = scan_kernel<typename Policies::scan, Backend>;
    using converter = converter_kernel<typename Policies::converter, Backend>;

    explicit mixer(const mixer_config& cfg) : params_(cfg) {}

    const mixer_config& config() const { return params_.config; }
    const params_type& params() const { return params_; }
    // Mutable access marks the parameters for a finiteness check before the next forward pass.
    params_type& params() {
        checked_ = false;
        return params_;
    }

    // Bytes of workspace a forward pass over (batch, seqlen) needs, whatever the TransPoint.
    std::size_t workspace_bytes(index_t batch, index_t seqlen) const {
        workspace_arena measure;
        layout(measure, batch, seqlen, /*own_state=*/true);
        return measure.used();
    }

    // out (batch, L, d_model) = mixer(u (batch, L, d_model)) with the first `transpoint` tokens of
    // every sequence mixed by attention (transpoint > L means L). Everything is checked before
    // anything is written: on an error, out and final_state are untouched.
    void forward(tensor_view<const T, 3> u, tensor_view<T, 3> out, index_t transpoint, workspace_span ws,
                 mixer_state_io<compute_type> state = {}, const context& ctx = {}) const {
        const auto& c = config();
        const index_t batch = u.extent(0), L = u.extent(1);
        require(u.extent(2) == c.d_model, "tensor 'u' has shape ", shape_string(u.shape()), ", expected (batch, L, ",
                c.d_model, ")");
        require(batch > 0 && L > 0, "tensor 'u' is empty: shape ", shape_string(u.shape()));
        expect_contiguous(u, "u");
        expect_shape(out, "out", {batch, L, c.d_model});
        expect_contiguous(out, "out");
        require(transpoint >= 0, "TransPoint P = ", transpoint, " is negative (P must be in [0, L])");
        const index_t P = std::min(transpoint, L);
        const extents<4> state_shape{batch, c.nheads(), c.headdim, c.d_state};
        if (!state.initial_state.empty()) {
            expect_shape(state.initial_state, "initial_state", state_shape);
            expect_contiguous(state.initial_state, "initial_state");
        }
        if (!state.final_state.empty()) {
            expect_shape(state.final_state, "final_state", state_shape);
            expect_contiguous(state.final_state, "final_state");
        }
        require(ws.bytes >= workspace_bytes(batch, L), "workspace too small for batch ", batch, ", L ", L, ": has ",
                ws.bytes, " bytes, needs ", workspace_bytes(batch, L));
        check_inputs(u, state.initial_state, ctx);

        workspace_arena arena(ws);
        const bool own_state = state.final_state.empty();
        const auto buf = layout(arena, batch, L, own_state);
        run(u, out, P, buf, state, ctx);
    }

    // Convenience: grows `ws` as needed.
    void forward(tensor_view<const T, 3> u, tensor_view<T, 3> out, index_t transpoint, workspace<Backend>& ws,
                 mixer_state_io<compute_type> state = {}, const context& ctx = {}) const {
        forward(u, out, transpoint, ws.reserve(workspace_bytes(u.extent(0), u.extent(1))), state, ctx);
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

    buffers layout(workspace_arena& arena, index_t batch, index_t L, bool own_state) const {
        const auto& c = config();
        const auto rows = static_cast<std::size_t>(batch * L);
        buffers b{};
        b.zxbcdt = arena.take<A>(rows * c.d_in_proj());
        b.xbc = arena.take<T>(rows * c.conv_dim());
        b.dt = arena.take<A>(rows * c.nheads());
        b.a_coef = arena.take<A>(c.nheads());
        b.d_coef = arena.take<A>(c.nheads());
        b.y = arena.take<A>(rows * c.d_inner());
        b.normed = arena.take<T>(rows * c.d_inner());
        b.state = own_state ? arena.take<A>(static_cast<std::size_t>(batch * c.nheads() * c.headdim * c.d_state)) : nullptr;
        const std::size_t scratch = std::max({attention::template scratch_bytes<T>(c, batch, L),
                                              converter::template scratch_bytes<T>(c, batch, L),
                                              scan::template scratch_bytes<T>(c, batch, L)});
        std::byte* s = arena.take<std::byte>(scratch);
        b.scratch = {s, arena.measuring() ? 0 : scratch};
        return b;
    }

    void check_inputs(tensor_view<const T, 3> u, tensor_view<const A, 4> initial_state, const context& ctx) const {
        if (!checked_) {
            check_finite(params_);
            checked_ = true;
        }
        const index_t bad = traits::first_non_finite(ctx, u.data(), static_cast<std::size_t>(u.size()));
        require(bad < 0, "tensor 'u' holds a non-finite value at flat index ", bad);
        if (!initial_state.empty()) {
            const index_t bad_state =
                traits::first_non_finite(ctx, initial_state.data(), static_cast<std::size_t>(initial_state.size()));
            require(bad_state < 0, "tensor 'initial_state' holds a non-finite value at flat index ", bad_state);
        }
    }

    void run(tensor_view<const T, 3> u, tensor_view<T, 3> out, index_t P, const buffers& buf,
             const mixer_state_io<A>& io, const context& ctx) const {
        const auto& c = config();
        const auto& w = params_;
        const index_t batch = u.extent(0), L = u.extent(1), rows = batch * L;
        const index_t h = c.nheads(), p = c.headdim, g = c.ngroups, n = c.d_state, cd = c.conv_dim();

        traits::gemm_nt(ctx, rows, c.d_in_proj(), c.d_model, u.data(), c.d_model, w.in_proj.data(), c.d_model,
                        buf.zxbcdt, c.d_in_proj());
        projection::conv_silu(ctx, c, batch, L, buf.zxbcdt, w.conv_weight.data(), w.conv_bias.data(), buf.xbc);
        projection::time_steps(ctx, c, rows, buf.zxbcdt, w.dt_bias.data(), w.A_log.data(), w.D.data(), buf.dt,
                               buf.a_coef, buf.d_coef);

        // x, B, C are strided views into xBC.
        ssm_inputs<T> in{
            tensor_view<const T, 4>(buf.xbc, {batch, L, h, p}, {L * cd, cd, p, 1}),
            tensor_view<const T, 4>(buf.xbc + c.d_inner(), {batch, L, g, n}, {L * cd, cd, n, 1}),
            tensor_view<const T, 4>(buf.xbc + c.d_inner() + g * n, {batch, L, g, n}, {L * cd, cd, n, 1}),
            tensor_view<const A, 3>(buf.dt, {batch, L, h}),
            buf.a_coef,
            buf.d_coef,
        };
        const tensor_view<A, 4> y(buf.y, {batch, L, h, p});
        const tensor_view<A, 4> S(own(buf, io), {batch, h, p, n});

        attention::run(ctx, c, in, P, y, buf.scratch);
        if (io.initial_state.empty()) traits::fill(ctx, S.data(), static_cast<std::size_t>(S.size()), A(0));
        else traits::copy(ctx, io.initial_state.data(), S.data(), static_cast<std::size_t>(S.size()));
        converter::run(ctx, c, in, P, S, buf.scratch);
        scan::run(ctx, c, in, P, L, y, S, buf.scratch);

        projection::gated_rmsnorm(ctx, c, batch, L, P, Policies::attention::gate_by_z, buf.y, buf.zxbcdt,
                                  w.norm_weight.data(), buf.normed);
        traits::gemm_nt(ctx, rows, c.d_model, c.d_inner(), buf.normed, c.d_inner(), w.out_proj.data(), c.d_inner(),
                        out.data(), c.d_model);
    }

    static A* own(const buffers& buf, const mixer_state_io<A>& io) {
        return io.final_state.empty() ? buf.state : io.final_state.data();
    }

    params_type params_;
    mutable bool checked_ = false;
};

}  // namespace transmamba
