#pragma once
// The SSM scan on the CPU, both policies. The state of head k of sequence b is a (headdim x d_state)
// row-major matrix at state(b, k, :, :): read as the initial state, overwritten with the final one.
//   S_t = a_t S_{t-1} + dt_t x_t B_t^T,  a_t = exp(dt_t A),  y_t = S_t C_t + D x_t
#include <algorithm>
#include <cmath>

#include "transmamba/backend/cpu/eigen.hpp"
#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/scan.hpp"

namespace transmamba {

namespace kernels::cpu {
template <class T>
void check_scan_views(const ssm_inputs<T>& in, const tensor_view<T, 4>& state) {
    require(state.is_contiguous(), "scan: the state must be contiguous (batch, nheads, headdim, d_state)");
    require(in.x.stride(3) == 1 && in.B.stride(3) == 1 && in.C.stride(3) == 1,
            "scan: x, B and C must be contiguous along their last dimension");
}
}  // namespace kernels::cpu

template <>
struct scan_kernel<sequential_scan, cpu> {
    template <class T>
    static std::size_t scratch_bytes(const mixer_config&, index_t /*batch*/, index_t /*seqlen*/) {
        return 0;
    }

    template <class T>
    static void run(const cpu_context&, const mixer_config&, const ssm_inputs<T>& in, index_t t_begin, index_t t_end,
                    tensor_view<T, 4> y, tensor_view<T, 4> state, workspace_span) {
        kernels::cpu::check_scan_views(in, state);
        const index_t p = in.headdim(), n = in.d_state(), hg = in.heads_per_group();
        parallel_for(in.batch() * in.nheads(), [&](index_t task, int) {
            const index_t b = task / in.nheads(), k = task % in.nheads(), grp = k / hg;
            T* S = &state(b, k, 0, 0);
            for (index_t t = t_begin; t < t_end; ++t) {
                const T dt = in.dt(b, t, k), a = std::exp(dt * in.A[k]);
                const T* x = &in.x(b, t, k, 0);
                const T* Bt = &in.B(b, t, grp, 0);
                const T* Ct = &in.C(b, t, grp, 0);
                T* yt = &y(b, t, k, 0);
                for (index_t i = 0; i < p; ++i) {
                    T* Si = S + i * n;
                    const T dx = dt * x[i];
                    T acc = 0;
                    for (index_t j = 0; j < n; ++j) {
                        Si[j] = a * Si[j] + dx * Bt[j];
                        acc += Si[j] * Ct[j];
                    }
                    yt[i] = acc + in.D[k] * x[i];
                }
            }
        });
    }
};

template <>
struct scan_kernel<chunked_ssd_scan, cpu> {
    template <class T>
    struct scratch {
        T* log_decay;  // l_i = sum_{m<=i} dt_m A within the chunk      (chunk)
        T* mix;        // (C B^T) o decay o dt: the chunk's own mixing   (chunk x chunk)
        T* carried;    // C S^T: what the incoming state contributes     (chunk x headdim)
        T* weighted_b; // diag(exp(l_last - l_j) dt_j) B                 (chunk x d_state)
    };
    template <class T>
    static scratch<T> layout(workspace_arena& arena, const mixer_config& cfg) {
        const auto q = static_cast<std::size_t>(cfg.chunk_size), threads = static_cast<std::size_t>(max_threads());
        scratch<T> s;
        s.log_decay = arena.take<T>(threads * q);
        s.mix = arena.take<T>(threads * q * q);
        s.carried = arena.take<T>(threads * q * static_cast<std::size_t>(cfg.headdim));
        s.weighted_b = arena.take<T>(threads * q * static_cast<std::size_t>(cfg.d_state));
        return s;
    }
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t /*batch*/, index_t /*seqlen*/) {
        workspace_arena measure;
        layout<T>(measure, cfg);
        return measure.used();
    }

    template <class T>
    static void run(const cpu_context&, const mixer_config& cfg, const ssm_inputs<T>& in, index_t t_begin,
                    index_t t_end, tensor_view<T, 4> y, tensor_view<T, 4> state, workspace_span span) {
        using namespace kernels::cpu;
        if (t_end <= t_begin) return;
        check_scan_views(in, state);
        workspace_arena arena(span);
        const auto s = layout<T>(arena, cfg);
        const index_t Q = cfg.chunk_size, p = in.headdim(), n = in.d_state(), hg = in.heads_per_group();
        const index_t xs = in.x.stride(1), bs = in.B.stride(1), cs = in.C.stride(1), ys = y.stride(1);

        parallel_for(in.batch() * in.nheads(), [&](index_t task, int thread) {
            const index_t b = task / in.nheads(), k = task % in.nheads(), grp = k / hg;
            const T A = in.A[k], D = in.D[k];
            T* l = s.log_decay + thread * Q;
            auto S = map_rows(&state(b, k, 0, 0), p, n, n);
            for (index_t c0 = t_begin; c0 < t_end; c0 += Q) {
                const index_t q = std::min(Q, t_end - c0);
                T run = 0;
                for (index_t i = 0; i < q; ++i) l[i] = run += in.dt(b, c0 + i, k) * A;

                const auto X = map_rows(&in.x(b, c0, k, 0), q, p, xs);
                const auto Bc = map_rows(&in.B(b, c0, grp, 0), q, n, bs);
                const auto Cc = map_rows(&in.C(b, c0, grp, 0), q, n, cs);
                auto Y = map_rows(&y(b, c0, k, 0), q, p, ys);

                // Within the chunk: Y = (L o C B^T o dt) X, L_ij = exp(l_i - l_j) for j <= i.
                auto M = map_rows(s.mix + thread * Q * Q, q, q, q);
                M.noalias() = Cc * Bc.transpose();
                for (index_t i = 0; i < q; ++i) {
                    for (index_t j = 0; j <= i; ++j) M(i, j) *= std::exp(l[i] - l[j]) * in.dt(b, c0 + j, k);
                    for (index_t j = i + 1; j < q; ++j) M(i, j) = 0;
                }
                Y.noalias() = M * X;
                // From the state entering the chunk: y_i += exp(l_i) S C_i.
                auto carried = map_rows(s.carried + thread * Q * p, q, p, p);
                carried.noalias() = Cc * S.transpose();
                for (index_t i = 0; i < q; ++i) Y.row(i) += std::exp(l[i]) * carried.row(i) + D * X.row(i);
                // The state leaving the chunk: S = exp(l_last) S + X^T diag(exp(l_last - l_j) dt_j) B.
                auto Bw = map_rows(s.weighted_b + thread * Q * n, q, n, n);
                for (index_t j = 0; j < q; ++j) Bw.row(j) = (std::exp(l[q - 1] - l[j]) * in.dt(b, c0 + j, k)) * Bc.row(j);
                S *= std::exp(l[q - 1]);
                S.noalias() += X.transpose() * Bw;
            }
        });
    }
};

}  // namespace transmamba
