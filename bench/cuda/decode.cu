// Decoding on the GPU, 64 heads x headdim 64 x d_state 128 (d_model 2048, expand 2), bf16 storage,
// float32 state. Two levels:
//
// The kernels a step is made of, next to the peers that do the same work (bench/peers/decode_peers.py):
//   decode_ssm/transmamba/bf16/b:{1,16,64,256}/h:64/p:64/n:128/g:{1,8}/graph:{0,1}
//       decode_scan_kernel: S = exp(dt A) S + dt x B^T, y = S C + D x for a batch of sequences
//       (peer: mamba_ssm's selective_state_update on the same shapes), timed as the peer's script
//       times it: one call per input copy back to back, eager (graph:0) or all of them captured in
//       ONE graph (graph:1), CUDA events around the whole loop, the time per call = the loop's
//       time / the copies; the median over the iterations (one loop each)
//   decode_ssm/transmamba_r{1,2,4}/bf16/.../g:1/graph:1: back to back as above, with the kernel's
//       shape named (state rows per thread; the default picks 1 or 4 by the grid's size)
//   decode_ssm/transmamba_call/bf16/...: the same kernel, events around ONE call (eager) or one
//       replay of a graph holding one call: the latency of an isolated step, which adds the
//       launch's host-to-GPU latency that back-to-back calls hide
//   decode_attention/transmamba/bf16/b:{1,16,64}/h:64/p:64/n:128/g:{1,8}/cache:{4096,32768}/graph:{0,1}
//       decode_attention_kernel (flash-decoding): each sequence's newest query against its KV cache
//       of `cache` tokens (peer: SDPA with q length 1 over the same cache, keys repeated per head);
//       of_4300_GB_per_s = the cache's bytes per second over the H200's 4.3 TB/s copy rate
//   decode_attention/transmamba/bf16/b:{1,16,64}/h:64/p:128/n:128/g:64/cache:{4096,32768}/graph:{0,1}
//       the same as plain multi-head attention (g = h, headdim 128; peer: SDPA without a repeat)
//   Inputs rotate over enough copies (>= 150 MB in all) that no call finds its state or cache in
//   the 50 MB L2; graph:1 replays one captured launch per copy.
//
// A whole mixer step (mixer<bf16, cuda>::step, the library's decode path, SPEC section 5):
//   decode_step_ssm/transmamba/bf16/b:1/h:64/p:64/n:128/g:{1,8}/graph:{0,1}
//       a step at a position >= P: in-projection GEMV, conv over the window, time steps, the SSM
//       update, gated RMSNorm, out-projection GEMV
//   decode_step_attention/transmamba/bf16/b:1/h:64/p:64/n:128/g:{1,8}/cache:{1024,8192}/graph:{0,1}
//       a step below P over a KV cache of `cache` tokens: the same projections, the token's key and
//       value appended, decode_attention_kernel over the cache
//
// The mixer decodes one sequence per decode state (mixer::prefill requires batch 1, mixer::step
// takes one token), so the whole step is measured at batch 1; the SSM kernel takes any batch.
//
// Whole step, graph:0: the default layer (paper_policies, checked_inputs), eager: every step checks its input
//          for non-finite values (backend_traits<cuda>::first_non_finite: an 8-byte cudaMalloc /
//          cudaFree, a device-to-host copy and a stream synchronisation), so it cannot be captured;
//          the timings include that host round trip.
// Whole step, graph:1: paper_policies::with_input_check<trusted_inputs> (no per-call check), one step per layer
//          captured once in a CUDA graph (at the position every timed step runs at) and replayed.
//
// Setup per benchmark: 4 layers, each with its own copy of the weights and its own decode state,
// stepped in turn (as a model's stack does), so no step finds its layer's weights (52 MB in bf16)
// or cache in the 50 MB L2 from the step before. SSM side: prefill of a 16-token prompt at P = 0. Attention side: P =
// max_tokens = cache + 8, prefill of cache - 1 tokens, and before every step the position is set
// back to cache - 1, so every timed step appends at slot cache - 1 and attends over exactly `cache`
// tokens (outside the timed window: a host-side field).
//
// Timing (bench/support/cuda_bench.cuh): CUDA events around each step (graph:0, on the legacy
// default stream) or graph launch (graph:1, on a stream of its own), 3 warm-up steps per layer, a
// fixed iteration count, the median.
// Counters:
//   tokens_per_s  1 / median (batch 1)
//   GB_per_s      bytes a step must touch: the weights (in_proj, out_proj, conv, dt_bias, A_log, D,
//                 norm; storage type), the conv window (read and written, float32), and the float32
//                 SSM state read and written (decode_ssm) or the bf16 KV cache read (decode_attention)
//   TFLOP_per_s   2*d_model*d_in_proj + 2*d_inner*d_model, plus 6*h*p*n (SSM update and readout) or
//                 2*cache*(g*n + h*p) (scores once per group, values per head)
//   flop_fraction, byte_fraction   of 676 TFLOP/s and 3000 GB/s
#include <cuda_bf16.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <transmamba/backend/cuda.cuh>
#include <transmamba/block/mixer.hpp>

#include "../support/cuda_bench.cuh"

namespace {

using namespace transmamba;
using bf16 = __nv_bfloat16;

constexpr index_t d_model = 2048, expand = 2, headdim = 64, d_state = 128;
constexpr int layers = 4;
constexpr index_t ssm_prompt = 16;

mixer_config layer_config(index_t g) {
    mixer_config c;
    c.d_model = d_model;
    c.expand = expand;
    c.headdim = headdim;
    c.d_state = d_state;
    c.ngroups = g;
    c.validate();
    return c;
}

// The capturable layer: no per-call input check.
using trusted_policies = paper_policies::with_input_check<trusted_inputs>;

// The layers of one (policies, g), kept while consecutive benchmarks use them. Layer 0's weights
// are drawn on the host (seconds for 26M values); the others get device copies of them: what
// matters for the timing is that each layer's weights live at their own addresses.
template <class Policies>
auto& layers_for(index_t g) {
    using layer_type = mixer<bf16, transmamba::cuda, Policies>;
    static std::array<std::unique_ptr<layer_type>, layers> cached;
    static index_t cached_g = 0;
    if (!cached[0] || cached_g != g) {
        for (auto& l : cached) l.reset();
        for (auto& l : cached) l = std::make_unique<layer_type>(layer_config(g));
        randomize(cached[0]->params(), 77 + static_cast<std::uint64_t>(g));
        std::vector<const bf16*> drawn;
        cached[0]->params().for_each([&](auto, auto& buf, const auto&) { drawn.push_back(buf.data()); });
        for (int i = 1; i < layers; ++i) {
            std::size_t k = 0;
            // Mutable access: the copies are checked for non-finite values before their first use.
            cached[i]->params().for_each([&](auto, auto& buf, const auto&) {
                bench::check_cuda(cudaMemcpy(buf.data(), drawn[k++], buf.size() * sizeof(bf16), cudaMemcpyDeviceToDevice),
                                  "cudaMemcpy (layer weights)");
            });
        }
        cached_g = g;
    }
    return cached;
}

struct shape {
    index_t g;
    index_t cache;  // 0: the SSM side
};

double step_flops(const mixer_config& c, index_t cache) {
    const double proj = 2.0 * double(c.d_model * c.d_in_proj()) + 2.0 * double(c.d_inner() * c.d_model);
    if (cache == 0) return proj + 6.0 * double(c.nheads() * c.headdim * c.d_state);
    return proj + 2.0 * double(cache) * double(c.ngroups * c.d_state + c.nheads() * c.headdim);
}

double step_bytes(const mixer_config& c, index_t cache) {
    const double weights = double(c.d_in_proj() * c.d_model + c.d_model * c.d_inner() + c.conv_dim() * (c.d_conv + 1) +
                                  3 * c.nheads() + c.d_inner()) *
                           sizeof(bf16);
    const double window = 2.0 * double((c.d_conv - 1) * c.d_in_proj()) * sizeof(float);
    const double side = cache == 0 ? 2.0 * double(c.nheads() * c.headdim * c.d_state) * sizeof(float)
                                   : double(cache) * double(c.ngroups * c.d_state + c.nheads() * c.headdim) * sizeof(bf16);
    return weights + window + side;
}

template <bool Graph>
void bm_decode(benchmark::State& st, shape s) {
    using policies = std::conditional_t<Graph, trusted_policies, paper_policies>;
    using decode_state = typename mixer<bf16, transmamba::cuda, policies>::decode_state;
    auto& ls = layers_for<policies>(s.g);
    const mixer_config c = ls[0]->config();
    const bool ssm = s.cache == 0;
    const index_t P = ssm ? 0 : s.cache + 8, max_tokens = ssm ? ssm_prompt : s.cache + 8;
    const index_t prompt = ssm ? ssm_prompt : s.cache - 1;

    device_buffer<bf16> u_prompt(static_cast<std::size_t>(prompt * c.d_model)),
        out_prompt(static_cast<std::size_t>(prompt * c.d_model)), u(static_cast<std::size_t>(c.d_model)),
        out(static_cast<std::size_t>(c.d_model));
    bench::fill_uniform(u_prompt, 11, -1.0f, 1.0f);
    bench::fill_uniform(u, 12, -1.0f, 1.0f);
    workspace<transmamba::cuda> ws;
    const workspace_span span = ws.reserve(ls[0]->decode_workspace_bytes(prompt, max_tokens));
    std::array<decode_state, layers> states;
    // On the legacy default stream, where decode_state::reset fills its buffers.
    for (int i = 0; i < layers; ++i)
        ls[i]->prefill(tensor_view<const bf16, 3>(u_prompt.data(), {1, prompt, c.d_model}),
                       tensor_view<bf16, 3>(out_prompt.data(), {1, prompt, c.d_model}), P, max_tokens, span, states[i]);
    bench::check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (prefill)");

    const tensor_view<const bf16, 1> uv(u.data(), {c.d_model});
    const tensor_view<bf16, 1> ov(out.data(), {c.d_model});
    const auto rewind = [&](int i) {
        if (!ssm) states[i].position = s.cache - 1;  // attend over exactly `cache` tokens
    };
    const auto step = [&](int i, const cuda_context& ctx) { ls[i]->step(uv, ov, span, states[i], ctx); };
    int next = 0, current = 0;
    const auto prepare = [&] {
        current = next;
        next = (next + 1) % layers;
        rewind(current);
    };

    std::vector<double> times;
    if constexpr (Graph) {
        cuda_stream stream;
        std::array<std::unique_ptr<bench::captured_graph>, layers> graphs;
        for (int i = 0; i < layers; ++i) {
            rewind(i);
            step(i, stream.context());  // the one-time weight check, outside the capture
            stream.synchronize();
            rewind(i);
            graphs[i] = std::make_unique<bench::captured_graph>(stream.get(),
                                                                [&](const cuda_context& ctx) { step(i, ctx); });
        }
        times = bench::time_iterations(st, stream.get(), 3 * layers, prepare, [&] { graphs[current]->launch(stream.get()); });
    } else {
        const cuda_context ctx{};
        times = bench::time_iterations(st, ctx.stream, 3 * layers, prepare, [&] { step(current, ctx); });
    }

    bench::work_counts w;
    w.tokens = 1.0;
    w.flops = step_flops(c, s.cache);
    w.bytes = step_bytes(c, s.cache);
    w.ceiling = bench::ceiling_TFLOP_per_s("bf16");
    bench::set_counters(st, times, w);
}

template <bool Graph>
void add(const shape& s) {
    const auto c = layer_config(s.g);
    const bool ssm = s.cache == 0;
    const int graph = Graph ? 1 : 0;
    const auto name =
        ssm ? bench::bench_name("decode_step_ssm", "transmamba", "bf16",
                                {{"b", 1}, {"h", c.nheads()}, {"p", c.headdim}, {"n", c.d_state}, {"g", s.g}, {"graph", graph}})
            : bench::bench_name("decode_step_attention", "transmamba", "bf16",
                                {{"b", 1},
                                 {"h", c.nheads()},
                                 {"p", c.headdim},
                                 {"n", c.d_state},
                                 {"g", s.g},
                                 {"cache", s.cache},
                                 {"graph", graph}});
    // ~0.1-0.3 ms per eager SSM step, up to a few ms for the one-block-per-group attention kernel
    // over 8192 tokens at g = 1.
    const double est_ms = ssm ? 0.3 : (s.g == 1 ? 0.5 : 0.2) * double(s.cache) / 1024.0 + 0.3;
    bench::add(name, bench::iterations_for(est_ms, 500.0, 50, 400), [s](benchmark::State& st) { bm_decode<Graph>(st, s); });
}

// ---- the kernels ---------------------------------------------------------------------------------

constexpr double rotate_bytes = 150e6;  // the copies of the inputs a kernel benchmark rotates over

int copies_for(double bytes_per_copy) {
    return static_cast<int>(std::clamp(std::ceil(rotate_bytes / bytes_per_copy), 1.0, 80.0));
}

// Times `launch(copy, ctx)` over the copies in turn: eager on the legacy stream, or one captured
// graph per copy replayed on a stream of its own.
template <class Launch>
std::vector<double> time_rotating(benchmark::State& st, int copies, bool graph, Launch&& launch) {
    int next = 0, current = 0;
    const auto prepare = [&] {
        current = next;
        next = (next + 1) % copies;
    };
    if (!graph) {
        const cuda_context ctx{};
        return bench::time_iterations(st, ctx.stream, 2 * copies, prepare, [&] { launch(current, ctx); });
    }
    cuda_stream stream;
    std::vector<std::unique_ptr<bench::captured_graph>> graphs;
    for (int i = 0; i < copies; ++i)
        graphs.push_back(std::make_unique<bench::captured_graph>(stream.get(),
                                                                 [&](const cuda_context& ctx) { launch(i, ctx); }));
    return bench::time_iterations(st, stream.get(), 2 * copies, prepare, [&] { graphs[current]->launch(stream.get()); });
}

// Times `launch(copy, ctx)` for every copy back to back (the peer script's loop_ms): eager on the
// legacy stream, or one graph holding all the copies' launches replayed on a stream of its own.
// Returns ms per call, one value per iteration.
template <class Launch>
std::vector<double> time_back_to_back(benchmark::State& st, int copies, bool graph, Launch&& launch) {
    std::vector<double> per_call;
    const auto record = [&](cudaStream_t stream, auto&& loop) {
        for (int w = 0; w < 2; ++w) loop();
        bench::check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize (warm-up)");
        bench::event_pair ev;
        for (auto _ : st) {
            const double ms = ev.time(stream, loop) / copies;
            per_call.push_back(ms);
            st.SetIterationTime(ms * 1e-3);
        }
    };
    if (!graph) {
        const cuda_context ctx{};
        record(ctx.stream, [&] {
            for (int i = 0; i < copies; ++i) launch(i, ctx);
        });
        return per_call;
    }
    cuda_stream stream;
    const bench::captured_graph all(stream.get(), [&](const cuda_context& ctx) {
        for (int i = 0; i < copies; ++i) launch(i, ctx);
    });
    record(stream.get(), [&] { all.launch(stream.get()); });
    return per_call;
}

// decode_scan_kernel on `batch` sequences of one token; `isolated`: time single calls
// (time_rotating) instead of back-to-back loops.
void bm_decode_ssm_kernel(benchmark::State& st, index_t batch, index_t g, bool graph, bool isolated, int rows = 0) {
    const mixer_config c = layer_config(g);
    const index_t h = c.nheads(), p = c.headdim, n = c.d_state;
    const std::size_t state_elems = static_cast<std::size_t>(batch * h * p * n);
    const std::size_t in_elems = static_cast<std::size_t>(batch * (h * p + 2 * g * n));
    const double copy_bytes = double(state_elems) * sizeof(float) + double(in_elems) * sizeof(bf16);
    const int copies = copies_for(copy_bytes);
    device_buffer<bf16> xbc(in_elems * copies);
    device_buffer<float> dt(static_cast<std::size_t>(batch * h) * copies), A(h), D(h), state(state_elems * copies),
        y(static_cast<std::size_t>(batch * h * p) * copies);
    bench::fill_uniform(xbc, 21, -1.0f, 1.0f);
    bench::fill_uniform(dt, 22, 1e-3f, 0.1f);
    bench::fill_uniform(A, 23, -1.5f, -0.05f);
    bench::fill_uniform(D, 24, 0.5f, 1.5f);
    bench::fill_uniform(state, 25, -1.0f, 1.0f);
    const index_t width = h * p + 2 * g * n;
    const auto launch = [&](int i, const cuda_context& ctx) {
        const bf16* row = xbc.data() + in_elems * i;
        ssm_inputs<bf16> in;
        in.x = tensor_view<const bf16, 4>(row, {batch, 1, h, p}, {width, width, p, 1});
        in.B = tensor_view<const bf16, 4>(row + h * p, {batch, 1, g, n}, {width, width, n, 1});
        in.C = tensor_view<const bf16, 4>(row + h * p + g * n, {batch, 1, g, n}, {width, width, n, 1});
        in.dt = tensor_view<const float, 3>(dt.data() + batch * h * i, {batch, 1, h});
        in.A = A.data();
        in.D = D.data();
        decode_scan_kernel<transmamba::cuda>::run_with<bf16>(
            ctx, c, in, tensor_view<float, 4>(y.data() + batch * h * p * i, {batch, 1, h, p}),
            tensor_view<float, 4>(state.data() + state_elems * i, {batch, h, p, n}), rows);
    };
    const auto times = isolated ? time_rotating(st, copies, graph, launch) : time_back_to_back(st, copies, graph, launch);
    bench::work_counts w;
    w.tokens = double(batch);
    w.flops = 6.0 * double(state_elems);
    w.bytes = 2.0 * double(state_elems) * sizeof(float) + double(in_elems) * sizeof(bf16) +
              double(batch * h * p) * sizeof(float);
    w.ceiling = bench::ceiling_TFLOP_per_s("fp32");
    bench::set_counters(st, times, w);
}

// decode_attention_kernel over `batch` sequences, each with a cache of `cache` tokens (dense, side
// by side: keys (batch, cache, g, n), values (batch, cache, h, p)); batch 1 through run (the
// session's entry), more through run_batch. Each graph holds one launch pair (split + combine).
void bm_decode_attention_kernel(benchmark::State& st, const mixer_config& c, index_t batch, index_t cache, bool graph) {
    const index_t h = c.nheads(), p = c.headdim, n = c.d_state, g = c.ngroups;
    using kernel = decode_attention_kernel<paper_attention, transmamba::cuda>;
    const std::size_t key_elems = static_cast<std::size_t>(batch * cache * g * n),
                      value_elems = static_cast<std::size_t>(batch * cache * h * p);
    const int copies = copies_for(double(key_elems + value_elems) * sizeof(bf16));
    device_buffer<bf16> keys(key_elems * copies), values(value_elems * copies), query(static_cast<std::size_t>(batch * g * n));
    device_buffer<float> D(h), y(static_cast<std::size_t>(batch * h * p));
    bench::fill_uniform(keys, 31, -1.0f, 1.0f);
    bench::fill_uniform(values, 32, -1.0f, 1.0f);
    bench::fill_uniform(query, 33, -1.0f, 1.0f);
    bench::fill_uniform(D, 34, 0.5f, 1.5f);
    device_buffer<std::byte> scratch(kernel::batch_scratch_bytes<bf16>(c, batch, cache));
    const workspace_span span = align_span({scratch.data(), scratch.size()});
    const auto launch = [&](int i, const cuda_context& ctx) {
        if (batch == 1) {
            kernel::run<bf16>(ctx, c, query.data(), keys.data() + key_elems * i, values.data() + value_elems * i, D.data(),
                              cache, y.data(), span);
            return;
        }
        decode_attention_batch<bf16> in;
        in.batch = batch;
        in.query = query.data();
        in.query_stride = g * n;
        in.keys = keys.data() + key_elems * i;
        in.key_stride = cache * g * n;
        in.values = values.data() + value_elems * i;
        in.value_stride = cache * h * p;
        in.max_len = cache;
        in.y = y.data();
        in.y_stride = h * p;
        kernel::run_batch<bf16>(ctx, c, in, D.data(), span);
    };
    const auto times = time_rotating(st, copies, graph, launch);
    bench::work_counts w;
    w.tokens = double(batch);
    w.flops = 2.0 * double(batch) * double(cache) * double(g * n + h * p);
    w.bytes = double(key_elems + value_elems) * sizeof(bf16);
    w.ceiling = bench::ceiling_TFLOP_per_s("bf16");
    bench::set_counters(st, times, w);
    // The floor: the cache's bytes at the H200's copy rate (byte_fraction is of the H100's 3.0 TB/s).
    st.counters["of_4300_GB_per_s"] = st.counters["GB_per_s"].value / 4300.0;
}

// Plain multi-head attention at headdim 128 (g = h: one key head per query head, what SDPA and
// FlashAttention decode without repeating anything).
mixer_config multi_head_config() {
    mixer_config c;
    c.d_model = 4096;
    c.expand = 2;
    c.headdim = 128;
    c.d_state = 128;
    c.ngroups = 64;
    c.validate();
    return c;
}

void add_attention_kernels(const mixer_config& c) {
    for (int graph : {0, 1})
        for (index_t cache : {4096, 32768})
            for (index_t batch : {1, 16, 64}) {
                const double bytes = double(batch * cache * (c.ngroups * c.d_state + c.nheads() * c.headdim)) * sizeof(bf16);
                const double est_ms = bytes / 3e9 + 0.01;
                bench::add(bench::bench_name("decode_attention", "transmamba", "bf16",
                                             {{"b", batch}, {"h", c.nheads()}, {"p", c.headdim}, {"n", c.d_state},
                                              {"g", c.ngroups}, {"cache", cache}, {"graph", graph}}),
                           bench::iterations_for(est_ms, 200.0, 20, 200),
                           [=](benchmark::State& st) { bm_decode_attention_kernel(st, c, batch, cache, graph == 1); });
            }
}

void add_kernels(index_t g) {
    const auto c = layer_config(g);
    for (int graph : {0, 1}) {
        for (bool isolated : {false, true})
            for (index_t batch : {1, 16, 64, 256})
                bench::add(bench::bench_name("decode_ssm", isolated ? "transmamba_call" : "transmamba", "bf16",
                                             {{"b", batch}, {"h", c.nheads()}, {"p", c.headdim}, {"n", c.d_state},
                                              {"g", g}, {"graph", graph}}),
                           batch >= 64 ? 100 : (isolated ? 400 : 100),
                           [=](benchmark::State& st) { bm_decode_ssm_kernel(st, batch, g, graph == 1, isolated); });
        // The kernel's three shapes (rows per thread), which the default picks between by batch.
        if (graph == 1 && g == 1)
            for (int rows : {1, 2, 4})
                for (index_t batch : {1, 16, 64, 256})
                    bench::add(bench::bench_name("decode_ssm", "transmamba_r" + std::to_string(rows), "bf16",
                                                 {{"b", batch}, {"h", c.nheads()}, {"p", c.headdim}, {"n", c.d_state},
                                                  {"g", g}, {"graph", graph}}),
                               100, [=](benchmark::State& st) { bm_decode_ssm_kernel(st, batch, g, true, false, rows); });
    }
}

// Each group of benchmarks of one (policies, g) runs in a row, so its layers are drawn once.
template <bool Graph>
void add_group(index_t g) {
    add<Graph>({g, 0});
    add<Graph>({g, 1024});
    add<Graph>({g, 8192});
}

}  // namespace

int main(int argc, char** argv) {
    for (index_t g : {1, 8}) add_kernels(g);
    for (index_t g : {1, 8}) add_attention_kernels(layer_config(g));
    add_attention_kernels(multi_head_config());
    for (index_t g : {1, 8}) {
        add_group<false>(g);
        add_group<true>(g);
    }
    return transmamba::bench::run_main(argc, argv);
}
