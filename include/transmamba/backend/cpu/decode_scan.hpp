#pragma once
// Decoding on the CPU, SSM side: one token's state update for a batch of sequences (SPEC.md
// section 2),  S <- exp(dt A) S + dt x B^T,  y = S C + D x,  per head by the scan's row-wise kernel
// (kernels::cpu::scan_token_rows, backend/cpu/scan.hpp): one fused pass over the state, each row
// updated and dotted with C while it is in registers, so the state is read and written once. Heads
// of all sequences are split into one contiguous range per thread (not one task per head): a range
// tends to stay on its core from one step to the next, and so does its state in that core's cache
// (2 threads, 48 heads of 64 x 128: 22 us against 31 us for per-head tasks); only when the states are
// large enough to pay for the fork (core/parallel.hpp decides).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "transmamba/backend/cpu/scan.hpp"
#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

template <>
struct decode_scan_kernel<cpu> {
    // One token (seqlen 1) of `batch` sequences: S (batch, h, p, n) advances by it in place and
    // y (batch, 1, h, p) receives its output.
    template <class T>
    static void run(const cpu_context&, const mixer_config& cfg, const ssm_inputs<T>& in,
                    tensor_view<compute_t<T>, 4> y, tensor_view<compute_t<T>, 4> state) {
        static_assert(std::is_same_v<T, compute_t<T>>, "the CPU backend computes in its storage type");
        const index_t batch = in.batch(), h = in.nheads(), p = in.headdim(), n = in.d_state(), g = in.ngroups();
        expect_decode_step_views(cfg, in, y, state);

        const index_t hg = h / g;
        const auto head = [&](index_t bh) {
            const index_t b = bh / h, k = bh % h, grp = k / hg;
            const T dt = in.dt(b, 0, k);
            kernels::cpu::scan_token_rows(&state(b, k, 0, 0), p, n, T(std::exp(dt * in.A[k])), dt, &in.x(b, 0, k, 0),
                                          &in.B(b, 0, grp, 0), &in.C(b, 0, grp, 0), in.D[k], &y(b, 0, k, 0));
        };
        // The states are the work: parallel_for keeps small ones (below parallel_min_work(), 2^15
        // elements: 4 heads of 64 x 128, where two threads start to win) on the calling thread.
        const index_t heads = batch * h;
        const index_t ranges = std::min<index_t>(max_threads(), heads);
        parallel_for(ranges, (heads + ranges - 1) / ranges * p * n, [&](index_t r, int) {
            for (index_t bh = heads * r / ranges; bh < heads * (r + 1) / ranges; ++bh) head(bh);
        });
    }
};

}  // namespace transmamba
