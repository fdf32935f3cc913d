#pragma once
// loss_kernel<cuda>: cross-entropy per token over the vocabulary, and its gradient, one block per
// token (CUB block reductions for the largest logit and the sum of exponentials):
//
//   loss_r = logsumexp(logits_r) - logits_r[target_r]
//   dlogits_r = scale (softmax(logits_r) - onehot(target_r))     (scale = 1 / counted tokens)
//
// for a token whose target is not `ignore`; an ignored token has loss 0 and a zero gradient row.
#include <cub/block/block_reduce.cuh>

#include <cstdint>

#include "transmamba/backend/backward.hpp"
#include "transmamba/backend/cuda/traits.cuh"

namespace transmamba {

namespace kernels::cuda {

struct logit_max {
    float value;
    index_t index;
};
// The larger logit; on ties the first index (the CPU kernel's argmax).
struct first_max {
    __device__ logit_max operator()(const logit_max& a, const logit_max& b) const {
        return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
    }
};

template <int Threads>
__global__ void cross_entropy_kernel(index_t vocab, float* __restrict__ logits, const std::int64_t* __restrict__ targets,
                                     std::int64_t ignore, float scale, bool gradient, float* __restrict__ row_loss,
                                     std::int64_t* __restrict__ argmax) {
    using max_reduce = cub::BlockReduce<logit_max, Threads>;
    using sum_reduce = cub::BlockReduce<float, Threads>;
    __shared__ union {
        typename max_reduce::TempStorage max;
        typename sum_reduce::TempStorage sum;
    } temp;
    __shared__ float top_shared, norm_shared;
    const index_t row = blockIdx.x;
    float* l = logits + row * vocab;
    logit_max best{-INFINITY, vocab};
    for (index_t v = threadIdx.x; v < vocab; v += Threads) best = first_max{}(best, logit_max{l[v], v});
    best = max_reduce(temp.max).Reduce(best, first_max{});
    const std::int64_t t = targets[row];
    if (threadIdx.x == 0) {
        argmax[row] = best.index < vocab ? best.index : 0;  // every logit -inf or NaN: index 0, as the CPU
        top_shared = best.value;
    }
    __syncthreads();
    if (t == ignore) {
        if (threadIdx.x == 0) row_loss[row] = 0.0f;
        if (gradient)
            for (index_t v = threadIdx.x; v < vocab; v += Threads) l[v] = 0.0f;
        return;
    }
    const float top = top_shared;
    float sum = 0;
    for (index_t v = threadIdx.x; v < vocab; v += Threads) sum += expf(l[v] - top);
    const float target_logit = l[t];  // read by every thread before any writes (barriers below)
    const float total = sum_reduce(temp.sum).Sum(sum);
    if (threadIdx.x == 0) {
        row_loss[row] = top + logf(total) - target_logit;
        norm_shared = scale / total;
    }
    __syncthreads();
    if (!gradient) return;
    const float norm = norm_shared;
    for (index_t v = threadIdx.x; v < vocab; v += Threads) {
        const float p = expf(l[v] - top) * norm;
        l[v] = v == t ? p - scale : p;
    }
}

}  // namespace kernels::cuda

template <>
struct loss_kernel<cuda> {
    // logits (rows, vocab) float32; targets (rows), device memory, in [0, vocab) or == ignore,
    // checked by the caller. row_loss and argmax (the first index of the largest logit) are written
    // for every row. With `gradient`, logits is overwritten in place by dlogits.
    static void cross_entropy(const cuda_context& ctx, index_t rows, index_t vocab, float* logits,
                              const std::int64_t* targets, std::int64_t ignore, float scale, bool gradient,
                              float* row_loss, std::int64_t* argmax) {
        if (rows == 0) return;
        constexpr int threads = 256;
        kernels::cuda::cross_entropy_kernel<threads><<<static_cast<unsigned>(rows), threads, 0, ctx.stream>>>(
            vocab, logits, targets, ignore, scale, gradient, row_loss, argmax);
        kernels::cuda::check_launch("cross_entropy_kernel");
    }
};

}  // namespace transmamba
