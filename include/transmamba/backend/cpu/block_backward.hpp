#pragma once
// block_backward_kernel<cpu>: the backward of block_kernel<cpu>'s RMSNorm and SwiGLU.
//
//   RMSNorm, per row: y = x r w, r = 1 / sqrt(mean(x^2) + eps). With e = dy w:
//     dx = r (e - x r^2 mean(e x)),   dw = sum over rows of dy x r.
//   SwiGLU: a = silu(g) u:  dg = da u silu'(g),  du = da silu(g),
//     silu'(g) = s (1 + g (1 - s)),  s = sigmoid(g).
#include <algorithm>
#include <cmath>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/parallel.hpp"

namespace transmamba {

template <>
struct block_backward_kernel<cpu> {
    // dx (rows, width) += the RMSNorm's input gradient for dy; dweight (width) = its weight
    // gradient (overwritten); inv (rows) is scratch. Adding into dx folds a residual branch in.
    // dweight sums over rows in row order, one task per tile of columns: the same bits whatever the
    // thread count.
    template <class T>
    static void rmsnorm_backward(const cpu_context&, index_t rows, index_t width, const T* x, const T* weight,
                                 double eps, const T* dy, T* dx, T* dweight, compute_t<T>* inv) {
        using A = compute_t<T>;
        parallel_for(rows, 6 * width, [&](index_t r, int) {
            const T* xr = x + r * width;
            const T* dyr = dy + r * width;
            A sumsq = 0, ex = 0;
            for (index_t i = 0; i < width; ++i) sumsq += A(xr[i]) * A(xr[i]);
            const A ri = A(1) / std::sqrt(sumsq / A(width) + A(eps));
            inv[r] = ri;
            for (index_t i = 0; i < width; ++i) ex += A(dyr[i]) * A(weight[i]) * A(xr[i]);
            const A k = ri * ri * ex / A(width);
            T* dxr = dx + r * width;
            for (index_t i = 0; i < width; ++i) dxr[i] = T(A(dxr[i]) + ri * (A(dyr[i]) * A(weight[i]) - A(xr[i]) * k));
        });
        constexpr index_t tile = 16;
        parallel_for((width + tile - 1) / tile, 2 * tile * rows, [&](index_t blk, int) {
            const index_t c0 = blk * tile, c1 = std::min(width, c0 + tile);
            A acc[tile] = {};
            for (index_t r = 0; r < rows; ++r)
                for (index_t c = c0; c < c1; ++c) acc[c - c0] += A(dy[r * width + c]) * A(x[r * width + c]) * inv[r];
            for (index_t c = c0; c < c1; ++c) dweight[c] = T(acc[c - c0]);
        });
    }

    // gate_up (rows, 2 d_ff) = [g | u] of the forward; dact (rows, d_ff) = dL/d(silu(g) u);
    // dgate_up (rows, 2 d_ff) = [dg | du], overwritten.
    template <class T>
    static void swiglu_backward(const cpu_context&, index_t rows, index_t d_ff, const T* gate_up, const T* dact,
                                T* dgate_up) {
        using A = compute_t<T>;
        parallel_for(rows, 16 * d_ff, [&](index_t r, int) {  // one exp per element
            const T* gu = gate_up + r * 2 * d_ff;
            const T* da = dact + r * d_ff;
            T* d = dgate_up + r * 2 * d_ff;
            for (index_t i = 0; i < d_ff; ++i) {
                const A g = A(gu[i]), u = A(gu[d_ff + i]), s = A(1) / (A(1) + std::exp(-g));
                d[i] = T(A(da[i]) * u * s * (A(1) + g * (A(1) - s)));
                d[d_ff + i] = T(A(da[i]) * g * s);
            }
        });
    }
};

}  // namespace transmamba
