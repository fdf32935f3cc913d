#pragma once
// Decoding attention on the GPU: the newest token's query against the KV cache. One block per
// group computes the group's scores and softmax once, then every thread of the block produces
// output elements of the group's h/g heads. A split-K kernel for very long caches is the next step
// (docs/cuda.md); this one is simple and exact.
#include <cub/block/block_reduce.cuh>

#include <cmath>

#include "transmamba/backend/cuda/traits.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/attention.hpp"

namespace transmamba {

namespace kernels::cuda {

template <class Variant, int Threads, class T>
__global__ void decode_attention_kernel(index_t len, index_t g, index_t n, index_t p, index_t hg, float scale,
                                        const T* __restrict__ query, const T* __restrict__ keys,
                                        const T* __restrict__ values, const float* __restrict__ D,
                                        float* __restrict__ scores_all, float* __restrict__ y) {
    using reduce = cub::BlockReduce<float, Threads>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ float shared_max, shared_inv;
    const index_t grp = blockIdx.x, h = g * hg;
    float* scores = scores_all + grp * len;
    const T* q = query + grp * n;
    const index_t half = n / 2;

    float local_max = -INFINITY;
    for (index_t j = threadIdx.x; j < len; j += Threads) {
        const T* k = keys + (j * g + grp) * n;
        float dot = 0;
        if constexpr (Variant::position::rotary) {
            // Rotate-half RoPE: query at position len - 1, key at position j.
            for (index_t i = 0; i < half; ++i) {
                const double freq = pow(Variant::position::theta, -2.0 * double(i) / double(n));
                const float aq = float(double(len - 1) * freq), ak = float(double(j) * freq);
                const float q1 = to_float(q[i]), q2 = to_float(q[i + half]);
                const float k1 = to_float(k[i]), k2 = to_float(k[i + half]);
                const float rq1 = q1 * cosf(aq) - q2 * sinf(aq), rq2 = q2 * cosf(aq) + q1 * sinf(aq);
                const float rk1 = k1 * cosf(ak) - k2 * sinf(ak), rk2 = k2 * cosf(ak) + k1 * sinf(ak);
                dot += rq1 * rk1 + rq2 * rk2;
            }
        } else {
            for (index_t i = 0; i < n; ++i) dot += to_float(q[i]) * to_float(k[i]);
        }
        scores[j] = dot * scale;
        local_max = fmaxf(local_max, dot * scale);
    }
    const float mx = reduce(temp).Reduce(local_max, [](float a, float b) { return fmaxf(a, b); });
    if (threadIdx.x == 0) shared_max = mx;
    __syncthreads();
    float local_sum = 0;
    for (index_t j = threadIdx.x; j < len; j += Threads) local_sum += scores[j] = expf(scores[j] - shared_max);
    __syncthreads();  // temp storage is reused
    const float sum = reduce(temp).Sum(local_sum);
    if (threadIdx.x == 0) shared_inv = 1.0f / sum;
    __syncthreads();

    // Each thread owns output elements (head, i) of the group; the scores are read from memory
    // this block wrote (visible after the barrier above).
    for (index_t e = threadIdx.x; e < hg * p; e += Threads) {
        const index_t k = grp * hg + e / p, i = e % p;
        float acc = 0;
        for (index_t j = 0; j < len; ++j) acc += scores[j] * to_float(values[(j * h + k) * p + i]);
        acc *= shared_inv;
        if constexpr (Variant::skip_D) acc += D[k] * to_float(values[((len - 1) * h + k) * p + i]);
        y[k * p + i] = acc;
    }
}

}  // namespace kernels::cuda

template <attention_policy Variant>
struct decode_attention_kernel<Variant, cuda> {
    static constexpr int threads = 256;

    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t len) {
        return static_cast<std::size_t>(cfg.ngroups * len) * sizeof(float) + workspace_arena::alignment;
    }

    template <class T>
    static void run(const cuda_context& ctx, const mixer_config& cfg, const T* query, const T* keys, const T* values,
                    const float* D, index_t len, float* y, workspace_span span) {
        workspace_arena arena(span);
        float* scores = arena.take<float>(static_cast<std::size_t>(cfg.ngroups * len));
        if constexpr (Variant::position::rotary) require(cfg.d_state % 2 == 0, "RoPE attention needs an even d_state");
        kernels::cuda::decode_attention_kernel<Variant, threads><<<static_cast<unsigned>(cfg.ngroups), threads, 0, ctx.stream>>>(
            len, cfg.ngroups, cfg.d_state, cfg.headdim, cfg.heads_per_group(),
            static_cast<float>(Variant::scale::value(cfg.d_state)), query, keys, values, D, scores, y);
        kernels::cuda::check_launch("decode_attention_kernel");
    }
};

}  // namespace transmamba
