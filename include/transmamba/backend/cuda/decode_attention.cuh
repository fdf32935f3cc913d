#pragma once
// Decoding attention on the GPU: the newest token's query C (g, n) against the KV cache (keys B
// (len, g, n), values x (len, h, p), the newest last), split along the cache as in
// flash-decoding. Pass 1: one block per (key split, group) computes its keys' scores once for the
// group, their softmax statistics (max, sum of exponentials) and the unnormalised partial outputs of
// all h/g heads of the group; pass 2 rescales the splits to the common maximum and adds them (plus
// D x for skip_D variants). A cache of len tokens is read once; a group's values are h/g * p
// adjacent channels of each token, read by the block's threads side by side.
#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>

#include <algorithm>
#include <cmath>

#include "transmamba/backend/cuda/traits.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/rotary.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/attention.hpp"

namespace transmamba {

namespace kernels::cuda::decode {

struct tuning {
    static constexpr int threads = 256;
    static constexpr int keys_per_stage = 32;       // scores held in shared memory at a time
    // A split's fixed cost is its partial output (h/g * p floats, 1/8 of what 16 keys of a 64 x 64
    // head group read); below 16 keys per split it would dominate.
    static constexpr int min_keys_per_split = 16;
    // Blocks per SM the split count aims at: at batch 1 the splits are all the parallelism there
    // is (H100, 64 x 64 heads, one group: cache 1024 went 80 -> 36 us with 4 instead of 2 and 16
    // instead of 64 keys per split; cache 8192 stayed at ~100 us, bound elsewhere).
    static constexpr int splits_per_sm = 4;
};
// Output columns of a group per block (16 per thread in registers); wider groups take several.
inline constexpr int slice_cols = tuning::threads * 16;

// The query-key dot product of key j (scaled by the variant's softmax scale), for one warp:
// lanes stride over the n channels, the warp reduces. Rotary variants rotate both vectors by
// their positions (query at len - 1) first.
template <class Variant, class T>
__device__ float score(const T* q, const T* k, int n, index_t j, index_t len, float scale, int lane) {
    float dot = 0;
    if constexpr (Variant::position::rotary) {
        const int half = n / 2;
        for (int i = lane; i < half; i += 32) {
            const auto rq = rope_rotate(to_float(q[i]), to_float(q[i + half]), rope_rotation(len - 1, i, n, Variant::position::theta));
            const auto rk = rope_rotate(to_float(k[i]), to_float(k[i + half]), rope_rotation(j, i, n, Variant::position::theta));
            dot += rq.first * rk.first + rq.second * rk.second;
        }
    } else {
        for (int i = lane; i < n; i += 32) dot += to_float(q[i]) * to_float(k[i]);
    }
    for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    return dot * scale;
}

// Pass 1: block (split, grp, column slice) over keys [split * per_split, ...). Writes, per split
// and group, the maximum score m, the sum l of exp(s - m) (slice 0), and o = sum exp(s - m) v for
// the slice's columns of the group's hg * p output elements.
template <class Variant, class T>
__global__ void __launch_bounds__(tuning::threads)
    split_kernel(index_t len, index_t per_split, int g, int n, int hg, int p, float scale, const T* __restrict__ query,
                 const T* __restrict__ keys, const T* __restrict__ values, float* __restrict__ part_m,
                 float* __restrict__ part_l, float* __restrict__ part_o) {
    constexpr int threads = tuning::threads, S = tuning::keys_per_stage, warps = threads / 32;
    using reduce = cub::BlockReduce<float, threads>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ float scores[S];
    __shared__ float shared_m;
    constexpr int max_per_thread = slice_cols / threads;
    const int split = blockIdx.x, grp = blockIdx.y, splits = gridDim.x, c0 = blockIdx.z * slice_cols;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int h = g * hg, cols = hg * p;
    const index_t j0 = index_t(split) * per_split, j1 = min(len, j0 + per_split);
    const T* q = query + index_t(grp) * n;

    // The split's maximum score first (scores are recomputed below: n is small next to h/g * p).
    float local_max = -INFINITY;
    for (index_t j = j0 + warp; j < j1; j += warps)
        local_max = fmaxf(local_max, score<Variant>(q, keys + (j * g + grp) * n, n, j, len, scale, lane));
    const float m = reduce(temp).Reduce(local_max, [](float a, float b) { return fmaxf(a, b); });
    if (threadIdx.x == 0) shared_m = m;
    __syncthreads();
    const float mx = shared_m;

    // Each thread owns output elements e = c0 + threadIdx.x + threads * r of the group's hg * p.
    float o[max_per_thread];
#pragma unroll
    for (int r = 0; r < max_per_thread; ++r) o[r] = 0.0f;
    float l = 0.0f;
    const T* vgroup = values + index_t(grp) * cols;
    for (index_t s0 = j0; s0 < j1; s0 += S) {
        const int count = static_cast<int>(min(index_t(S), j1 - s0));
        for (int i = warp; i < count; i += warps) {
            const index_t j = s0 + i;
            const float sc = score<Variant>(q, keys + (j * g + grp) * n, n, j, len, scale, lane);
            if (lane == 0) scores[i] = expf(sc - mx);
        }
        __syncthreads();
        for (int i = 0; i < count; ++i) {
            const float w = scores[i];
            l += w;
            const T* v = vgroup + (s0 + i) * index_t(h) * p;
#pragma unroll
            for (int r = 0; r < max_per_thread; ++r) {
                const int e = c0 + threadIdx.x + threads * r;
                if (e < cols) o[r] = fmaf(w, to_float(v[e]), o[r]);
            }
        }
        __syncthreads();  // scores is refilled next
    }
    const index_t base = index_t(grp) * splits + split;
    if (threadIdx.x == 0 && blockIdx.z == 0) {
        part_m[base] = mx;
        part_l[base] = l;
    }
#pragma unroll
    for (int r = 0; r < max_per_thread; ++r) {
        const int e = c0 + threadIdx.x + threads * r;
        if (e < cols) part_o[base * cols + e] = o[r];
    }
}

// Pass 2: one thread per output element (head k, channel i) of every group.
template <class Variant, class T>
__global__ void combine_kernel(index_t len, int splits, int g, int hg, int p, const T* __restrict__ values,
                               const float* __restrict__ D, const float* __restrict__ part_m,
                               const float* __restrict__ part_l, const float* __restrict__ part_o,
                               float* __restrict__ y) {
    const int cols = hg * p;
    const index_t idx = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
    if (idx >= index_t(g) * cols) return;
    const int grp = static_cast<int>(idx / cols), e = static_cast<int>(idx % cols);
    float M = -INFINITY;
    for (int s = 0; s < splits; ++s) M = fmaxf(M, part_m[index_t(grp) * splits + s]);
    float num = 0, den = 0;
    for (int s = 0; s < splits; ++s) {
        const index_t base = index_t(grp) * splits + s;
        const float f = expf(part_m[base] - M);
        den = fmaf(f, part_l[base], den);
        num = fmaf(f, part_o[base * cols + e], num);
    }
    float out = num / den;
    const int k = grp * hg + e / p;
    if constexpr (Variant::skip_D) out += D[k] * to_float(values[(len - 1) * index_t(g) * cols + index_t(grp) * cols + e]);
    y[idx] = out;
}

}  // namespace kernels::cuda::decode

template <attention_policy Variant>
struct decode_attention_kernel<Variant, cuda> {
    using tuning = kernels::cuda::decode::tuning;

    // Splits of the cache: enough blocks for splits_per_sm per SM over all groups, each at least
    // min_keys_per_split keys.
    static index_t splits_for(const mixer_config& cfg, index_t len) {
        const int sms = kernels::cuda::multiprocessor_count();
        const index_t want = std::max<index_t>(1, (index_t(tuning::splits_per_sm) * sms + cfg.ngroups - 1) / cfg.ngroups);
        const index_t most = std::max<index_t>(1, len / tuning::min_keys_per_split);
        return std::min(want, most);
    }
    // An upper bound over every device (the split count grows with the SM count): per group and
    // split, m, l and the h/g * p partial outputs.
    static index_t max_splits(const mixer_config& cfg, index_t len) {
        return std::max<index_t>(1, std::min<index_t>(len / tuning::min_keys_per_split,
                                                      (index_t(tuning::splits_per_sm) * 1024 + cfg.ngroups - 1) / cfg.ngroups));
    }

    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t len) {
        const auto parts = static_cast<std::size_t>(cfg.ngroups * max_splits(cfg, std::max<index_t>(len, 1)));
        return parts * (2 + static_cast<std::size_t>(cfg.heads_per_group() * cfg.headdim)) * sizeof(float) +
               3 * workspace_arena::alignment;
    }

    template <class T>
    static void run(const cuda_context& ctx, const mixer_config& cfg, const T* query, const T* keys, const T* values,
                    const float* D, index_t len, float* y, workspace_span span) {
        namespace kd = kernels::cuda::decode;
        const int g = static_cast<int>(cfg.ngroups), hg = static_cast<int>(cfg.heads_per_group()),
                  p = static_cast<int>(cfg.headdim), n = static_cast<int>(cfg.d_state);
        require(len >= 1, "decoding attention: the cache must hold at least the newest token");
        if constexpr (Variant::position::rotary) require(n % 2 == 0, "RoPE attention needs an even d_state");
        const index_t splits = std::min(splits_for(cfg, len), max_splits(cfg, len));
        const index_t per_split = (len + splits - 1) / splits;
        const index_t used = (len + per_split - 1) / per_split;  // no empty split
        workspace_arena arena(span);
        const auto parts = static_cast<std::size_t>(g * used);
        float* part_m = arena.take<float>(parts);
        float* part_l = arena.take<float>(parts);
        float* part_o = arena.take<float>(parts * static_cast<std::size_t>(hg * p));
        const float scale = static_cast<float>(Variant::scale::value(cfg.d_state));
        const auto slices = static_cast<unsigned>((hg * p + kd::slice_cols - 1) / kd::slice_cols);
        kd::split_kernel<Variant><<<dim3(static_cast<unsigned>(used), static_cast<unsigned>(g), slices), tuning::threads,
                                    0, ctx.stream>>>(len, per_split, g, n, hg, p, scale, query, keys, values, part_m, part_l,
                                                  part_o);
        kernels::cuda::check_launch("decode attention split_kernel");
        const index_t outputs = index_t(g) * hg * p;
        kd::combine_kernel<Variant><<<kernels::cuda::blocks_for(static_cast<std::size_t>(outputs), 256), 256, 0,
                                      ctx.stream>>>(len, static_cast<int>(used), g, hg, p, values, D, part_m, part_l,
                                                    part_o, y);
        kernels::cuda::check_launch("decode attention combine_kernel");
    }
};

}  // namespace transmamba
