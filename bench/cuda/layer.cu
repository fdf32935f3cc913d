// The whole TransMamba mixer layer on the GPU: mixer<T, cuda>::forward (paper_policies: the
// in-projection, conv1d + SiLU, time steps, attention over t < P, the Memory Converter, the chunked
// SSD over t >= P, the gated RMSNorm and the out-projection), with random weights in a trained
// model's ranges (block/random_init.hpp). The shape of ../shared/docs/PERF.md's PyTorch-composed
// layer: d_model 2048, expand 2, headdim 64 (64 heads), d_state 128, d_conv 4, chunk 256.
//
//   layer/transmamba/bf16/b:<B>/L:<L>/h:64/p:64/n:128/g:{1,8}/P:<P>/graph:0
//       B x L in {8 x 4096, 2 x 16384, 1 x 65536}, P in {0, L/8, L/4, L/2, L}
//   layer/transmamba/fp32/b:8/L:4096/h:64/p:64/n:128/g:1/P:<P>/graph:0     the same five P
//
// Eager only (graph:0). The forward pass cannot be captured in a CUDA graph: its input check
// (mixer::check_inputs -> backend_traits<cuda>::first_non_finite) allocates an 8-byte device flag
// (cudaMalloc / cudaFree), copies it to the host and synchronises the stream on every call, which
// stream capture forbids. That check is part of every forward pass, so it is inside the timings
// here: a kernel over u (268 MB in bf16), one host round trip, and the host-side launch gaps it
// opens (tens of microseconds against a layer of milliseconds).
//
// Timing (bench/support/cuda_bench.cuh): CUDA events around each forward call on the legacy default
// stream (the stream the library's default context uses), 1-3 warm-up calls (the first also runs
// the one-time parameter check and creates the cuBLAS handle), a fixed iteration count per shape,
// the median. 65536 tokens per call: u (268 MB in bf16) and the activations (GBs) are far above the
// 50 MB L2; the weights (52 MB in bf16) are read from wherever they are.
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
#include <memory>
#include <string>

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

// One layer per (storage type, g), kept while consecutive benchmarks use it: random weights take
// about a second to draw on the host.
template <class T>
mixer<T, transmamba::cuda>& layer_for(index_t g) {
    static std::unique_ptr<mixer<T, transmamba::cuda>> cached;
    static index_t cached_g = 0;
    if (!cached || cached_g != g) {
        cached.reset();
        cached = std::make_unique<mixer<T, transmamba::cuda>>(layer_config(g));
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

template <class T>
void bm_layer(benchmark::State& st, shape s) {
    auto& layer = layer_for<T>(s.g);
    const auto& c = layer.config();
    const index_t rows = s.batch * s.L;
    device_buffer<T> u(static_cast<std::size_t>(rows * c.d_model)), out(static_cast<std::size_t>(rows * c.d_model));
    bench::fill_uniform(u, 7, -1.0f, 1.0f);
    const workspace_span span = workspace_for<T>().reserve(layer.workspace_bytes(s.batch, s.L));
    const tensor_view<const T, 3> uv(u.data(), {s.batch, s.L, c.d_model});
    const tensor_view<T, 3> ov(out.data(), {s.batch, s.L, c.d_model});
    const cuda_context ctx{};
    const double est = estimate_ms<T>(s);

    const auto times = bench::time_iterations(st, ctx.stream, bench::warmup_for(est),
                                              [&] { layer.forward(uv, ov, s.P, span, {}, ctx); });

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

template <class T>
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
                                         {"graph", 0}});
    bench::add(name, bench::iterations_for(estimate_ms<T>(s), 1000.0, 5, 30),
               [s](benchmark::State& st) { bm_layer<T>(st, s); });
}

}  // namespace

int main(int argc, char** argv) {
    const struct {
        index_t batch, L;
    } sizes[] = {{8, 4096}, {2, 16384}, {1, 65536}};
    for (index_t g : {1, 8})
        for (const auto& bl : sizes)
            for (index_t P : {index_t(0), bl.L / 8, bl.L / 4, bl.L / 2, bl.L}) add<bf16>({bl.batch, bl.L, g, P});
    for (index_t P : {index_t(0), index_t(512), index_t(1024), index_t(2048), index_t(4096)}) add<float>({8, 4096, 1, P});
    return transmamba::bench::run_main(argc, argv);
}
