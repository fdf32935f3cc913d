#pragma once
// What the CUDA SSM backward kernels (scan_backward.cuh, converter_backward.cuh) share: the
// gradient views as raw pointers and element strides, the per-head partials of dB and dC, and the
// kernel that sums those partials over the heads of a group in a fixed order (deterministic: no
// atomics, the same bits on every run).
#include <cstddef>

#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/backend/cuda/types.cuh"
#include "transmamba/core/ssm_grads.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba::kernels::cuda::ssd {

// ssm_grads<float> for a kernel: every view with a contiguous last dimension.
struct grad_pointers {
    float* x;
    index_t x_sb, x_st, x_sh;
    float* B;
    index_t b_sb, b_st, b_sg;
    float* C;
    index_t c_sb, c_st, c_sg;
    float* dt;
    index_t dt_sb, dt_st, dt_sh;
    float* A;
    index_t a_sb, a_sh;
    float* D;
    index_t d_sb, d_sh;
};

inline grad_pointers make_grad_pointers(const ssm_grads<float>& g, index_t batch, index_t L, index_t h, index_t p,
                                        index_t ngroups, index_t n, const char* who) {
    expect_shape(g.x, "grads.x", {batch, L, h, p});
    expect_shape(g.B, "grads.B", {batch, L, ngroups, n});
    expect_shape(g.C, "grads.C", {batch, L, ngroups, n});
    expect_shape(g.dt, "grads.dt", {batch, L, h});
    expect_shape(g.A, "grads.A", {batch, h});
    expect_shape(g.D, "grads.D", {batch, h});
    require(g.x.stride(3) == 1 && g.B.stride(3) == 1 && g.C.stride(3) == 1, who,
            ": the gradients of x, B and C must be contiguous along their last dimension");
    return {g.x.data(),  g.x.stride(0),  g.x.stride(1),  g.x.stride(2),  g.B.data(),  g.B.stride(0), g.B.stride(1),
            g.B.stride(2), g.C.data(),  g.C.stride(0),  g.C.stride(1),  g.C.stride(2),  g.dt.data(), g.dt.stride(0),
            g.dt.stride(1), g.dt.stride(2), g.A.data(),  g.A.stride(0),  g.A.stride(1),  g.D.data(),  g.D.stride(0),
            g.D.stride(1)};
}

// Per-head partials of a (batch, L, ngroups, n) gradient over the rows [t0, t0 + T): element
// ((b * T + t - t0) * nheads + head) * n + j. When a group has one head, the kernels add into the
// gradient itself and no partials are kept.
struct head_partials {
    float* data;
    index_t T;
    int nheads;
    __device__ float* row(int b, index_t t_rel, int head, int n) const {
        return data + ((index_t(b) * T + t_rel) * nheads + head) * n;
    }
};

// grad(b, t0 + t, grp, j) += sum over the heads k of grp, in order, of partial(b, t, k, j).
// (A template only so that every translation unit may hold it.)
template <class Grad>
__global__ void add_group_sums_kernel(head_partials part, Grad* grad, index_t g_sb, index_t g_st, index_t g_sg,
                                      int batch, index_t t0, int ngroups, int heads_per_group, int n) {
    const std::size_t total = std::size_t(batch) * part.T * ngroups * n;
    for (std::size_t e = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; e < total;
         e += std::size_t(gridDim.x) * blockDim.x) {
        const int j = static_cast<int>(e % n);
        const std::size_t r = e / n;
        const int grp = static_cast<int>(r % ngroups);
        const index_t t = static_cast<index_t>((r / ngroups) % part.T);
        const int b = static_cast<int>(r / (std::size_t(ngroups) * part.T));
        float acc = 0.0f;
        for (int k = grp * heads_per_group; k < (grp + 1) * heads_per_group; ++k) acc += part.row(b, t, k, n)[j];
        grad[b * g_sb + (t0 + t) * g_st + grp * g_sg + j] += acc;
    }
}

inline void launch_add_group_sums(cudaStream_t stream, head_partials part, float* grad, index_t g_sb, index_t g_st,
                                  index_t g_sg, int batch, index_t t0, int ngroups, int heads_per_group, int n) {
    const std::size_t total = std::size_t(batch) * part.T * ngroups * n;
    if (total == 0) return;
    add_group_sums_kernel<float><<<blocks_for(total, 256), 256, 0, stream>>>(part, grad, g_sb, g_st, g_sg, batch, t0, ngroups,
                                                                      heads_per_group, n);
    check_launch("add_group_sums_kernel");
}

}  // namespace transmamba::kernels::cuda::ssd
