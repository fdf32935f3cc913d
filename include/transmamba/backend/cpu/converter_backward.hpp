#pragma once
// The backward of the exact Memory Converter on the CPU (docs/training.md). Forward, per head:
//   S = Lam S_init + sum_{j<P} w_j x_j B_j^T,  w_j = e_j dt_j,  e_j = exp(A suf_j),
//   suf_j = sum_{j<m<P} dt_m,  Lam = exp(A tot),  tot = sum_{m<P} dt_m.
// From G = dL/dS, with q_j = x_j^T G B_j and r = <G, S_init>:
//   dx_j = w_j G B_j,  dB_j = w_j G^T x_j,  dS_init = Lam G,
//   ddt_m = q_m e_m + A sum_{j<m} q_j w_j + A r Lam,  dA = sum_j q_j w_j suf_j + r Lam tot.
// One task per (sequence, group) owns those rows of dx and dB (its heads in turn): no atomics.
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
#include "transmamba/policy/converter.hpp"

namespace transmamba {

template <>
struct converter_backward_kernel<exact_converter, cpu> {
    template <class T>
    static T* layout(workspace_arena& arena, index_t prefix) {
        // per thread: suf_j and q_j w_j for the prefix
        return arena.take<T>(static_cast<std::size_t>(max_threads() * 2 * std::max<index_t>(prefix, 1)));
    }
    template <class T>
    static std::size_t scratch_bytes(const mixer_config&, index_t /*batch*/, index_t prefix) {
        workspace_arena measure;
        layout<T>(measure, prefix);
        return measure.used();
    }

    // dstate: G = dL/dS at P (batch, h, p, n). initial_state: S_init, or empty for zeros.
    // Adds into grads.x, .B, .dt on rows t < prefix and into grads.A; writes d_initial (when not
    // empty) = Lam G. prefix = 0 is the identity: d_initial = G.
    template <class T>
    static void run(const cpu_context&, const mixer_config&, const ssm_inputs<T>& in, index_t prefix,
                    tensor_view<const T, 4> initial_state, tensor_view<const T, 4> dstate, const ssm_grads<T>& grads,
                    tensor_view<T, 4> d_initial, workspace_span span) {
        using namespace kernels::cpu;
        require(dstate.is_contiguous() && (initial_state.empty() || initial_state.is_contiguous()) &&
                    (d_initial.empty() || d_initial.is_contiguous()),
                "converter backward: the states must be contiguous");
        workspace_arena arena(span);
        T* scratch = layout<T>(arena, prefix);
        const index_t p = in.headdim(), n = in.d_state(), g = in.ngroups(), hg = in.heads_per_group();
        using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
        using vector_map = Eigen::Map<vector>;
        using const_vector_map = Eigen::Map<const vector>;

        parallel_for(in.batch() * g, prefix * hg * p * n, [&](index_t task, int thread) {
            const index_t b = task / g, grp = task % g;
            T* const suf = scratch + thread * 2 * std::max<index_t>(prefix, 1);
            T* const qw = suf + std::max<index_t>(prefix, 1);
            for (index_t k = grp * hg; k < (grp + 1) * hg; ++k) {
                const T A = in.A[k];
                const auto G = map_rows(&dstate(b, k, 0, 0), p, n, n);
                T tot = 0;
                for (index_t t = 0; t < prefix; ++t) tot += in.dt(b, t, k);
                const T lam = std::exp(A * tot);
                T r = 0;
                if (!initial_state.empty()) r = (G.array() * map_rows(&initial_state(b, k, 0, 0), p, n, n).array()).sum();
                if (!d_initial.empty()) map_rows(&d_initial(b, k, 0, 0), p, n, n) = lam * G;
                if (prefix <= 0) continue;

                T running = 0;  // suf_j, grown from the end as in the forward
                for (index_t j = prefix - 1; j >= 0; --j) {
                    suf[j] = running;
                    running += in.dt(b, j, k);
                }
                T dA = r * lam * tot;
                for (index_t j = 0; j < prefix; ++j) {
                    const T dt = in.dt(b, j, k), e = std::exp(A * suf[j]), w = e * dt;
                    const const_vector_map xj(&in.x(b, j, k, 0), p);
                    const const_vector_map Bj(&in.B(b, j, grp, 0), n);
                    const vector GB = G * Bj;
                    const T q = xj.dot(GB);
                    vector_map(&grads.x(b, j, k, 0), p) += w * GB;
                    vector_map(&grads.B(b, j, grp, 0), n) += w * (G.transpose() * xj);
                    grads.dt(b, j, k) += q * e;
                    qw[j] = q * w;
                    dA += qw[j] * suf[j];
                }
                T earlier = 0;  // sum_{j<m} q_j w_j
                for (index_t m = 0; m < prefix; ++m) {
                    grads.dt(b, m, k) += A * (earlier + r * lam);
                    earlier += qw[m];
                }
                grads.A(b, k) += dA;
            }
        });
    }
};

}  // namespace transmamba
