#pragma once
// The backward of the exact Memory Converter on the GPU, with the CPU kernel's interface and math
// (backend/cpu/converter_backward.hpp, docs/training.md). Forward, per head:
//   S = Lam S_init + sum_{j<P} w_j x_j B_j^T,  w_j = e_j dt_j,  e_j = exp(A suf_j),
//   suf_j = sum_{j<m<P} dt_m,  Lam = exp(A tot),  tot = sum_{m<P} dt_m.
// From G = dL/dS, with q_j = x_j^T G B_j and r = <G, S_init>:
//   dx_j = w_j G B_j,  dB_j = w_j G^T x_j,  dS_init = Lam G,
//   ddt_m = q_m e_m + A sum_{j<m} q_j w_j + A r Lam,  dA = sum_j q_j w_j suf_j + r Lam tot.
// G is the same for every token, so the two products per token run in parallel over the prefix;
// only the suffix sums of dt and the prefix sums of q w are walked in order, once per (b, head),
// in the CPU's order. dB of a group shared by several heads is kept per head and summed in head
// order (ssd/backward_views.cuh): deterministic, no atomics.
#include <cuda_runtime.h>

#include <cstddef>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cuda/converter.cuh"
#include "transmamba/backend/cuda/ssd/backward_views.cuh"
#include "transmamba/backend/cuda/traits.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/ssm_grads.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/converter.hpp"

namespace transmamba {

namespace kernels::cuda::ssd {

struct converter_backward_policy {
    static constexpr int threads = 256;
    static constexpr int tokens_per_warp = 4;
    static constexpr int max_rows = default_policy::max_dim / 32;  // rows (or columns) of G per lane
};

template <class T>
struct converter_backward_args {
    operands<T> op;
    index_t prefix;
    const float* G;        // (batch, h, p, n)
    const float* init;     // (batch, h, p, n) or null (zeros)
    float* d_init;         // (batch, h, p, n) or null
    grad_pointers g;
    float* suf;            // (batch * h, prefix): sum_{j<m<P} dt_m
    float* qw;             // (batch * h, prefix): q_j w_j
    float* meta;           // (batch * h, 3): r, Lam, tot
    head_partials dB;      // data null when a group has one head
};

// Per (b, head): the suffix sums of dt (from the end, as the forward), Lam, r = <G, S_init> and
// dS_init = Lam G.
template <class T, class Policy>
__global__ void __launch_bounds__(Policy::threads) converter_backward_prepare_kernel(converter_backward_args<T> a) {
    constexpr int threads = Policy::threads, warps = threads / 32;
    __shared__ float partial[warps];
    __shared__ float shared_lam;
    const auto& op = a.op;
    const int bh = blockIdx.x, b = bh / op.nheads, head = bh % op.nheads;
    const int tid = threadIdx.x;
    const index_t pn = index_t(op.headdim) * op.dstate, P = a.prefix;
    const float A = op.A[head];
    const float* G = a.G + index_t(bh) * pn;
    float r = 0.0f;
    if (a.init != nullptr) {
        const float* S0 = a.init + index_t(bh) * pn;
        for (index_t e = tid; e < pn; e += threads) r += G[e] * S0[e];
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2) r += __shfl_xor_sync(0xffffffffu, r, offset);
        if (tid % 32 == 0) partial[tid / 32] = r;
    }
    if (tid == 0) {
        float running = 0.0f;
        float* suf = a.suf + index_t(bh) * P;
        for (index_t j = P - 1; j >= 0; --j) {
            suf[j] = running;
            running += op.dt_at(b, j, head);
        }
        const float lam = expf(A * running);
        shared_lam = lam;
        a.meta[bh * 3 + 1] = lam;
        a.meta[bh * 3 + 2] = running;
    }
    __syncthreads();
    if (tid == 0) {
        float total = 0.0f;
        if (a.init != nullptr)
            for (int w = 0; w < warps; ++w) total += partial[w];
        a.meta[bh * 3 + 0] = total;
    }
    if (a.d_init != nullptr) {
        const float lam = shared_lam;
        float* dI = a.d_init + index_t(bh) * pn;
        for (index_t e = tid; e < pn; e += threads) dI[e] = lam * G[e];
    }
}

// Per token j of the prefix (a warp per token): G B_j, G^T x_j, q_j, and what they add into dx, dB
// and ddt. G sits in shared memory with rows padded to n + 1 floats: lanes reading a column each
// (G^T x) or a row each (G B) meet different banks.
template <class T, class Policy>
__global__ void __launch_bounds__(Policy::threads) converter_backward_tokens_kernel(converter_backward_args<T> a) {
    constexpr int threads = Policy::threads, warps = threads / 32, max_rows = Policy::max_rows;
    extern __shared__ float cbw_smem[];
    const auto& op = a.op;
    const int p = op.headdim, n = op.dstate, ld = n + 1;
    float* G = cbw_smem;                 // [p][n + 1]
    float* own = G + p * ld;             // [warps][p + n]: the warp's x_j and B_j
    const int bh = blockIdx.x, b = bh / op.nheads, head = bh % op.nheads, grp = head / op.heads_per_group;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const float* Gg = a.G + index_t(bh) * p * n;
    for (int e = tid; e < p * n; e += threads) G[(e / n) * ld + e % n] = Gg[e];
    __syncthreads();
    float* xs = own + warp * (p + n);
    float* bs = xs + p;
    const float A = op.A[head];
    const bool direct = a.dB.data == nullptr;
    const index_t first = index_t(blockIdx.y) * warps * Policy::tokens_per_warp;
    for (int k = 0; k < Policy::tokens_per_warp; ++k) {
        const index_t j = first + index_t(k) * warps + warp;
        if (j >= a.prefix) break;
        const T* xj = op.x + b * op.x_sb + j * op.x_st + head * op.x_sh;
        const T* Bj = op.B + b * op.b_sb + j * op.b_st + grp * op.b_sg;
        __syncwarp();
        for (int e = lane; e < p; e += 32) xs[e] = to_float(xj[e]);
        for (int e = lane; e < n; e += 32) bs[e] = to_float(Bj[e]);
        __syncwarp();
        const float dt = op.dt_at(b, j, head), ej = expf(A * a.suf[index_t(bh) * a.prefix + j]), w = ej * dt;
        float q = 0.0f;
        float* dx = a.g.x + b * a.g.x_sb + j * a.g.x_st + head * a.g.x_sh;
#pragma unroll
        for (int r = 0; r < max_rows; ++r) {
            const int i = lane + 32 * r;
            if (i < p) {
                float gb = 0.0f;
                for (int c = 0; c < n; ++c) gb += G[i * ld + c] * bs[c];
                q += xs[i] * gb;
                dx[i] += w * gb;
            }
        }
#pragma unroll
        for (int c = 0; c < max_rows; ++c) {
            const int col = lane + 32 * c;
            if (col < n) {
                float gx = 0.0f;
                for (int i = 0; i < p; ++i) gx += G[i * ld + col] * xs[i];
                if (direct) a.g.B[b * a.g.b_sb + j * a.g.b_st + grp * a.g.b_sg + col] += w * gx;
                else a.dB.row(b, j, head, n)[col] = w * gx;
            }
        }
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2) q += __shfl_xor_sync(0xffffffffu, q, offset);
        if (lane == 0) {
            a.g.dt[b * a.g.dt_sb + j * a.g.dt_st + head * a.g.dt_sh] += q * ej;
            a.qw[index_t(bh) * a.prefix + j] = q * w;
        }
    }
}

// Per (b, head), in token order as on the CPU: ddt_m += A (sum_{j<m} q_j w_j + r Lam) and dA.
template <class T>
__global__ void converter_backward_finish_kernel(converter_backward_args<T> a) {
    const auto& op = a.op;
    const int bh = blockIdx.x * blockDim.x + threadIdx.x;
    if (bh >= op.batch * op.nheads) return;
    const int b = bh / op.nheads, head = bh % op.nheads;
    const float A = op.A[head], r = a.meta[bh * 3 + 0], lam = a.meta[bh * 3 + 1], tot = a.meta[bh * 3 + 2];
    const float* qw = a.qw + index_t(bh) * a.prefix;
    const float* suf = a.suf + index_t(bh) * a.prefix;
    float dA = r * lam * tot;
    for (index_t j = 0; j < a.prefix; ++j) dA += qw[j] * suf[j];
    float earlier = 0.0f;
    for (index_t m = 0; m < a.prefix; ++m) {
        a.g.dt[b * a.g.dt_sb + m * a.g.dt_st + head * a.g.dt_sh] += A * (earlier + r * lam);
        earlier += qw[m];
    }
    a.g.A[b * a.g.a_sb + head * a.g.a_sh] += dA;
}

struct converter_backward_scratch {
    float* suf;
    float* qw;
    float* meta;
    float* dB;  // null when a group has one head
};

inline converter_backward_scratch take_converter_backward_scratch(workspace_arena& arena, const mixer_config& cfg,
                                                                  index_t batch, index_t prefix) {
    const auto bh = static_cast<std::size_t>(batch * cfg.nheads());
    const auto P = static_cast<std::size_t>(prefix > 0 ? prefix : 1);
    converter_backward_scratch s{};
    s.suf = arena.take<float>(bh * P);
    s.qw = arena.take<float>(bh * P);
    s.meta = arena.take<float>(bh * 3);
    if (cfg.nheads() / cfg.ngroups > 1) s.dB = arena.take<float>(bh * P * cfg.d_state);
    return s;
}

}  // namespace kernels::cuda::ssd

template <>
struct converter_backward_kernel<exact_converter, cuda> {
    using policy = kernels::cuda::ssd::converter_backward_policy;

    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t batch, index_t prefix) {
        workspace_arena measure;
        kernels::cuda::ssd::take_converter_backward_scratch(measure, cfg, batch, prefix);
        return measure.used();
    }

    // dstate: G = dL/dS at P (batch, h, p, n). initial_state: S_init, or empty for zeros.
    // Adds into grads.x, .B, .dt on rows t < prefix and into grads.A; writes d_initial (when not
    // empty) = Lam G. prefix = 0 is the identity: d_initial = G.
    template <class T>
    static void run(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, index_t prefix,
                    tensor_view<const float, 4> initial_state, tensor_view<const float, 4> dstate,
                    const ssm_grads<float>& grads, tensor_view<float, 4> d_initial, workspace_span span) {
        namespace ssd = kernels::cuda::ssd;
        constexpr const char* who = "converter backward";
        const index_t batch = in.batch(), L = in.seqlen(), h = in.nheads(), p = in.headdim(), n = in.d_state(),
                      g = in.ngroups();
        const extents<4> state_shape{batch, h, p, n};
        expect_shape(dstate, "dstate", state_shape);
        require(dstate.is_contiguous() && (initial_state.empty() || initial_state.is_contiguous()) &&
                    (d_initial.empty() || d_initial.is_contiguous()),
                who, ": the states must be contiguous");
        if (!initial_state.empty()) expect_shape(initial_state, "initial_state", state_shape);
        if (!d_initial.empty()) expect_shape(d_initial, "d_initial", state_shape);
        const tensor_view<float, 4> G_view(const_cast<float*>(dstate.data()), state_shape);
        const auto op = ssd::make_operands<T, ssd::default_policy>(cfg, in, 0, prefix, G_view, who);
        const auto gp = ssd::make_grad_pointers(grads, batch, L, h, p, g, n, who);
        if (prefix <= 0 && d_initial.empty()) return;

        workspace_arena arena(align_span(span));
        const auto scratch = ssd::take_converter_backward_scratch(arena, cfg, batch, prefix);
        ssd::converter_backward_args<T> a{};
        a.op = op;
        a.prefix = prefix;
        a.G = dstate.data();
        a.init = initial_state.empty() ? nullptr : initial_state.data();
        a.d_init = d_initial.empty() ? nullptr : d_initial.data();
        a.g = gp;
        a.suf = scratch.suf;
        a.qw = scratch.qw;
        a.meta = scratch.meta;
        a.dB = {scratch.dB, prefix, static_cast<int>(h)};
        const auto bh = static_cast<unsigned>(batch * h);
        ssd::converter_backward_prepare_kernel<T, policy><<<bh, policy::threads, 0, ctx.stream>>>(a);
        kernels::cuda::check_launch("converter_backward_prepare_kernel");
        if (prefix <= 0) return;

        constexpr int warps = policy::threads / 32;
        const index_t per_block = index_t(warps) * policy::tokens_per_warp;
        const auto smem = sizeof(float) * static_cast<std::size_t>(p * (n + 1) + warps * (p + n));
        constexpr auto tokens = ssd::converter_backward_tokens_kernel<T, policy>;
        kernels::cuda::allow_shared_memory<tokens>(smem, "cudaFuncSetAttribute (converter_backward_tokens_kernel)");
        const dim3 grid(bh, static_cast<unsigned>((prefix + per_block - 1) / per_block));
        require(grid.y <= 65535, who, " (CUDA): prefix ", prefix, " needs more than 65535 token blocks");
        tokens<<<grid, policy::threads, smem, ctx.stream>>>(a);
        kernels::cuda::check_launch("converter_backward_tokens_kernel");
        ssd::converter_backward_finish_kernel<T><<<(bh + 127) / 128, 128, 0, ctx.stream>>>(a);
        kernels::cuda::check_launch("converter_backward_finish_kernel");
        if (scratch.dB != nullptr)
            ssd::launch_add_group_sums(ctx.stream, a.dB, gp.B, gp.b_sb, gp.b_st, gp.b_sg, op.batch, 0, int(g),
                                       int(h / g), int(n));
    }
};

}  // namespace transmamba
