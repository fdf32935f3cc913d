#pragma once
// Decoding attention on the GPU (flash-decoding): the newest token's query C (g, n) of each of a
// batch of sequences against its KV cache (keys B (len, g, n), values x (len, h, p), the newest
// last), SPEC.md sections 3 and 5. One softmax per group serves its h/g heads, as in prefill.
//
// The keys of each (sequence, group) are split across blocks (split-K). Pass 1, one block per
// (column slice, key split, group, sequence): the split's scores once for the group (the group's
// heads share K = B), their maximum m and sum l of exp(s - m), then ONE pass over the split's values
// for the slice's columns of the group's h/g * p, o = sum exp(s - m) v; K and V are each read once
// per group. Pass 2, a second small kernel: per output element, the splits rescaled to the common
// maximum and summed, divided by the common sum, plus D x for skip_D variants.
//
// Why a second kernel and not the last block of a (sequence, group) combining: the last-block scheme
// needs a zeroed arrival counter per (sequence, group) on every call, and the scratch is a workspace
// shared with the converter and the scan, never left zeroed, so it would cost a memset per call (a
// graph node and a launch like the combine's) and a fence per block; the combine kernel reads a few
// percent of the bytes pass 1 reads (below) and is deterministic.
//
// The floor is the cache's bytes: batch x len x (g n + h p) x sizeof(T) / 4.3 TB/s (the H200's
// copy rate). 64 heads x 64, d_state 128, g 1, bf16: 8448 bytes a token, so b 1 at 4k tokens 35 MB,
// 8.0 us; b 1 at 32k 277 MB, 64 us; b 16 at 32k 4.4 GB, 1.03 ms; b 64 at 32k 17.7 GB, 4.1 ms (g 8:
// x 1.21). Pass 1 makes that rate reachable: 16-byte loads (8 bf16 or 4 float of a row per lane),
// each thread issuing `keys_in_flight` rows' loads before it uses any, so that an SM holds ~64 KB
// of loads in flight (4.3 TB/s x ~1 us of DRAM latency over 132 SMs needs ~33 KB); enough blocks
// that every SM holds several: at batch 1 from many short splits and column slices, at batch >= 16
// from the sequences themselves with long splits. A split's partial output (h/g * p floats, written
// and read once) is 2 / keys of what it read for 16-bit values, hence at least 64 keys a split.
// No cp.async / TMA here: nothing reads a staged row twice, and registers hold what is in flight.
// On the H200 that reached 0.40-0.75 of 4.3 TB/s at batch >= 16 (docs/PERF.md): registers cap the
// bytes in flight (8 rows per thread compiles to 122 registers and halves the resident blocks), so
// staging V through shared memory with asynchronous copies is where it would pay next.
#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/backend/cuda/context.cuh"
#include "transmamba/backend/cuda/device_attributes.cuh"
#include "transmamba/backend/cuda/traits.cuh"
#include "transmamba/backend/cuda/types.cuh"
#include "transmamba/core/config.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/rotary.hpp"
#include "transmamba/core/workspace.hpp"
#include "transmamba/policy/attention.hpp"

namespace transmamba {

// A batch of sequences for one decoding-attention step: sequence b's query (g, n) at
// query + b * query_stride, its cache of lengths[b] tokens at keys + b * key_stride (len, g, n) and
// values + b * value_stride (len, h, p), its output (h, p) at y + b * y_stride (elements). `lengths`
// lives in device memory, each in [1, max_len]; null means every sequence holds max_len tokens. A
// sequence whose length is outside [1, max_len] gets NaN outputs (the lengths are on the device:
// the host cannot check them without a synchronisation).
template <class T>
struct decode_attention_batch {
    index_t batch = 0;
    const T* query = nullptr;
    index_t query_stride = 0;
    const T* keys = nullptr;
    index_t key_stride = 0;
    const T* values = nullptr;
    index_t value_stride = 0;
    const std::int32_t* lengths = nullptr;
    index_t max_len = 0;
    float* y = nullptr;
    index_t y_stride = 0;
};

namespace kernels::cuda::flash_decode {

struct tuning {
    static constexpr int threads = 256;
    static constexpr int keys_in_flight = 4;     // rows whose loads a thread issues before using them
    static constexpr int max_slice_chunks = 64;  // 16-byte column chunks a block row covers
    static constexpr int min_keys_per_split = 64;   // partial output <= 2 / 64 of the bytes read (above)
    static constexpr int max_keys_per_split = 1024; // the split's scores live in shared memory
    static constexpr int max_d_state = 256;         // the query (float) in shared memory
    static constexpr int blocks_per_sm = 4;         // resident blocks the split count aims at
};

template <class T>
inline constexpr int vec = 16 / static_cast<int>(sizeof(T));  // elements in a 16-byte load

template <class T>
struct alignas(16) chunk {
    T v[vec<T>];
};

// `count` consecutive elements from src (the rest zero): one 16-byte load when `full` (aligned, a
// whole chunk), element loads otherwise.
template <class T>
__device__ __forceinline__ chunk<T> load_chunk(const T* src, int count, bool full) {
    chunk<T> c;
    if (full) {
        const uint4 raw = __ldg(reinterpret_cast<const uint4*>(src));
        c = *reinterpret_cast<const chunk<T>*>(&raw);
    } else {
#pragma unroll
        for (int i = 0; i < vec<T>; ++i) c.v[i] = i < count ? src[i] : from_float<T>(0.0f);
    }
    return c;
}

template <class T>
struct args {
    const T* query;
    index_t query_stride;
    const T* keys;
    index_t key_stride;
    const T* values;
    index_t value_stride;
    const std::int32_t* lengths;
    index_t max_len, per_split;
    int splits, slices;
    int g, n, hg, p;
    float scale;
    int key_lanes_log2;    // lanes that share one key's dot product (a power of two <= 32)
    int slice_width_log2;  // column-chunk lanes of a block row (a power of two <= max_slice_chunks)
    bool vector_keys, vector_values;
    const float* D;
    float* part_m;  // (batch, g, splits)
    float* part_l;
    float* part_o;  // (batch, g, splits, h/g * p)
    float* y;
    index_t y_stride;
};

template <class T>
__device__ __forceinline__ index_t length_of(const args<T>& a, int b) {
    return a.lengths ? index_t(a.lengths[b]) : a.max_len;
}

// Pass 1: block (slice + slices * split, group, sequence).
template <class Variant, class T>
__global__ void __launch_bounds__(tuning::threads) split_kernel(const args<T> a) {
    constexpr int threads = tuning::threads, U = tuning::keys_in_flight, V = vec<T>;
    using reduce = cub::BlockReduce<float, threads>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ float scores[tuning::max_keys_per_split];
    __shared__ float q[tuning::max_d_state];
    __shared__ double inv_freq[tuning::max_d_state / 2];
    __shared__ alignas(16) float partial[threads * V];
    __shared__ float shared_m;

    const int slice = static_cast<int>(blockIdx.x) % a.slices, split = static_cast<int>(blockIdx.x) / a.slices;
    const int grp = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
    const index_t len = length_of(a, b);
    if (len < 1 || len > a.max_len) return;  // the combine writes NaN for this sequence
    const index_t j0 = index_t(split) * a.per_split, j1 = min(len, j0 + a.per_split);
    if (j0 >= j1) return;  // past this sequence's cache: the combine reads only the splits it has
    const int t = static_cast<int>(threadIdx.x), n = a.n, h = a.g * a.hg, cols = a.hg * a.p;
    const int count = static_cast<int>(j1 - j0);

    // The query, rotated to position len - 1 for RoPE (in float64 angles, core/rotary.hpp).
    const T* qg = a.query + b * a.query_stride + index_t(grp) * n;
    if constexpr (Variant::position::rotary) {
        const int half = n / 2;
        for (int i = t; i < half; i += threads) {
            inv_freq[i] = pow(Variant::position::theta, -2.0 * double(i) / double(n));
            const double angle = double(len - 1) * inv_freq[i];
            const auto r = rope_rotate(to_float(qg[i]), to_float(qg[i + half]), rotation{cos(angle), sin(angle)});
            q[i] = r.first;
            q[i + half] = r.second;
        }
    } else {
        for (int i = t; i < n; i += threads) q[i] = to_float(qg[i]);
    }
    __syncthreads();

    // Scores: teams of key_lanes lanes, one key per team, lane l taking the key's chunks l, l +
    // lanes, ... (RoPE: chunks of the first half, each with its partner chunk n/2 further on). Every
    // thread runs the same rounds, so the team's butterfly always has the whole warp.
    {
        const int lanes = 1 << a.key_lanes_log2, teams = threads >> a.key_lanes_log2;
        const int team = t >> a.key_lanes_log2, tl = t & (lanes - 1);
        constexpr bool rotary = Variant::position::rotary;
        const int span = rotary ? n / 2 : n, chunks = (span + V - 1) / V;
        const T* kbase = a.keys + b * a.key_stride + index_t(grp) * n;
        const index_t row = index_t(a.g) * n;
        float local_max = -INFINITY;
        const auto dot_of = [&](const chunk<T>& lo, const chunk<T>& hi, int c, index_t j) {
            float dot = 0.0f;
#pragma unroll
            for (int e = 0; e < V; ++e) {
                const int i = c * V + e;
                if (i >= span) break;
                if constexpr (rotary) {
                    const double angle = double(j) * inv_freq[i];
                    const auto r = rope_rotate(to_float(lo.v[e]), to_float(hi.v[e]), rotation{cos(angle), sin(angle)});
                    dot += q[i] * r.first + q[i + span] * r.second;
                } else {
                    dot += q[i] * to_float(lo.v[e]);
                }
            }
            return dot;
        };
        for (int base = 0; base < count; base += teams * U) {
            chunk<T> lo[U], hi[U];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int i = base + u * teams + team;
                const T* k = kbase + (j0 + i) * row + tl * V;
                const bool live = i < count && tl < chunks;
                const int left = span - tl * V;
                lo[u] = live ? load_chunk(k, left, a.vector_keys) : chunk<T>{};
                if constexpr (rotary) hi[u] = live ? load_chunk(k + span, left, a.vector_keys) : chunk<T>{};
            }
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int i = base + u * teams + team;
                float dot = i < count && tl < chunks ? dot_of(lo[u], hi[u], tl, j0 + i) : 0.0f;
                if (i < count)  // a key of more chunks than lanes: the rest, element by element
                    for (int c = tl + lanes; c < chunks; c += lanes) {
                        const T* k = kbase + (j0 + i) * row + c * V;
                        const chunk<T> l2 = load_chunk(k, span - c * V, false);
                        chunk<T> h2{};
                        if constexpr (rotary) h2 = load_chunk(k + span, span - c * V, false);
                        dot += dot_of(l2, h2, c, j0 + i);
                    }
                for (int off = lanes / 2; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
                if (tl == 0 && i < count) {
                    const float s = dot * a.scale;
                    scores[i] = s;
                    local_max = fmaxf(local_max, s);
                }
            }
        }
        const float m = reduce(temp).Reduce(local_max, [](float x, float y) { return fmaxf(x, y); });
        if (t == 0) shared_m = m;
        __syncthreads();
    }
    const float m = shared_m;
    float local_sum = 0.0f;
    for (int i = t; i < count; i += threads) local_sum += scores[i] = expf(scores[i] - m);
    const float l = reduce(temp).Sum(local_sum);  // thread 0's is the block's
    __syncthreads();                               // scores holds the weights now

    // Values: thread (key lane kl, column lane cl) sums the weighted 16-byte chunk cl of the slice
    // over keys kl, kl + kp, ...; then the kp key lanes are added in shared memory.
    const int width = 1 << a.slice_width_log2, kp = threads >> a.slice_width_log2;
    const int kl = t >> a.slice_width_log2, cl = t & (width - 1);
    const int c = slice * width + cl, col0 = c * V;
    const bool live_col = col0 < cols;
    const index_t token = index_t(h) * a.p;
    const T* vbase = a.values + b * a.value_stride + index_t(grp) * cols + col0;
    float acc[V];
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = 0.0f;
    for (int base = 0; base < count; base += kp * U) {
        chunk<T> v[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int i = base + u * kp + kl;
            v[u] = i < count && live_col ? load_chunk(vbase + (j0 + i) * token, cols - col0, a.vector_values) : chunk<T>{};
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int i = base + u * kp + kl;
            const float w = i < count ? scores[i] : 0.0f;
#pragma unroll
            for (int e = 0; e < V; ++e) acc[e] = fmaf(w, to_float(v[u].v[e]), acc[e]);
        }
    }
    // partial[t * V + e]: a key lane's row of the slice is width * V consecutive floats, so the sum
    // over key lanes reads, and writes out, consecutive words.
#pragma unroll
    for (int k = 0; k < V / 4; ++k)
        reinterpret_cast<float4*>(partial + t * V)[k] = make_float4(acc[4 * k], acc[4 * k + 1], acc[4 * k + 2], acc[4 * k + 3]);
    __syncthreads();
    const index_t part = (index_t(b) * a.g + grp) * a.splits + split;
    float* out = a.part_o + part * cols;
    for (int idx = t; idx < width * V; idx += threads) {
        const int col = slice * width * V + idx;
        float sum = 0.0f;
        for (int r = 0; r < kp; ++r) sum += partial[r * width * V + idx];
        if (col < cols) out[col] = sum;
    }
    if (t == 0 && slice == 0) {
        a.part_m[part] = m;
        a.part_l[part] = l;
    }
}

// Pass 2: one thread per output element (column e of group grp of sequence b).
template <class Variant, class T>
__global__ void combine_kernel(const args<T> a) {
    const int cols = a.hg * a.p;
    const int e = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
    if (e >= cols) return;
    const int grp = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
    float* y = a.y + b * a.y_stride + index_t(grp) * cols + e;
    const index_t len = length_of(a, b);
    if (len < 1 || len > a.max_len) {
        *y = NAN;
        return;
    }
    const int used = static_cast<int>((len + a.per_split - 1) / a.per_split);
    const index_t first = (index_t(b) * a.g + grp) * a.splits;
    float M = -INFINITY;
    for (int s = 0; s < used; ++s) M = fmaxf(M, a.part_m[first + s]);
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < used; ++s) {
        const float f = expf(a.part_m[first + s] - M);
        den = fmaf(f, a.part_l[first + s], den);
        num = fmaf(f, a.part_o[(first + s) * cols + e], num);
    }
    float out = num / den;
    if constexpr (Variant::skip_D) {
        const index_t token = index_t(a.g) * cols;
        const T* x = a.values + b * a.value_stride + (len - 1) * token + index_t(grp) * cols + e;
        out = fmaf(a.D[grp * a.hg + e / a.p], to_float(*x), out);
    }
    *y = out;
}

inline int log2_ceil(int v) {
    int k = 0;
    while ((1 << k) < v) ++k;
    return k;
}

// How pass 1 cuts the work: column slices per group, key splits per sequence.
struct plan {
    int slice_width_log2, slices, key_lanes_log2;
    index_t splits, per_split;
};

template <class T>
plan plan_for(const mixer_config& cfg, index_t batch, index_t max_len, bool rotary, int multiprocessors) {
    const int V = vec<T>;
    const int cols = static_cast<int>(cfg.heads_per_group() * cfg.headdim);
    const int chunks = (cols + V - 1) / V;
    plan pl{};
    pl.slice_width_log2 = std::min(log2_ceil(chunks), log2_ceil(tuning::max_slice_chunks));
    pl.slices = (chunks + (1 << pl.slice_width_log2) - 1) >> pl.slice_width_log2;
    const int span = static_cast<int>(rotary ? cfg.d_state / 2 : cfg.d_state);
    pl.key_lanes_log2 = std::min(log2_ceil((span + V - 1) / V), 5);
    // Enough blocks for blocks_per_sm on every SM, each split of at least min_keys_per_split keys
    // and at most max_keys_per_split.
    const index_t per_split_blocks = batch * cfg.ngroups * pl.slices;
    const index_t target = index_t(tuning::blocks_per_sm) * multiprocessors;
    const index_t want = (target + per_split_blocks - 1) / per_split_blocks;
    const index_t most = std::max<index_t>(1, max_len / tuning::min_keys_per_split);
    const index_t least = (max_len + tuning::max_keys_per_split - 1) / tuning::max_keys_per_split;
    const index_t splits = std::max(least, std::min(want, most));
    pl.per_split = (max_len + splits - 1) / splits;
    pl.splits = (max_len + pl.per_split - 1) / pl.per_split;  // no empty split at max_len
    return pl;
}

// The most splits any device can pick (the split count grows with the SM count only up to `most`).
inline index_t max_splits(index_t max_len) {
    return std::max<index_t>({1, max_len / tuning::min_keys_per_split,
                              (max_len + tuning::max_keys_per_split - 1) / tuning::max_keys_per_split});
}

}  // namespace kernels::cuda::flash_decode

template <attention_policy Variant>
struct decode_attention_kernel<Variant, cuda> {
    using tuning = kernels::cuda::flash_decode::tuning;

    // Scratch of one step over `batch` sequences of at most max_len tokens: per (sequence, group,
    // split) m, l and the h/g * p partial outputs.
    template <class T>
    static std::size_t batch_scratch_bytes(const mixer_config& cfg, index_t batch, index_t max_len) {
        const auto parts = static_cast<std::size_t>(batch * cfg.ngroups *
                                                    kernels::cuda::flash_decode::max_splits(std::max<index_t>(max_len, 1)));
        return parts * (2 + static_cast<std::size_t>(cfg.heads_per_group() * cfg.headdim)) * sizeof(float) +
               4 * workspace_arena::alignment;
    }
    template <class T>
    static std::size_t scratch_bytes(const mixer_config& cfg, index_t len) {
        return batch_scratch_bytes<T>(cfg, 1, len);
    }

    // One sequence (the session's step): y (h, p) = softmax(C B^T * scale) x + D x_newest over a
    // cache of len tokens.
    template <class T>
    static void run(const cuda_context& ctx, const mixer_config& cfg, const T* query, const T* keys, const T* values,
                    const float* D, index_t len, float* y, workspace_span span) {
        require(len >= 1, "decoding attention: the cache must hold at least the newest token");
        decode_attention_batch<T> in;
        in.batch = 1;
        in.query = query;
        in.keys = keys;
        in.values = values;
        in.max_len = len;
        in.y = y;
        run_batch<T>(ctx, cfg, in, D, span);
    }

    // A batch of sequences (decode_attention_batch says where each one's data lies).
    template <class T>
    static void run_batch(const cuda_context& ctx, const mixer_config& cfg, const decode_attention_batch<T>& in,
                          const float* D, workspace_span span) {
        static_assert(cuda_storage_type<T>, "the CUDA decoding attention takes float, __nv_bfloat16 or __half storage");
        namespace fd = kernels::cuda::flash_decode;
        const index_t g = cfg.ngroups, hg = cfg.heads_per_group(), p = cfg.headdim, n = cfg.d_state;
        constexpr bool rotary = Variant::position::rotary;
        require(in.batch >= 0 && in.batch <= 65535, "decoding attention: batch = ", in.batch, " must be in [0, 65535]");
        if (in.batch == 0) return;
        require(in.max_len >= 1, "decoding attention: the cache must hold at least the newest token, max_len = ",
                in.max_len);
        require(n <= tuning::max_d_state, "decoding attention: d_state = ", n, " exceeds ", tuning::max_d_state);
        require(g <= 65535, "decoding attention: ngroups = ", g, " must be at most 65535");
        if constexpr (rotary) require(n % 2 == 0, "RoPE attention needs an even d_state");
        const auto pl = fd::plan_for<T>(cfg, in.batch, in.max_len, rotary, kernels::cuda::multiprocessor_count());

        fd::args<T> a{};
        a.query = in.query;
        a.query_stride = in.query_stride;
        a.keys = in.keys;
        a.key_stride = in.key_stride;
        a.values = in.values;
        a.value_stride = in.value_stride;
        a.lengths = in.lengths;
        a.max_len = in.max_len;
        a.per_split = pl.per_split;
        a.splits = static_cast<int>(pl.splits);
        a.slices = pl.slices;
        a.g = static_cast<int>(g);
        a.n = static_cast<int>(n);
        a.hg = static_cast<int>(hg);
        a.p = static_cast<int>(p);
        a.scale = static_cast<float>(Variant::scale::value(n));
        a.key_lanes_log2 = pl.key_lanes_log2;
        a.slice_width_log2 = pl.slice_width_log2;
        // 16-byte loads where every row of the cache starts on 16 bytes.
        constexpr int V = fd::vec<T>;
        const auto aligned = [](const T* ptr, index_t stride, index_t row) {
            return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0 && stride % V == 0 && row % V == 0;
        };
        a.vector_keys = aligned(in.keys, in.key_stride, n) && (rotary ? (n / 2) % V == 0 : true);
        a.vector_values = aligned(in.values, in.value_stride, hg * p);
        a.D = D;
        workspace_arena arena(span);  // too small a span is an error here, before any launch
        const auto parts = static_cast<std::size_t>(in.batch * g * pl.splits);
        a.part_m = arena.take<float>(parts);
        a.part_l = arena.take<float>(parts);
        a.part_o = arena.take<float>(parts * static_cast<std::size_t>(hg * p));
        a.y = in.y;
        a.y_stride = in.y_stride;
        const index_t x_blocks = pl.splits * pl.slices;
        require(x_blocks <= 0x7fffffff, "decoding attention: ", x_blocks, " blocks per group exceed one launch");
        fd::split_kernel<Variant, T><<<dim3(static_cast<unsigned>(x_blocks), static_cast<unsigned>(g),
                                            static_cast<unsigned>(in.batch)),
                                       tuning::threads, 0, ctx.stream>>>(a);
        kernels::cuda::check_launch("decode attention split_kernel");
        constexpr unsigned combine_threads = 256;
        const auto col_blocks = static_cast<unsigned>((hg * p + combine_threads - 1) / combine_threads);
        fd::combine_kernel<Variant, T><<<dim3(col_blocks, static_cast<unsigned>(g), static_cast<unsigned>(in.batch)),
                                         combine_threads, 0, ctx.stream>>>(a);
        kernels::cuda::check_launch("decode attention combine_kernel");
    }
};

}  // namespace transmamba
