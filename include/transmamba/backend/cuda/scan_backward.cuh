#pragma once
// The backward of the SSM scan on the GPU, both scan policies, with the CPU kernel's interface and
// math (backend/cpu/scan_backward.hpp, docs/training.md): the recurrence run in reverse time,
//   G += dy_t C_t^T;  dC_t += S_t^T dy_t;  dD += dy_t . x_t;  dx_t += D dy_t + dt_t G B_t;
//   dB_t += dt_t G^T x_t;  ddt_t += x_t^T G B_t + A a_t <G, S_{t-1}>;  dA += dt_t a_t <G, S_{t-1}>;
//   G = a_t G.
// One thread block per (sequence, head) walks the span's blocks of chunk_size tokens from the last:
// it recomputes the block's states S_t from the state the forward saved before it (block_states)
// into its scratch, then walks the block backwards with G = dL/dS in shared memory. Each thread
// owns the same state elements (row i = warp + warps r, column j = lane + 32 c) in both walks, so
// neither needs a barrier on the states; the column sums (dC, dB) cross the warps through shared
// memory in a fixed order. dB and dC of a group shared by several heads are kept per head and summed
// over the group's heads in head order afterwards (ssd/backward_views.cuh): deterministic, no atomics.
// A chunked (SSD-shaped, tensor-core) backward is the next step (docs/training.md).
#include <cuda_runtime.h>

#include <cstddef>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cuda/scan.cuh"
#include "transmamba/backend/cuda/ssd/backward_views.cuh"
#include "transmamba/backend/cuda/traits.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/ssm_grads.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/scan.hpp"

namespace transmamba {

namespace kernels::cuda::ssd {

struct scan_backward_policy {
    static constexpr int threads = 256;
    static constexpr int max_cols = default_policy::max_dim / 32;  // state columns per lane
};

template <class T>
struct scan_backward_args {
    operands<T> op;
    const float* block_states;  // (batch, blocks, h, p, n)
    index_t bs_sb, bs_sblk, bs_sh;
    const float* dy;
    index_t dy_sb, dy_st, dy_sh;
    float* dstate;  // (batch, h, p, n): in dL/dS after t_end - 1, out before t_begin
    grad_pointers g;
    float* states;       // (batch * h, chunk, p, n): one block's recomputed states per (b, head)
    head_partials dB;    // data null when a group has one head (the kernel adds into g.B, g.C)
    head_partials dC;
};

template <class T, class Policy>
__global__ void __launch_bounds__(Policy::threads) scan_backward_walk_kernel(scan_backward_args<T> a) {
    constexpr int threads = Policy::threads, warps = threads / 32, max_cols = Policy::max_cols;
    extern __shared__ float sbw_smem[];
    const auto& op = a.op;
    const int p = op.headdim, n = op.dstate, Q = op.chunk;
    const index_t pn = index_t(p) * n;
    float* G = sbw_smem;          // [p][n]
    float* xs = G + pn;           // [p]
    float* dys = xs + p;          // [p]
    float* bs = dys + p;          // [n]
    float* cs = bs + n;           // [n]
    float* part_c = cs + n;       // [warps][n]: S^T dy, per warp
    float* part_x = part_c + warps * n;  // [warps][n]: G^T x, per warp
    float* part_s = part_x + warps * n;  // [warps][3]: <G, S_{t-1}>, x . G B, dy . x
    float* dts = part_s + warps * 3;     // [Q]
    float* decay = dts + Q;              // [Q]
    const int bh = blockIdx.x, b = bh / op.nheads, head = bh % op.nheads, grp = head / op.heads_per_group;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const bool direct = a.dB.data == nullptr;
    float* const Gg = a.dstate + index_t(bh) * pn;
    float* const mine = a.states + index_t(bh) * Q * pn;
    for (index_t e = tid; e < pn; e += threads) G[e] = Gg[e];
    const float A = op.A[head], D = op.D[head];
    float dA = 0.0f, dD = 0.0f;
    const index_t span = op.t_end - op.t_begin, blocks = (span + Q - 1) / Q;
    const T* x_bh = op.x + b * op.x_sb + head * op.x_sh;
    const T* B_bg = op.B + b * op.b_sb + grp * op.b_sg;
    const T* C_bg = op.C + b * op.c_sb + grp * op.c_sg;

    for (index_t blk = blocks - 1; blk >= 0; --blk) {
        const index_t t0 = op.t_begin + blk * Q;
        const int len = static_cast<int>(min(index_t(Q), op.t_end - t0));
        const float* start = a.block_states + b * a.bs_sb + blk * a.bs_sblk + head * a.bs_sh;
        __syncthreads();  // the previous block's time steps are no longer read
        for (int tt = tid; tt < len; tt += threads) {
            const float dt = op.dt_at(b, t0 + tt, head);
            dts[tt] = dt;
            decay[tt] = expf(dt * A);
        }
        __syncthreads();
        // The block's states, as the forward had them: each thread its own elements.
        for (int i = warp; i < p; i += warps) {
#pragma unroll
            for (int c = 0; c < max_cols; ++c) {
                const int j = lane + 32 * c;
                if (j >= n) break;
                const index_t e = index_t(i) * n + j;
                float s = start[e];
                for (int tt = 0; tt < len; ++tt) {
                    const index_t t = t0 + tt;
                    s = decay[tt] * s + dts[tt] * to_float(x_bh[t * op.x_st + i]) * to_float(B_bg[t * op.b_st + j]);
                    mine[tt * pn + e] = s;
                }
            }
        }
        for (int tt = len - 1; tt >= 0; --tt) {
            const index_t t = t0 + tt;
            __syncthreads();  // the previous token's inputs and partial sums are no longer read
            const float* dyt = a.dy + b * a.dy_sb + t * a.dy_st + head * a.dy_sh;
            for (int e = tid; e < p; e += threads) {
                xs[e] = to_float(x_bh[t * op.x_st + e]);
                dys[e] = dyt[e];
            }
            for (int e = tid; e < n; e += threads) {
                bs[e] = to_float(B_bg[t * op.b_st + e]);
                cs[e] = to_float(C_bg[t * op.c_st + e]);
            }
            __syncthreads();
            const float dt = dts[tt], at = decay[tt];
            const float* S = mine + tt * pn;
            const float* Sp = tt == 0 ? start : mine + (tt - 1) * pn;
            float pc[max_cols] = {}, px[max_cols] = {};
            float overlap = 0.0f, xgb = 0.0f, dd = 0.0f;
            for (int i = warp; i < p; i += warps) {
                const float dyi = dys[i], xi = xs[i];
                float gb = 0.0f;
#pragma unroll
                for (int c = 0; c < max_cols; ++c) {
                    const int j = lane + 32 * c;
                    if (j < n) {
                        const index_t e = index_t(i) * n + j;
                        const float gv = G[e] + dyi * cs[j];
                        pc[c] += S[e] * dyi;
                        px[c] += gv * xi;
                        gb += gv * bs[j];
                        overlap += gv * Sp[e];
                        G[e] = at * gv;
                    }
                }
#pragma unroll
                for (int offset = 16; offset > 0; offset /= 2) gb += __shfl_xor_sync(0xffffffffu, gb, offset);
                if (lane == 0) {
                    a.g.x[b * a.g.x_sb + t * a.g.x_st + head * a.g.x_sh + i] += D * dyi + dt * gb;
                    xgb += xi * gb;
                    dd += dyi * xi;
                }
            }
#pragma unroll
            for (int offset = 16; offset > 0; offset /= 2) overlap += __shfl_xor_sync(0xffffffffu, overlap, offset);
#pragma unroll
            for (int c = 0; c < max_cols; ++c) {
                const int j = lane + 32 * c;
                if (j < n) {
                    part_c[warp * n + j] = pc[c];
                    part_x[warp * n + j] = px[c];
                }
            }
            if (lane == 0) {
                part_s[warp * 3 + 0] = overlap;
                part_s[warp * 3 + 1] = xgb;
                part_s[warp * 3 + 2] = dd;
            }
            __syncthreads();
            for (int j = tid; j < n; j += threads) {
                float sc = 0.0f, sx = 0.0f;
                for (int w = 0; w < warps; ++w) {
                    sc += part_c[w * n + j];
                    sx += part_x[w * n + j];
                }
                if (direct) {
                    a.g.C[b * a.g.c_sb + t * a.g.c_st + grp * a.g.c_sg + j] += sc;
                    a.g.B[b * a.g.b_sb + t * a.g.b_st + grp * a.g.b_sg + j] += dt * sx;
                } else {
                    a.dC.row(b, t - op.t_begin, head, n)[j] = sc;
                    a.dB.row(b, t - op.t_begin, head, n)[j] = dt * sx;
                }
            }
            if (tid == 0) {
                float ov = 0.0f, q = 0.0f, d = 0.0f;
                for (int w = 0; w < warps; ++w) {
                    ov += part_s[w * 3 + 0];
                    q += part_s[w * 3 + 1];
                    d += part_s[w * 3 + 2];
                }
                a.g.dt[b * a.g.dt_sb + t * a.g.dt_st + head * a.g.dt_sh] += q + A * at * ov;
                dA += dt * at * ov;
                dD += d;
            }
        }
    }
    for (index_t e = tid; e < pn; e += threads) Gg[e] = G[e];
    if (tid == 0) {
        a.g.A[b * a.g.a_sb + head * a.g.a_sh] += dA;
        a.g.D[b * a.g.d_sb + head * a.g.d_sh] += dD;
    }
}

struct scan_backward_scratch {
    float* states;
    float* dB;  // null when a group has one head
    float* dC;
};

inline scan_backward_scratch take_scan_backward_scratch(workspace_arena& arena, const mixer_config& cfg, index_t batch,
                                                        index_t seqlen) {
    const auto bh = static_cast<std::size_t>(batch * cfg.nheads());
    scan_backward_scratch s{};
    s.states = arena.take<float>(bh * cfg.chunk_size * cfg.headdim * cfg.d_state);
    if (cfg.nheads() / cfg.ngroups > 1) {
        const auto rows = bh * static_cast<std::size_t>(seqlen) * cfg.d_state;
        s.dB = arena.take<float>(rows);
        s.dC = arena.take<float>(rows);
    }
    return s;
}

template <class T>
void run_scan_backward(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, index_t t_begin,
                       index_t t_end, tensor_view<const float, 5> block_states, tensor_view<const float, 4> dy,
                       tensor_view<float, 4> dstate, const ssm_grads<float>& grads, workspace_span span,
                       const char* who) {
    using policy = scan_backward_policy;
    const auto op = make_operands<T, default_policy>(cfg, in, t_begin, t_end, dstate, who);
    const index_t batch = in.batch(), L = in.seqlen(), h = in.nheads(), p = in.headdim(), n = in.d_state(),
                  g = in.ngroups(), Q = cfg.chunk_size;
    const auto gp = make_grad_pointers(grads, batch, L, h, p, g, n, who);
    expect_shape(dy, "dy", {batch, L, h, p});
    require(dy.stride(3) == 1, who, ": dy must be contiguous along headdim");
    if (t_end <= t_begin) return;
    const index_t blocks = (t_end - t_begin + Q - 1) / Q;
    require(block_states.extent(0) == batch && block_states.extent(1) >= blocks && block_states.extent(2) == h &&
                block_states.extent(3) == p && block_states.extent(4) == n,
            who, " backward: block_states has shape ", shape_string(block_states.shape()), ", needs (", batch, ", >= ",
            blocks, ", ", h, ", ", p, ", ", n, ")");
    require(block_states.stride(4) == 1 && block_states.stride(3) == n, who,
            " backward: the saved states must be contiguous (p, n) matrices");

    workspace_arena arena(align_span(span));
    const auto scratch = take_scan_backward_scratch(arena, cfg, batch, L);
    scan_backward_args<T> a{};
    a.op = op;
    a.block_states = block_states.data();
    a.bs_sb = block_states.stride(0);
    a.bs_sblk = block_states.stride(1);
    a.bs_sh = block_states.stride(2);
    a.dy = dy.data();
    a.dy_sb = dy.stride(0);
    a.dy_st = dy.stride(1);
    a.dy_sh = dy.stride(2);
    a.dstate = dstate.data();
    a.g = gp;
    a.states = scratch.states;
    a.dB = head_partials{scratch.dB, t_end - t_begin, static_cast<int>(h)};
    a.dC = head_partials{scratch.dC, t_end - t_begin, static_cast<int>(h)};

    constexpr int warps = policy::threads / 32;
    const auto smem = sizeof(float) * static_cast<std::size_t>(p * n + 2 * p + 2 * n + 2 * warps * n + 3 * warps + 2 * Q);
    constexpr auto kernel = scan_backward_walk_kernel<T, policy>;
    allow_shared_memory<kernel>(smem, "cudaFuncSetAttribute (scan_backward_walk_kernel shared memory)");
    kernel<<<static_cast<unsigned>(batch * h), policy::threads, smem, ctx.stream>>>(a);
    check_launch("scan_backward_walk_kernel");
    if (scratch.dB != nullptr) {
        const int hg = static_cast<int>(h / g);
        launch_add_group_sums(ctx.stream, a.dB, gp.B, gp.b_sb, gp.b_st, gp.b_sg, op.batch, t_begin, int(g), hg, int(n));
        launch_add_group_sums(ctx.stream, a.dC, gp.C, gp.c_sb, gp.c_st, gp.c_sg, op.batch, t_begin, int(g), hg, int(n));
    }
}

}  // namespace kernels::cuda::ssd

// Both policies compute the same function and share this backward (as on the CPU).
template <>
struct scan_backward_kernel<sequential_scan, cuda> {
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t batch, index_t seqlen) {
        workspace_arena measure;
        kernels::cuda::ssd::take_scan_backward_scratch(measure, cfg, batch, seqlen);
        return measure.used();
    }

    // block_states (batch, blocks, h, p, n): the state before token t_begin + i * chunk_size.
    // dstate: in, dL/dS after token t_end - 1; out, dL/dS before token t_begin. Adds into grads.x,
    // .B, .C, .dt on rows [t_begin, t_end) and into grads.A, .D.
    template <class T>
    static void run(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, index_t t_begin,
                    index_t t_end, tensor_view<const float, 5> block_states, tensor_view<const float, 4> dy,
                    tensor_view<float, 4> dstate, const ssm_grads<float>& grads, workspace_span span) {
        kernels::cuda::ssd::run_scan_backward(ctx, cfg, in, t_begin, t_end, block_states, dy, dstate, grads, span,
                                              "scan backward");
    }
};

template <>
struct scan_backward_kernel<chunked_ssd_scan, cuda> : scan_backward_kernel<sequential_scan, cuda> {};

}  // namespace transmamba
