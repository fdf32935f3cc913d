#pragma once
// Step (2) of the chunked SSD (ssd/dispatch.cuh): a scan over chunks of (decay, state) pairs from the
// initial state; the combine below is the associative operator a cross-GPU merge would use too.
#include <cub/warp/warp_scan.cuh>

#include "transmamba/backend/cuda/ssd/operands.cuh"
#include "transmamba/backend/cuda/ssd/policy.cuh"
#include "transmamba/backend/cuda/types.cuh"

namespace transmamba::kernels::cuda::ssd {

template <int Vec>
struct decay_state {
    float a;         // product of the decays
    float s[Vec];    // state elements
};

// (a1, s1) . (a2, s2) = (a1 a2, a2 s1 + s2): apply the earlier segment, then the later one.
template <int Vec>
struct combine_decay_state {
    __device__ __forceinline__ decay_state<Vec> operator()(const decay_state<Vec>& first,
                                                           const decay_state<Vec>& second) const {
        decay_state<Vec> r;
        r.a = first.a * second.a;
#pragma unroll
        for (int i = 0; i < Vec; ++i) r.s[i] = fmaf(second.a, first.s[i], second.s[i]);
        return r;
    }
};

template <int Vec>
__device__ __forceinline__ void load_vec(float (&v)[Vec], const float* p) {
#pragma unroll
    for (int i = 0; i < Vec; i += 4) {
        const float4 f = *reinterpret_cast<const float4*>(p + i);
        v[i] = f.x;
        v[i + 1] = f.y;
        v[i + 2] = f.z;
        v[i + 3] = f.w;
    }
}

template <int Vec>
__device__ __forceinline__ void store_vec(float* p, const float (&v)[Vec]) {
#pragma unroll
    for (int i = 0; i < Vec; i += 4) *reinterpret_cast<float4*>(p + i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
}

// 16-bit storage: Vec values rounded and packed, 16 bytes per 8 values.
template <class T, int Vec>
__device__ __forceinline__ void store_vec(T* p, const float (&v)[Vec]) {
    static_assert(Vec % 8 == 0);
#pragma unroll
    for (int i = 0; i < Vec; i += 8)
        *reinterpret_cast<uint4*>(p + i) = make_uint4(mma::pack2<T>(v[i], v[i + 1]), mma::pack2<T>(v[i + 2], v[i + 3]),
                                                      mma::pack2<T>(v[i + 4], v[i + 5]), mma::pack2<T>(v[i + 6], v[i + 7]));
}

// One logical warp of Width lanes per (b, head, Vec state elements); lane l walks the chunks of its
// segment, the warp scan joins the segments, seeded with the initial state.
template <class T, int Width, class Policy>
__global__ void __launch_bounds__(Policy::state_passing::threads)
    state_passing_kernel(chunk_scratch<T> scratch, float* state, int nchunks, index_t state_size, index_t vectors) {
    constexpr int threads = Policy::state_passing::threads, Vec = Policy::state_passing::vec;
    constexpr int groups = threads / Width;
    using item = decay_state<Vec>;
    using warp_scan = cub::WarpScan<item, Width>;
    __shared__ typename warp_scan::TempStorage temp[groups];

    const int lane = static_cast<int>(threadIdx.x) % Width, group = static_cast<int>(threadIdx.x) / Width;
    const index_t vector = index_t(blockIdx.x) * groups + group;
    const bool active = vector < vectors;  // uniform over the logical warp
    const index_t per_head = state_size / Vec;
    const index_t bh = active ? vector / per_head : 0, e0 = active ? (vector % per_head) * Vec : 0;
    const int seg = (nchunks + Width - 1) / Width;
    const int c_begin = min(nchunks, lane * seg), c_end = min(nchunks, c_begin + seg);
    const float* decay = scratch.decay + bh * nchunks;
    const float* chunk_states = scratch.states + bh * nchunks * state_size + e0;
    const combine_decay_state<Vec> combine;

    item own{1.0f, {}};
#pragma unroll
    for (int i = 0; i < Vec; ++i) own.s[i] = 0.0f;
    if (active) {
        for (int c = c_begin; c < c_end; ++c) {
            item next;
            next.a = decay[c];
            load_vec(next.s, chunk_states + index_t(c) * state_size);
            own = combine(own, next);
        }
    }
    item init{1.0f, {}};
    if (active) load_vec(init.s, state + bh * state_size + e0);
    else {
#pragma unroll
        for (int i = 0; i < Vec; ++i) init.s[i] = 0.0f;
    }
    item entering;
    warp_scan(temp[group]).ExclusiveScan(own, entering, init, combine);
    if (!active) return;

    float S[Vec];
#pragma unroll
    for (int i = 0; i < Vec; ++i) S[i] = entering.s[i];
    for (int c = c_begin; c < c_end; ++c) {
        float s[Vec];
        load_vec(s, chunk_states + index_t(c) * state_size);
        if (scratch.entering) store_vec(scratch.entering + (bh * nchunks + c) * state_size + e0, S);
        const float a = decay[c];
#pragma unroll
        for (int i = 0; i < Vec; ++i) S[i] = fmaf(a, S[i], s[i]);
    }
    if (lane == Width - 1) store_vec(state + bh * state_size + e0, S);
}

}  // namespace transmamba::kernels::cuda::ssd
