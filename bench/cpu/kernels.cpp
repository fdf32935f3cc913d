// CPU benchmarks of the components and the whole layer, with the machine's yardsticks measured in the
// same run: Eigen's own float GEMM rate and a STREAM-style copy bandwidth.
//
// Names follow the shared convention `<component>/<impl>/<dtype>/<key>:<value>/...`, keys in the order
// b, L, h, p, n, g, P, cache, so that a record lines up with the peer's record of the same shape
// (bench/peers/ggml_cpu.sh writes ggml's as `<component>/ggml/fp32/...`).
// Counters, from the benchmark's own wall clock (OpenMP threads included):
//   GFLOP_per_s         the work SPEC.md section 4 counts; for the scans 4 n p per token and head, the
//                       recurrence's count (ggml's too), whichever way the kernel evaluates it
//   GB_per_s            bytes the kernel must move (copy: read + write, as STREAM counts)
//   frac_of_eigen_gemm  GFLOP_per_s over the best Eigen GEMM rate of this run (when the GEMMs ran)
//   tokens_per_s
#include <benchmark/benchmark.h>

#include "support/cpu_inputs.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace transmamba;
using bench::bench_config;
using bench::random_vector;
using bench::ssm_operands;

namespace {

double eigen_gemm_gflops = 0;  // best Eigen GEMM rate so far in this run

// `<component>/<impl>/fp32/<key>:<value>/...`
std::string record_name(const char* component, const char* impl,
                        std::initializer_list<std::pair<const char*, index_t>> keys) {
    std::string s = std::string(component) + "/" + impl + "/fp32";
    for (const auto& [k, v] : keys) s += "/" + std::string(k) + ":" + std::to_string(v);
    return s;
}

// Runs body() once per iteration and measures the wall clock around it.
template <class Body>
double timed(benchmark::State& state, Body&& body) {
    double seconds = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        body();
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    return seconds;
}

struct work {
    double flops = 0, bytes = 0, tokens = 0;
};

void report(benchmark::State& state, double seconds, const work& w) {
    const double iters = static_cast<double>(state.iterations());
    if (seconds <= 0 || iters <= 0) return;
    if (w.flops > 0) {
        const double gflops = w.flops * iters / seconds * 1e-9;
        state.counters["GFLOP_per_s"] = gflops;
        if (eigen_gemm_gflops > 0) state.counters["frac_of_eigen_gemm"] = gflops / eigen_gemm_gflops;
    }
    if (w.bytes > 0) state.counters["GB_per_s"] = w.bytes * iters / seconds * 1e-9;
    if (w.tokens > 0) state.counters["tokens_per_s"] = w.tokens * iters / seconds;
    state.counters["threads"] = max_threads();
}

// ---- yardsticks ---------------------------------------------------------------------------------

// Eigen's float GEMM, n x n x n (Eigen's own threads).
void gemm(benchmark::State& state, index_t n) {
    const auto a = random_vector<float>(std::size_t(n * n), 1), b = random_vector<float>(std::size_t(n * n), 2);
    std::vector<float> c(std::size_t(n * n));
    const double s = timed(state, [&] {
        kernels::cpu::gemm_nt(n, n, n, a.data(), n, b.data(), n, c.data(), n);
        benchmark::DoNotOptimize(c.data());
    });
    const double flops = 2.0 * n * n * n;
    if (s > 0) eigen_gemm_gflops = std::max(eigen_gemm_gflops, flops * double(state.iterations()) / s * 1e-9);
    report(state, s, {flops, 0, 0});
}

// STREAM "copy" over `bytes` per array, split over the library's threads: 2 * bytes move per copy.
void copy(benchmark::State& state, std::size_t bytes) {
    const std::size_t count = bytes / sizeof(float);
    std::vector<float> from(count, 1.0f), to(count, 0.0f);
    const index_t parts = 4 * max_threads();
    const double s = timed(state, [&] {
        parallel_for(parts, index_t(count) / parts, [&](index_t part, int) {
            const std::size_t lo = count * std::size_t(part) / std::size_t(parts);
            const std::size_t hi = count * std::size_t(part + 1) / std::size_t(parts);
            std::memcpy(to.data() + lo, from.data() + lo, (hi - lo) * sizeof(float));
        });
        benchmark::DoNotOptimize(to.data());
        benchmark::ClobberMemory();
    });
    report(state, s, {0, 2.0 * double(bytes), 0});
}

// ---- components ---------------------------------------------------------------------------------

// A scan over L tokens, h heads of p channels, n states, g groups, from a non-zero state.
template <class Scan>
void scan(benchmark::State& state, index_t L, index_t h, index_t p, index_t n, index_t g) {
    const auto cfg = bench_config(h * p / 2, p, n, g, 128);
    ssm_operands<float> ops(cfg, 1, L);
    std::vector<float> y(std::size_t(L * h * p));
    auto S = random_vector<float>(std::size_t(h * p * n), 7);
    workspace<cpu> ws;
    const auto span = ws.reserve(scan_kernel<Scan, cpu>::template scratch_bytes<float>(cfg, 1, L));
    const double s = timed(state, [&] {
        scan_kernel<Scan, cpu>::run({}, cfg, ops.inputs(), 0, L, tensor_view<float, 4>(y.data(), {1, L, h, p}),
                                    tensor_view<float, 4>(S.data(), {1, h, p, n}), span);
        benchmark::DoNotOptimize(y.data());
    });
    // the recurrence's count (SPEC section 3): per token and head, S = a S + dt x B^T and y = S C
    report(state, s, {4.0 * n * p * h * L, 0, double(L)});
}

// One decoding token through the SSM (decode_scan_kernel, what mixer::step runs past the
// TransPoint): the state is read and written once, so GB_per_s counts 2 * state bytes.
void decode_ssm(benchmark::State& state, index_t h, index_t p, index_t n, index_t g) {
    const auto cfg = bench_config(h * p / 2, p, n, g, 128);
    ssm_operands<float> ops(cfg, 1, 1);
    std::vector<float> y(std::size_t(h * p));
    auto S = random_vector<float>(std::size_t(h * p * n), 7);
    const double s = timed(state, [&] {
        decode_scan_kernel<cpu>::run({}, cfg, ops.inputs(), tensor_view<float, 4>(y.data(), {1, 1, h, p}),
                                     tensor_view<float, 4>(S.data(), {1, h, p, n}));
        benchmark::DoNotOptimize(S.data());
    });
    report(state, s, {4.0 * n * p * h, 2.0 * double(S.size() * sizeof(float)), 1});
}

// The causal depthwise conv + bias + SiLU over L tokens of xBC (h p + 2 g n channels, width 4).
void conv(benchmark::State& state, index_t L, index_t h, index_t p, index_t n, index_t g) {
    const auto cfg = bench_config(h * p / 2, p, n, g, 128);
    const auto zxbcdt = random_vector<float>(std::size_t(L * cfg.d_in_proj()), 1);
    const auto w = random_vector<float>(std::size_t(cfg.conv_dim() * cfg.d_conv), 2);
    const auto bias = random_vector<float>(std::size_t(cfg.conv_dim()), 3);
    std::vector<float> xbc(std::size_t(L * cfg.conv_dim()));
    const double s = timed(state, [&] {
        projection_kernel<mamba2_projection, cpu>::conv_silu({}, cfg, 1, L, zxbcdt.data(), w.data(), bias.data(),
                                                            xbc.data());
        benchmark::DoNotOptimize(xbc.data());
    });
    const double channels = double(cfg.conv_dim());
    report(state, s, {2.0 * L * channels * double(cfg.d_conv), 2.0 * L * channels * sizeof(float), double(L)});
}

// Causal attention over a prefix of P tokens (24 heads x 64, d_state 128).
void attention(benchmark::State& state, index_t P, index_t g) {
    const auto cfg = bench_config(768, 64, 128, g, 256);
    ssm_operands<float> ops(cfg, 1, P);
    std::vector<float> y(std::size_t(P * cfg.d_inner()));
    workspace<cpu> ws;
    const auto span = ws.reserve(attention_kernel<paper_attention, cpu>::scratch_bytes<float>(cfg, 1, P));
    const double s = timed(state, [&] {
        attention_kernel<paper_attention, cpu>::run({}, cfg, ops.inputs(), P,
                                                    tensor_view<float, 4>(y.data(), {1, P, cfg.nheads(), 64}), span);
        benchmark::DoNotOptimize(y.data());
    });
    // Causal half, scores once per group, values per head (SPEC section 4).
    report(state, s, {double(P) * P * (double(g) * 128 + double(cfg.nheads()) * 64), 0, double(P)});
}

// The Memory Converter over a prefix of P tokens (24 heads x 64 x 128).
void converter(benchmark::State& state, index_t P) {
    const auto cfg = bench_config(768, 64, 128, 1, 256);
    ssm_operands<float> ops(cfg, 1, P);
    std::vector<float> S(std::size_t(cfg.nheads() * 64 * 128));
    workspace<cpu> ws;
    const auto span = ws.reserve(converter_kernel<exact_converter, cpu>::scratch_bytes<float>(cfg, 1, P));
    const double s = timed(state, [&] {
        std::fill(S.begin(), S.end(), 0.0f);
        converter_kernel<exact_converter, cpu>::run({}, cfg, ops.inputs(), P,
                                                    tensor_view<float, 4>(S.data(), {1, cfg.nheads(), 64, 128}), span);
        benchmark::DoNotOptimize(S.data());
    });
    report(state, s, {2.0 * cfg.nheads() * P * 64 * 128, 0, double(P)});
}

// The whole layer (d_model 768, headdim 64, d_state 128) at TransPoint P.
void layer(benchmark::State& state, index_t L, index_t P) {
    const auto cfg = bench_config(768, 64, 128, 1, 256);
    mixer<float, cpu> m(cfg);
    randomize(m.params(), 1);
    const auto u = random_vector<float>(std::size_t(L * cfg.d_model), 5);
    std::vector<float> out(u.size());
    workspace<cpu> ws;
    const double s = timed(state, [&] {
        m.forward({u.data(), {1, L, cfg.d_model}}, {out.data(), {1, L, cfg.d_model}}, P, ws);
        benchmark::DoNotOptimize(out.data());
    });
    const double proj = 2.0 * L * cfg.d_model * (cfg.d_in_proj() + cfg.d_inner());
    const double attn = double(P) * P * (128.0 + cfg.nheads() * 64.0);
    const double ssm = 4.0 * cfg.nheads() * (L - P) * 128 * 64;  // the recurrence's count, as for the scans
    report(state, s, {proj + attn + ssm, 0, double(L)});
}

// One decoding step of the layer after `context` tokens, past its TransPoint (P = 0) or below it
// (the cache holds `context` tokens).
void decode_step(benchmark::State& state, index_t context, bool attention_mode) {
    const auto cfg = bench_config(768, 64, 128, 1, 256);
    mixer<float, cpu> m(cfg);
    randomize(m.params(), 1);
    const index_t P = attention_mode ? context + 1000 : 0, max_tokens = context + 1000;
    const auto u = random_vector<float>(std::size_t(context * cfg.d_model), 5);
    std::vector<float> out(u.size()), one(std::size_t(cfg.d_model));
    mixer<float, cpu>::decode_state st;
    workspace<cpu> ws;
    const auto span = ws.reserve(m.decode_workspace_bytes(context, max_tokens));
    m.prefill({u.data(), {1, context, cfg.d_model}}, {out.data(), {1, context, cfg.d_model}}, P, max_tokens, span, st);
    const index_t start = st.position;
    double seconds = 0;
    for (auto _ : state) {
        st.position = start;  // attend over the same cache length each time
        const auto t0 = std::chrono::steady_clock::now();
        m.step({u.data(), {cfg.d_model}}, {one.data(), {cfg.d_model}}, span, st);
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    // weights read once per step (in_proj, out_proj) plus the state or the cache
    const double weights = double(cfg.d_in_proj() + cfg.d_inner()) * cfg.d_model * sizeof(float);
    const double per_token = attention_mode ? double(context) * (128 + cfg.d_inner() + cfg.nheads()) * sizeof(float)
                                            : 2.0 * cfg.nheads() * 64 * 128 * sizeof(float);
    report(state, seconds, {0, weights + per_token, 1});
}

template <class F, class... Args>
void add(const std::string& name, benchmark::TimeUnit unit, F f, Args... args) {
    benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) { f(s, args...); })->Unit(unit);
}

void register_all() {
    using benchmark::kMicrosecond;
    using benchmark::kMillisecond;
    for (index_t n : {512, 1024, 2048}) add(record_name("gemm", "eigen", {{"m", n}, {"n", n}, {"k", n}}), kMillisecond, gemm, n);
    for (std::size_t mib : {1, 256})
        add(record_name("copy", "stream", {{"bytes", index_t(mib << 20)}}), kMillisecond, copy, mib << 20);

    // ggml's SSM_SCAN shapes: 48 x 64 x 128 (granite-4.0-h-1b) and 128 x 80 x 128 (Nemotron-9B), 512 tokens
    struct scan_shape {
        index_t L, h, p, n, g;
    };
    for (const scan_shape& s : {scan_shape{512, 48, 64, 128, 1}, scan_shape{2048, 48, 64, 128, 1},
                                scan_shape{2048, 48, 64, 64, 8}, scan_shape{512, 128, 80, 128, 1}}) {
        const std::initializer_list<std::pair<const char*, index_t>> keys{
            {"b", 1}, {"L", s.L}, {"h", s.h}, {"p", s.p}, {"n", s.n}, {"g", s.g}};
        add(record_name("scan", "transmamba_chunked", keys), kMillisecond, scan<chunked_ssd_scan>, s.L, s.h, s.p, s.n, s.g);
        add(record_name("scan", "transmamba_recurrence", keys), kMillisecond, scan<sequential_scan>, s.L, s.h, s.p, s.n,
            s.g);
    }
    for (const scan_shape& s : {scan_shape{1, 48, 64, 128, 1}, scan_shape{1, 24, 64, 128, 1}, scan_shape{1, 128, 80, 128, 1}})
        add(record_name("decode_ssm", "transmamba", {{"b", 1}, {"h", s.h}, {"p", s.p}, {"n", s.n}, {"g", s.g}}),
            kMicrosecond, decode_ssm, s.h, s.p, s.n, s.g);
    // ggml's SSM_CONV prefill shape: 3328 channels = 48 x 64 + 2 x 128, 512 tokens, width 4
    add(record_name("conv", "transmamba", {{"b", 1}, {"L", 512}, {"h", 48}, {"p", 64}, {"n", 128}, {"g", 1}}),
        kMillisecond, conv, 512, 48, 64, 128, 1);

    for (const auto& [P, g] : {std::pair<index_t, index_t>{512, 1}, {2048, 1}, {2048, 24}})
        add(record_name("attention", "transmamba", {{"b", 1}, {"L", P}, {"h", 24}, {"p", 64}, {"n", 128}, {"g", g}, {"P", P}}),
            kMillisecond, attention, P, g);
    for (index_t P : {512, 2048})
        add(record_name("converter", "transmamba", {{"b", 1}, {"h", 24}, {"p", 64}, {"n", 128}, {"g", 1}, {"P", P}}),
            kMillisecond, converter, P);
    for (index_t eighths : {0, 1, 2, 4, 8})
        add(record_name("layer", "transmamba",
                        {{"b", 1}, {"L", 2048}, {"h", 24}, {"p", 64}, {"n", 128}, {"g", 1}, {"P", 2048 * eighths / 8}}),
            kMillisecond, layer, 2048, 2048 * eighths / 8);
    add(record_name("decode_step", "transmamba", {{"b", 1}, {"L", 1024}, {"h", 24}, {"p", 64}, {"n", 128}, {"g", 1}, {"P", 0}}),
        kMicrosecond, decode_step, 1024, false);
    for (index_t context : {1024, 4096})
        add(record_name("decode_step", "transmamba",
                        {{"b", 1}, {"L", context}, {"h", 24}, {"p", 64}, {"n", 128}, {"g", 1}, {"P", context + 1000},
                         {"cache", context}}),
            kMicrosecond, decode_step, context, true);
}

}  // namespace

int main(int argc, char** argv) {
    register_all();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::AddCustomContext("omp_threads", std::to_string(max_threads()));
    benchmark::AddCustomContext("hardware_threads", std::to_string(std::thread::hardware_concurrency()));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
