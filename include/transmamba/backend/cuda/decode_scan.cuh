#pragma once
// Decoding on the GPU, SSM side: one token's state update for a batch of sequences (SPEC.md
// section 2),  S <- exp(dt A) S + dt x B^T,  y = S C + D x,  in ONE kernel, the state updated in
// place.
//
// Every state element is read and written once and nothing else is large, so a step is bound by
// the state's bytes (2 x 4 x b h p n) and, at small batch, by one memory round trip plus the launch.
// What decides the time is how many state bytes are in flight at once: each thread issues all its
// 16-byte state loads (Rows rows x one 4-column chunk) before it uses any of them, a row's columns
// are spread over the lanes of a warp, and the grid over (headdim rows, head, sequence) is fine
// enough to put the whole state of a batch-1 step (64 x 64 x 128 floats: 2 MiB) in flight at once,
// one thread per 16 bytes in one wave of 1024 blocks on 132 SMs (the old kernel walked 4 rows per
// warp one after another: 256 blocks, one load in flight per warp, 7.5 us by ncu on the H100). The
// C contraction is a butterfly over the lanes that share a row; D x is added by the row's first
// lane. B and C of the row's group are read by every row (L1 / L2 hits): 8-byte loads for 16-bit
// storage, 16-byte for float, when the rows are aligned (scalar loads otherwise).
#include <cstdint>

#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/backend/cuda/context.cuh"
#include "transmamba/backend/cuda/device_attributes.cuh"
#include "transmamba/backend/cuda/types.cuh"
#include "transmamba/backend/traits.hpp"
#include "transmamba/core/config.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/ssm_inputs.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

namespace kernels::cuda::decode_scan {

struct tuning {
    static constexpr int threads = 128;  // 4 warps
    // Rows per thread (the kernel exists for 1, 2 and 4): 1 while the grid is short of work (small
    // batch: more, smaller blocks fill the SMs), 4 once a 4-row grid still has `full_waves` blocks
    // per SM (large batch: fewer blocks to schedule, four loads in flight per thread).
    static constexpr int few_rows = 1, many_rows = 4;
    static constexpr int full_waves = 8;
};

// How a warp covers state rows: `lanes` lanes (a power of two, at most 32) share a row, lane l
// taking the 4-column chunks l, l + lanes, ... (`chunks_per_lane` of them); 32 / lanes rows side by
// side per warp.
struct row_layout {
    int lanes_log2;
    int chunks_per_lane;
    constexpr int lanes() const { return 1 << lanes_log2; }
};

inline row_layout layout_for(index_t d_state) {
    const int quads = static_cast<int>(d_state / 4);
    int log2 = 0;
    while (log2 < 5 && (1 << log2) < quads) ++log2;
    return {log2, (quads + (1 << log2) - 1) >> log2};
}

inline int rows_per_block(const row_layout& l, int rows_per_thread) {
    return rows_per_thread * (32 / l.lanes()) * (tuning::threads / 32);
}

// The rows per thread a launch of `batch` sequences uses (tuning::few_rows or many_rows).
inline int rows_per_thread_for(index_t batch, index_t nheads, index_t headdim, index_t d_state, int multiprocessors) {
    const index_t rows = rows_per_block(layout_for(d_state), tuning::many_rows);
    const index_t blocks = batch * nheads * ((headdim + rows - 1) / rows);
    return blocks >= index_t(tuning::full_waves) * multiprocessors ? tuning::many_rows : tuning::few_rows;
}

template <class T>
struct args {
    const T* x;
    index_t x_sb, x_sh;
    const T* B;
    index_t b_sb, b_sg;
    const T* C;
    index_t c_sb, c_sg;
    const float* dt;
    index_t dt_sb, dt_sh;
    const float* A;
    const float* D;
    float* state;  // (batch, nheads, headdim, d_state), contiguous, 16-byte aligned
    float* y;
    index_t y_sb, y_sh;
    int nheads, heads_per_group, headdim, dstate;
    row_layout layout;
    bool vector_bc;  // B and C rows allow 4-element vector loads
};

// Four consecutive storage elements as floats: one 4 x sizeof(T)-byte load where aligned.
template <class T>
__device__ __forceinline__ float4 load4(const T* p, bool vector) {
    struct alignas(4 * sizeof(T)) quad {
        T v[4];
    };
    if (vector) {
        const quad q = *reinterpret_cast<const quad*>(p);
        return make_float4(to_float(q.v[0]), to_float(q.v[1]), to_float(q.v[2]), to_float(q.v[3]));
    }
    return make_float4(to_float(p[0]), to_float(p[1]), to_float(p[2]), to_float(p[3]));
}

// One block per (rows_per_block headdim rows, head, sequence): blockIdx (x, y, z), so that a thread
// finds its rows without dividing by run-time sizes.
template <class T, int Rows>
__global__ void __launch_bounds__(tuning::threads) state_update_kernel(const args<T> a) {
    const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
    const int lanes = a.layout.lanes(), rows_per_warp = Rows << (5 - a.layout.lanes_log2);
    const int rb = static_cast<int>(blockIdx.x), head = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
    const int n = a.dstate, p = a.headdim;
    const int r0 = (rb * (tuning::threads / 32) + warp) * rows_per_warp + (lane >> a.layout.lanes_log2) * Rows;
    const int quad = lane & (lanes - 1);
    float* const state = a.state + (index_t(b) * a.nheads + head) * index_t(p) * n;
    const int grp = head / a.heads_per_group;
    const T* Bg = a.B + b * a.b_sb + grp * a.b_sg;
    const T* Cg = a.C + b * a.c_sb + grp * a.c_sg;
    const auto row = [&](int i, int k) { return reinterpret_cast<float4*>(state + index_t(r0 + i) * n + k); };
    const auto column_of = [&](int j) { return 4 * (quad + (j << a.layout.lanes_log2)); };
    // Chunk j's state (every row's load issued before any is used; streaming: a step touches its
    // state once) and its B and C columns. The first chunk's loads go out before the thread reads
    // anything else, so that the per-head scalars' round trip overlaps them instead of delaying them.
    float4 s[Rows], bk, ck;
    const auto load_chunk = [&](int j) {
        const int k = column_of(j);
        const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int i = 0; i < Rows; ++i) s[i] = k < n && r0 + i < p ? __ldcs(row(i, k)) : zero;
        bk = k < n ? load4(Bg + k, a.vector_bc) : zero;
        ck = k < n ? load4(Cg + k, a.vector_bc) : zero;
    };
    load_chunk(0);

    const float dt = a.dt[b * a.dt_sb + head * a.dt_sh];
    const float decay = expf(dt * a.A[head]), Dh = a.D[head];
    const T* xh = a.x + b * a.x_sb + head * a.x_sh;
    float xr[Rows], acc[Rows];
#pragma unroll
    for (int i = 0; i < Rows; ++i) {
        xr[i] = r0 + i < p ? to_float(xh[r0 + i]) : 0.0f;
        acc[i] = 0.0f;
    }
#pragma unroll 1
    for (int j = 0; j < a.layout.chunks_per_lane; ++j) {
        if (j > 0) load_chunk(j);
        const int k = column_of(j);
#pragma unroll
        for (int i = 0; i < Rows; ++i) {
            const float coef = dt * xr[i];
            s[i].x = fmaf(s[i].x, decay, coef * bk.x);
            s[i].y = fmaf(s[i].y, decay, coef * bk.y);
            s[i].z = fmaf(s[i].z, decay, coef * bk.z);
            s[i].w = fmaf(s[i].w, decay, coef * bk.w);
            if (k < n && r0 + i < p) __stcs(row(i, k), s[i]);
            acc[i] += s[i].x * ck.x + s[i].y * ck.y + s[i].z * ck.z + s[i].w * ck.w;
        }
    }
    // y_r = sum over the row's lanes: a butterfly within each group of `lanes` lanes (every lane of
    // the warp takes part, so the full mask holds; lanes past the row contribute zeros).
    for (int offset = lanes / 2; offset > 0; offset /= 2) {
#pragma unroll
        for (int i = 0; i < Rows; ++i) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], offset);
    }
    if (quad == 0) {
        float* y = a.y + b * a.y_sb + head * a.y_sh;
#pragma unroll
        for (int i = 0; i < Rows; ++i)
            if (r0 + i < p) y[r0 + i] = fmaf(Dh, xr[i], acc[i]);
    }
}

}  // namespace kernels::cuda::decode_scan

template <>
struct decode_scan_kernel<cuda> {
    // One token (seqlen 1) of `batch` sequences: S (batch, h, p, n) advances by it in place and
    // y (batch, 1, h, p) receives its output.
    template <class T>
    static void run(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in, tensor_view<float, 4> y,
                    tensor_view<float, 4> state) {
        run_with<T>(ctx, cfg, in, y, state, 0);
    }

    // The same with the kernel's shape named: 1, 2 or 4 state rows per thread (tests and benchmarks
    // cover each); 0 picks by the grid's size (kernels::cuda::decode_scan::rows_per_thread_for).
    template <class T>
    static void run_with(const cuda_context& ctx, const mixer_config& cfg, const ssm_inputs<T>& in,
                         tensor_view<float, 4> y, tensor_view<float, 4> state, int rows_per_thread) {
        static_assert(cuda_storage_type<T>, "the CUDA decoding step takes float, __nv_bfloat16 or __half storage");
        namespace k = kernels::cuda::decode_scan;
        const index_t batch = in.batch(), h = in.nheads(), p = in.headdim(), n = in.d_state(), g = in.ngroups();
        expect_decode_step_views(cfg, in, y, state);
        require(n % 4 == 0, "decoding step (CUDA): d_state = ", n, " must be a multiple of 4");
        require(reinterpret_cast<std::uintptr_t>(state.data()) % 16 == 0,
                "decoding step (CUDA): the state must be 16-byte aligned");
        if (batch == 0) return;

        constexpr std::uintptr_t vector_bytes = 4 * sizeof(T);
        const auto vector_row = [](const T* row, index_t s0, index_t s2) {
            return reinterpret_cast<std::uintptr_t>(row) % vector_bytes == 0 && s0 % 4 == 0 && s2 % 4 == 0;
        };
        k::args<T> a{};
        a.x = in.x.data();
        a.x_sb = in.x.stride(0);
        a.x_sh = in.x.stride(2);
        a.B = in.B.data();
        a.b_sb = in.B.stride(0);
        a.b_sg = in.B.stride(2);
        a.C = in.C.data();
        a.c_sb = in.C.stride(0);
        a.c_sg = in.C.stride(2);
        a.dt = in.dt.data();
        a.dt_sb = in.dt.stride(0);
        a.dt_sh = in.dt.stride(2);
        a.A = in.A;
        a.D = in.D;
        a.state = state.data();
        a.y = y.data();
        a.y_sb = y.stride(0);
        a.y_sh = y.stride(2);
        a.nheads = static_cast<int>(h);
        a.heads_per_group = static_cast<int>(h / g);
        a.headdim = static_cast<int>(p);
        a.dstate = static_cast<int>(n);
        a.layout = k::layout_for(n);
        a.vector_bc = vector_row(in.B.data(), in.B.stride(0), in.B.stride(2)) &&
                      vector_row(in.C.data(), in.C.stride(0), in.C.stride(2));
        require(rows_per_thread == 0 || rows_per_thread == 1 || rows_per_thread == 2 || rows_per_thread == 4,
                "decoding step (CUDA): rows per thread must be 1, 2 or 4 (0: chosen), got ", rows_per_thread);
        const int rows = rows_per_thread != 0
                             ? rows_per_thread
                             : k::rows_per_thread_for(batch, h, p, n, kernels::cuda::multiprocessor_count());
        const int per_block = k::rows_per_block(a.layout, rows);
        require(batch <= 65535 && h <= 65535, "decoding step (CUDA): batch = ", batch, " and nheads = ", h,
                " must each be at most 65535 (one launch)");
        const dim3 grid(static_cast<unsigned>((p + per_block - 1) / per_block), static_cast<unsigned>(h),
                        static_cast<unsigned>(batch));
        const auto launch = [&](auto kernel) { kernel<<<grid, k::tuning::threads, 0, ctx.stream>>>(a); };
        if (rows == 4) launch(k::state_update_kernel<T, 4>);
        else if (rows == 2) launch(k::state_update_kernel<T, 2>);
        else launch(k::state_update_kernel<T, 1>);
        kernels::cuda::check_launch("decode_scan state_update_kernel");
    }
};

}  // namespace transmamba
