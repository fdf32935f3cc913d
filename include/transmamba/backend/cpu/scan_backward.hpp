#pragma once
// The backward of the SSM scan on the CPU: the recurrence run in reverse time (docs/training.md).
//   forward   S_t = a_t S_{t-1} + dt_t x_t B_t^T,  a_t = exp(dt_t A),  y_t = S_t C_t + D x_t
//   backward  with G = dL/dS_t (starting from dL/dS after the span's last token), for t from the end:
//     G += dy_t C_t^T;  dC_t += S_t^T dy_t;  dD += dy_t . x_t;  dx_t += D dy_t + dt_t G B_t;
//     dB_t += dt_t G^T x_t;  ddt_t += x_t^T G B_t + A a_t <G, S_{t-1}>;  dA += dt_t a_t <G, S_{t-1}>;
//     G = a_t G  (now dL/dS_{t-1})
// The states S_t are recomputed forward within each block of chunk_size tokens from the state the
// forward pass saved before the block (block_states), so the memory is one block of states per
// thread, not one state per token. One task per (sequence, group): it owns those rows of dB and dC
// and walks its heads in turn. Both scan policies compute the same function and share this
// backward; a chunked (SSD-shaped, GEMM-rich) backward is future work (docs/training.md).
#include <algorithm>
#include <cmath>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cpu/eigen.hpp"
#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/core/ssm_grads.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/scan.hpp"

namespace transmamba {

namespace kernels::cpu {

// The number of blocks of block_length tokens in [t_begin, t_end): the second extent of the
// forward's saved block states.
inline index_t scan_blocks(index_t t_begin, index_t t_end, index_t block_length) {
    return t_end > t_begin ? (t_end - t_begin + block_length - 1) / block_length : 0;
}

struct cpu_scan_backward {
    template <class T>
    static T* layout(workspace_arena& arena, const mixer_config& cfg) {
        // per thread: the states of one block, (chunk_size, p, n)
        return arena.take<T>(static_cast<std::size_t>(max_threads() * cfg.chunk_size * cfg.headdim * cfg.d_state));
    }
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t /*batch*/, index_t /*seqlen*/) {
        workspace_arena measure;
        layout<T>(measure, cfg);
        return measure.used();
    }

    // block_states (batch, blocks, h, p, n): the state before token t_begin + i * chunk_size.
    // dstate: in, dL/dS after token t_end - 1; out, dL/dS before token t_begin. Adds into grads.x,
    // .B, .C, .dt on rows [t_begin, t_end) and into grads.A, .D.
    template <class T>
    static void run(const mixer_config& cfg, const ssm_inputs<T>& in, index_t t_begin, index_t t_end,
                    tensor_view<const T, 5> block_states, tensor_view<const T, 4> dy, tensor_view<T, 4> dstate,
                    const ssm_grads<T>& grads, workspace_span span) {
        if (t_end <= t_begin) return;
        const index_t Q = cfg.chunk_size, p = in.headdim(), n = in.d_state(), g = in.ngroups(), hg = in.heads_per_group();
        const index_t blocks = scan_blocks(t_begin, t_end, Q);
        require(block_states.extent(0) == in.batch() && block_states.extent(1) >= blocks &&
                    block_states.extent(2) == in.nheads() && block_states.extent(3) == p && block_states.extent(4) == n,
                "scan backward: block_states has shape ", shape_string(block_states.shape()), ", needs (", in.batch(),
                ", >= ", blocks, ", ", in.nheads(), ", ", p, ", ", n, ")");
        require(block_states.stride(4) == 1 && block_states.stride(3) == n && dstate.is_contiguous(),
                "scan backward: the states must be contiguous (p, n) matrices");
        require(in.x.stride(3) == 1 && in.B.stride(3) == 1 && in.C.stride(3) == 1 && dy.stride(3) == 1 &&
                    grads.x.stride(3) == 1 && grads.B.stride(3) == 1 && grads.C.stride(3) == 1,
                "scan backward: x, B, C, dy and their gradients must be contiguous along their last dimension");
        workspace_arena arena(span);
        T* const scratch = layout<T>(arena, cfg);
        using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
        using vector_map = Eigen::Map<vector>;
        using const_vector_map = Eigen::Map<const vector>;
        const index_t pn = p * n;

        parallel_for(in.batch() * g, in.seqlen() * hg * pn, [&](index_t task, int thread) {
            const index_t b = task / g, grp = task % g;
            T* const states = scratch + thread * Q * pn;
            for (index_t k = grp * hg; k < (grp + 1) * hg; ++k) {
                const T A = in.A[k], D = in.D[k];
                auto G = map_rows(&dstate(b, k, 0, 0), p, n, n);
                T dA = 0, dD = 0;
                for (index_t blk = blocks - 1; blk >= 0; --blk) {
                    const index_t t0 = t_begin + blk * Q, t1 = std::min(t0 + Q, t_end);
                    const T* start = &block_states(b, blk, k, 0, 0);
                    for (index_t t = t0; t < t1; ++t) {  // S_t for the block, as the forward had them
                        const T dt = in.dt(b, t, k);
                        const auto prev = map_rows(t == t0 ? start : states + (t - t0 - 1) * pn, p, n, n);
                        map_rows(states + (t - t0) * pn, p, n, n).noalias() =
                            std::exp(dt * A) * prev +
                            (dt * const_vector_map(&in.x(b, t, k, 0), p)) *
                                const_vector_map(&in.B(b, t, grp, 0), n).transpose();
                    }
                    for (index_t t = t1 - 1; t >= t0; --t) {
                        const T dt = in.dt(b, t, k), a = std::exp(dt * A);
                        const auto S = map_rows(states + (t - t0) * pn, p, n, n);
                        const auto prev = map_rows(t == t0 ? start : states + (t - t0 - 1) * pn, p, n, n);
                        const const_vector_map dyt(&dy(b, t, k, 0), p), xt(&in.x(b, t, k, 0), p);
                        const const_vector_map Bt(&in.B(b, t, grp, 0), n), Ct(&in.C(b, t, grp, 0), n);
                        vector_map dx(&grads.x(b, t, k, 0), p);
                        G.noalias() += dyt * Ct.transpose();
                        vector_map(&grads.C(b, t, grp, 0), n).noalias() += S.transpose() * dyt;
                        dD += dyt.dot(xt);
                        const vector GB = G * Bt;
                        dx += D * dyt + dt * GB;
                        vector_map(&grads.B(b, t, grp, 0), n).noalias() += dt * (G.transpose() * xt);
                        const T overlap = (G.array() * prev.array()).sum();  // <G, S_{t-1}>
                        grads.dt(b, t, k) += xt.dot(GB) + A * a * overlap;
                        dA += dt * a * overlap;
                        G *= a;
                    }
                }
                grads.A(b, k) += dA;
                grads.D(b, k) += dD;
            }
        });
    }
};

}  // namespace kernels::cpu

template <>
struct scan_backward_kernel<sequential_scan, cpu> {
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t batch, index_t seqlen) {
        return kernels::cpu::cpu_scan_backward::scratch_bytes<T>(cfg, batch, seqlen);
    }
    template <class T>
    static void run(const cpu_context&, const mixer_config& cfg, const ssm_inputs<T>& in, index_t t_begin,
                    index_t t_end, tensor_view<const T, 5> block_states, tensor_view<const T, 4> dy,
                    tensor_view<T, 4> dstate, const ssm_grads<T>& grads, workspace_span span) {
        kernels::cpu::cpu_scan_backward::run(cfg, in, t_begin, t_end, block_states, dy, dstate, grads, span);
    }
};

template <>
struct scan_backward_kernel<chunked_ssd_scan, cpu> : scan_backward_kernel<sequential_scan, cpu> {};

}  // namespace transmamba
