// The whole TransMamba mixer layer on the GPU: mixer<T, cuda>::forward (paper_policies: the
// in-projection, conv1d + SiLU, time steps, attention over t < P, the Memory Converter, the chunked
// SSD over t >= P, the gated RMSNorm and the out-projection), with random weights in a trained
// model's ranges (block/random_init.hpp). The shape of ../shared/docs/PERF.md's PyTorch-composed
// layer: d_model 2048, expand 2, headdim 64 (64 heads), d_state 128, d_conv 4, chunk 256.
//
//   layer/transmamba/bf16/b:<B>/L:<L>/h:64/p:64/n:128/g:{1,8}/P:<P>/graph:{0,1}
//       B x L in {8 x 4096, 2 x 16384, 1 x 65536}, P in {0, L/8, L/4, L/2, L}
//   layer/transmamba/fp32/b:8/L:4096/h:64/p:64/n:128/g:1/P:<P>/graph:{0,1}     the same five P
//
// graph:0  the default layer (paper_policies, checked_inputs), eager: every forward pass checks u
//          for non-finite values (backend_traits<cuda>::first_non_finite: an 8-byte cudaMalloc /
//          cudaFree, a kernel over u, a device-to-host copy and a stream synchronisation), so it
//          cannot be captured; the check and the launch gaps it opens are inside these timings.
// graph:1  the same layer with paper_policies::with_input_check<trusted_inputs> (no per-call check;
//          the weights are still checked once, before the capture), its forward pass captured once
//          in a CUDA graph on a stream of its own and replayed.
//
// Timing (bench/support/cuda_bench.cuh): CUDA events around each forward call (graph:0, on the
// legacy default stream: the library's default context) or graph launch (graph:1), 1-3 warm-up
// calls (the first also runs the one-time parameter check and creates the cuBLAS handle), a fixed
// iteration count per shape, the median. 65536 tokens per call: u (268 MB in bf16) and the
// activations (GBs) are far above the 50 MB L2; the weights (52 MB in bf16) are read from wherever
// they are.
// Counters:
//   TFLOP_per_s   SPEC section 4 for L tokens, batch b, TransPoint P:
//                   projections  2*b*L*d_model*d_in_proj + 2*b*L*d_inner*d_model
//                   attention    b*P^2*(g*n + h*p)
//                   converter    2*b*h*P*n*p          (when P > 0; the mixer runs it even at P = L)
//                   scan         b*h*(L-P)*(2*chunk*(n+p) + 4*n*p)
//                 (conv, time steps and the norm are O(b*L*d_inner): not counted)
//   GB_per_s      the traffic a fully fused layer could not avoid: u read, out written, the
//                 in/out-projection weights read once (storage type); the unfused pass moves more
//   flop_fraction of 676 (bf16) or 52 (fp32) TFLOP/s
//   attention_flop_share  the attention's part of the counted flops
#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <transmamba/backend/cuda.cuh>
#include <transmamba/block/mixer.hpp>

#include "../support/cuda_bench.cuh"

namespace {

using namespace transmamba;
using bf16 = __nv_bfloat16;

constexpr index_t d_model = 2048, expand = 2, headdim = 64, d_state = 128, chunk = 256;

mixer_config layer_config(index_t g) {
    mixer_config c;
    c.d_model = d_model;
    c.expand = expand;
    c.headdim = headdim;
    c.d_state = d_state;
    c.ngroups = g;
    c.chunk_size = chunk;
    c.validate();
    return c;
}

struct shape {
    index_t batch, L, g, P;
};

struct flop_split {
    double projections, attention, converter, scan;
    double total() const { return projections + attention + converter + scan; }
};

flop_split count_flops(const shape& s) {
    const auto c = layer_config(s.g);
    const double b = double(s.batch), L = double(s.L), P = double(s.P), rows = b * L;
    const double h = double(c.nheads()), p = double(c.headdim), n = double(c.d_state), g = double(c.ngroups);
    flop_split f;
    f.projections = 2.0 * rows * double(c.d_model) * double(c.d_in_proj()) + 2.0 * rows * double(c.d_inner()) * double(c.d_model);
    f.attention = b * P * P * (g * n + h * p);
    f.converter = s.P > 0 ? 2.0 * b * h * P * n * p : 0.0;
    f.scan = b * h * (L - P) * (2.0 * double(c.chunk_size) * (n + p) + 4.0 * n * p);
    return f;
}

// Expected ms of one call, for the iteration count, from PERF.md's rates: bf16 GEMMs ~500, attention
// ~150 executed (scores once per 512-column slice), scan ~125 TFLOP/s; fp32 GEMMs ~45, SIMT
// attention ~6 executed (scores once per 64 columns), 3xTF32 scan ~27 TFLOP/s; ~1 ms of the rest.
template <class T>
double estimate_ms(const shape& s) {
    const auto f = count_flops(s);
    constexpr bool fp32 = std::is_same_v<T, float>;
    const auto c = layer_config(s.g);
    const double cols = double(c.heads_per_group() * c.headdim), width = fp32 ? 64.0 : 512.0;
    const double slices = std::max(1.0, cols / width);
    const double pairs = double(s.batch) * double(s.P) * double(s.P) / 2.0;
    const double attention_exec =
        2.0 * pairs * (slices * double(c.ngroups * c.d_state) + double(c.nheads() * c.headdim));
    const double sec = f.projections / (fp32 ? 45e12 : 500e12) + attention_exec / (fp32 ? 6e12 : 150e12) +
                       (f.scan + f.converter) / (fp32 ? 27e12 : 125e12);
    return sec * 1e3 + 1.0;
}

// The capturable layer: no per-call input check.
using trusted_policies = paper_policies::with_input_check<trusted_inputs>;

// One layer per (storage type, policies, g), kept while consecutive benchmarks use it: random
// weights take about a second to draw on the host. The same seed gives both policies the same
// weights.
template <class T, class Policies>
mixer<T, transmamba::cuda, Policies>& layer_for(index_t g) {
    static std::unique_ptr<mixer<T, transmamba::cuda, Policies>> cached;
    static index_t cached_g = 0;
    if (!cached || cached_g != g) {
        cached.reset();
        cached = std::make_unique<mixer<T, transmamba::cuda, Policies>>(layer_config(g));
        randomize(cached->params(), 2026 + static_cast<std::uint64_t>(g));
        cached_g = g;
    }
    return *cached;
}

template <class T>
workspace<transmamba::cuda>& workspace_for() {
    static workspace<transmamba::cuda> ws;
    return ws;
}

template <class T, bool Graph>
void bm_layer(benchmark::State& st, shape s) {
    using policies = std::conditional_t<Graph, trusted_policies, paper_policies>;
    auto& layer = layer_for<T, policies>(s.g);
    const auto& c = layer.config();
    const index_t rows = s.batch * s.L;
    device_buffer<T> u(static_cast<std::size_t>(rows * c.d_model)), out(static_cast<std::size_t>(rows * c.d_model));
    bench::fill_uniform(u, 7, -1.0f, 1.0f);
    const workspace_span span = workspace_for<T>().reserve(layer.workspace_bytes(s.batch, s.L));
    const tensor_view<const T, 3> uv(u.data(), {s.batch, s.L, c.d_model});
    const tensor_view<T, 3> ov(out.data(), {s.batch, s.L, c.d_model});
    const double est = estimate_ms<T>(s);
    const auto forward = [&](const cuda_context& ctx) { layer.forward(uv, ov, s.P, span, {}, ctx); };

    std::vector<double> times;
    if constexpr (Graph) {
        cuda_stream stream;
        forward(stream.context());  // the one-time weight check and cuBLAS handle, outside the capture
        stream.synchronize();
        const bench::captured_graph graph(stream.get(), forward);
        times = bench::time_iterations(st, stream.get(), bench::warmup_for(est), [&] { graph.launch(stream.get()); });
    } else {
        const cuda_context ctx{};
        times = bench::time_iterations(st, ctx.stream, bench::warmup_for(est), [&] { forward(ctx); });
    }

    const auto f = count_flops(s);
    bench::work_counts w;
    w.tokens = double(rows);
    w.flops = f.total();
    w.bytes = (2.0 * double(rows * c.d_model) + double(c.d_in_proj() * c.d_model) + double(c.d_model * c.d_inner())) *
              sizeof(T);
    w.ceiling = bench::ceiling_TFLOP_per_s(bench::dtype_name<T>());
    bench::set_counters(st, times, w);
    st.counters["attention_flop_share"] = f.attention / f.total();
}

template <class T, bool Graph>
void add(const shape& s) {
    const auto c = layer_config(s.g);
    const auto name = bench::bench_name("layer", "transmamba", bench::dtype_name<T>(),
                                        {{"b", s.batch},
                                         {"L", s.L},
                                         {"h", c.nheads()},
                                         {"p", c.headdim},
                                         {"n", c.d_state},
                                         {"g", s.g},
                                         {"P", s.P},
                                         {"graph", Graph ? 1 : 0}});
    bench::add(name, bench::iterations_for(estimate_ms<T>(s), 1000.0, 5, 30),
               [s](benchmark::State& st) { bm_layer<T, Graph>(st, s); });
}

// Eager then graph per shape; each group of benchmarks of one (dtype, policies, g) runs in a row,
// so its layer is drawn once.
template <class T, bool Graph>
void add_group(index_t g, std::initializer_list<std::pair<index_t, index_t>> sizes) {
    for (const auto& [batch, L] : sizes)
        for (index_t P : {index_t(0), L / 8, L / 4, L / 2, L}) add<T, Graph>({batch, L, g, P});
}

}  // namespace

int main(int argc, char** argv) {
    for (index_t g : {1, 8}) {
        add_group<bf16, false>(g, {{8, 4096}, {2, 16384}, {1, 65536}});
        add_group<bf16, true>(g, {{8, 4096}, {2, 16384}, {1, 65536}});
    }
    add_group<float, false>(1, {{8, 4096}});
    add_group<float, true>(1, {{8, 4096}});
    return transmamba::bench::run_main(argc, argv);
}
