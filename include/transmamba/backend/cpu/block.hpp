#pragma once
// block_kernel<cpu>: the row-wise parts of the residual blocks.
#include <algorithm>
#include <cmath>

#include "transmamba/backend/cpu/traits.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/parallel.hpp"

namespace transmamba {

template <>
struct block_kernel<cpu> {
    // out (rows, width) = in / sqrt(mean(in^2) + eps) * weight; out may alias in.
    template <class T>
    static void rmsnorm(const cpu_context&, index_t rows, index_t width, const T* in, const T* weight, double eps,
                        T* out) {
        using A = compute_t<T>;
        parallel_for(rows, 2 * width, [&](index_t r, int) {
            const T* x = in + r * width;
            A sumsq = 0;
            for (index_t i = 0; i < width; ++i) sumsq += A(x[i]) * A(x[i]);
            const A inv = A(1) / std::sqrt(sumsq / A(width) + A(eps));
            T* o = out + r * width;
            for (index_t i = 0; i < width; ++i) o[i] = T(A(x[i]) * inv * A(weight[i]));
        });
    }

    // acc += delta, n elements.
    template <class T>
    static void add(const cpu_context&, std::size_t n, const T* delta, T* acc) {
        parallel_for(static_cast<index_t>((n + 4095) / 4096), 4096, [&](index_t blk, int) {
            const std::size_t lo = static_cast<std::size_t>(blk) * 4096, hi = std::min(n, lo + 4096);
            for (std::size_t i = lo; i < hi; ++i) acc[i] += delta[i];
        });
    }

    // gate_up (rows, 2 * d_ff) holds [gate | up] per row; out (rows, d_ff) = silu(gate) * up.
    template <class T>
    static void swiglu(const cpu_context&, index_t rows, index_t d_ff, const T* gate_up, T* out) {
        using A = compute_t<T>;
        parallel_for(rows, 12 * d_ff, [&](index_t r, int) {  // silu: one exp per element
            const T* gu = gate_up + r * 2 * d_ff;
            T* o = out + r * d_ff;
            for (index_t i = 0; i < d_ff; ++i) o[i] = T(silu(A(gu[i])) * A(gu[d_ff + i]));
        });
    }
    // out = relu(in)^2, n elements: the MLP activation of Nemotron-H ("relu2").
    template <class T>
    static void relu_squared(const cpu_context&, std::size_t n, const T* in, T* out) {
        using A = compute_t<T>;
        for (std::size_t i = 0; i < n; ++i) {
            const A x = std::max(A(in[i]), A(0));
            out[i] = T(x * x);
        }
    }

    // acc += scale * delta, n elements: a residual branch with Granite's residual_multiplier.
    template <class T>
    static void add_scaled(const cpu_context&, std::size_t n, const T* delta, double scale, T* acc) {
        using A = compute_t<T>;
        for (std::size_t i = 0; i < n; ++i) acc[i] = T(A(acc[i]) + A(scale) * A(delta[i]));
    }

    // data *= factor, n elements (an embedding multiplier; a logits divisor as its inverse).
    template <class T>
    static void scale(const cpu_context&, std::size_t n, double factor, T* data) {
        using A = compute_t<T>;
        for (std::size_t i = 0; i < n; ++i) data[i] = T(A(data[i]) * A(factor));
    }
};

}  // namespace transmamba
