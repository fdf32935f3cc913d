// CPU benchmarks of the components and the whole layer, with Eigen's own GEMM rate measured in the
// same run as the yardstick (PERF.md: the GEMM-shaped parts should reach 70% of it).
// Counters: tokens/s, FLOP/s counted on the work each kernel must do (SPEC.md section 4).
#include <benchmark/benchmark.h>

#include "support/cpu_inputs.hpp"

using namespace transmamba;
using bench::bench_config;
using bench::random_vector;
using bench::ssm_operands;

namespace {

void set_rates(benchmark::State& state, double flops, double tokens) {
    state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
}

// Eigen's float GEMM, n x n x n: the machine's reference rate.
void gemm(benchmark::State& state) {
    const index_t n = state.range(0);
    const auto a = random_vector<float>(std::size_t(n * n), 1), b = random_vector<float>(std::size_t(n * n), 2);
    std::vector<float> c(std::size_t(n * n));
    for (auto _ : state) {
        kernels::cpu::gemm_nt(n, n, n, a.data(), n, b.data(), n, c.data(), n);
        benchmark::DoNotOptimize(c.data());
    }
    set_rates(state, 2.0 * n * n * n, 0);
}
BENCHMARK(gemm)->Arg(512)->Arg(1024)->Arg(2048)->UseRealTime()->Unit(benchmark::kMillisecond);

// Scan over L tokens: args (L, d_state, ngroups); 48 heads x 64 (ggml's SSM_SCAN shape at n = 128).
template <class Scan>
void scan(benchmark::State& state) {
    const index_t L = state.range(0), n = state.range(1), g = state.range(2);
    const auto cfg = bench_config(1536, 64, n, g, 128);
    ssm_operands<float> ops(cfg, 1, L);
    std::vector<float> y(std::size_t(L * cfg.d_inner())), S(std::size_t(cfg.nheads() * cfg.headdim * n));
    workspace<cpu> ws;
    const auto span = ws.reserve(scan_kernel<Scan, cpu>::template scratch_bytes<float>(cfg, 1, L) + 1024);
    for (auto _ : state) {
        scan_kernel<Scan, cpu>::run({}, cfg, ops.inputs(), 0, L, tensor_view<float, 4>(y.data(), {1, L, cfg.nheads(), 64}),
                                    tensor_view<float, 4>(S.data(), {1, cfg.nheads(), 64, n}), span);
        benchmark::DoNotOptimize(y.data());
    }
    const double Q = std::is_same_v<Scan, chunked_ssd_scan> ? double(cfg.chunk_size) : 0.0;
    // SPEC section 4: chunked SSD ~ h L (2 Q (n + p) + 4 n p); the recurrence 4 n p per token-head.
    set_rates(state, double(cfg.nheads()) * L * (2 * Q * (n + 64) + 4.0 * n * 64), double(L));
}
BENCHMARK(scan<chunked_ssd_scan>)->Args({512, 128, 1})->Args({2048, 128, 1})->Args({2048, 64, 8})
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(scan<sequential_scan>)->Args({512, 128, 1})->Args({2048, 128, 1})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

// Causal attention over a prefix of P tokens: args (P, ngroups); 24 heads x 64, d_state 128.
void attention(benchmark::State& state) {
    const index_t P = state.range(0), g = state.range(1);
    const auto cfg = bench_config(768, 64, 128, g, 256);
    ssm_operands<float> ops(cfg, 1, P);
    std::vector<float> y(std::size_t(P * cfg.d_inner()));
    workspace<cpu> ws;
    const auto span = ws.reserve(attention_kernel<paper_attention, cpu>::scratch_bytes<float>(cfg, 1, P));
    for (auto _ : state) {
        attention_kernel<paper_attention, cpu>::run({}, cfg, ops.inputs(), P,
                                                    tensor_view<float, 4>(y.data(), {1, P, cfg.nheads(), 64}), span);
        benchmark::DoNotOptimize(y.data());
    }
    // Causal half, scores once per group, values per head (SPEC section 4).
    set_rates(state, double(P) * P * (double(g) * 128 + double(cfg.nheads()) * 64), double(P));
}
BENCHMARK(attention)->Args({512, 1})->Args({2048, 1})->Args({2048, 24})->UseRealTime()->Unit(benchmark::kMillisecond);

// The Memory Converter over a prefix of P tokens (24 heads x 64 x 128).
void converter(benchmark::State& state) {
    const index_t P = state.range(0);
    const auto cfg = bench_config(768, 64, 128, 1, 256);
    ssm_operands<float> ops(cfg, 1, P);
    std::vector<float> S(std::size_t(cfg.nheads() * 64 * 128));
    workspace<cpu> ws;
    const auto span = ws.reserve(converter_kernel<exact_converter, cpu>::scratch_bytes<float>(cfg, 1, P));
    for (auto _ : state) {
        std::fill(S.begin(), S.end(), 0.0f);
        converter_kernel<exact_converter, cpu>::run({}, cfg, ops.inputs(), P,
                                                    tensor_view<float, 4>(S.data(), {1, cfg.nheads(), 64, 128}), span);
        benchmark::DoNotOptimize(S.data());
    }
    set_rates(state, 2.0 * cfg.nheads() * P * 64 * 128, double(P));
}
BENCHMARK(converter)->Arg(512)->Arg(2048)->UseRealTime()->Unit(benchmark::kMillisecond);

// The whole layer (d_model 768, headdim 64, d_state 128) at TransPoint P = L * num / 8.
void layer(benchmark::State& state) {
    const index_t L = state.range(0), eighths = state.range(1), P = L * eighths / 8;
    const auto cfg = bench_config(768, 64, 128, 1, 256);
    mixer<float, cpu> m(cfg);
    randomize(m.params(), 1);
    const auto u = random_vector<float>(std::size_t(L * cfg.d_model), 5);
    std::vector<float> out(u.size());
    workspace<cpu> ws;
    for (auto _ : state) {
        m.forward({u.data(), {1, L, cfg.d_model}}, {out.data(), {1, L, cfg.d_model}}, P, ws);
        benchmark::DoNotOptimize(out.data());
    }
    const double proj = 2.0 * L * cfg.d_model * (cfg.d_in_proj() + cfg.d_inner());
    const double attn = double(P) * P * (128.0 + cfg.nheads() * 64.0);
    const double ssm = double(cfg.nheads()) * (L - P) * (2.0 * 256 * (128 + 64) + 4.0 * 128 * 64);
    state.counters["P"] = double(P);
    set_rates(state, proj + attn + ssm, double(L));
}
BENCHMARK(layer)->ArgsProduct({{2048}, {0, 1, 2, 4, 8}})->UseRealTime()->Unit(benchmark::kMillisecond);

// One decoding step of the layer below and above its TransPoint.
void decode_step(benchmark::State& state) {
    const index_t context = state.range(0), attention_mode = state.range(1);
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
    for (auto _ : state) {
        state.PauseTiming();
        st.position = start;  // attend over the same cache length each time
        state.ResumeTiming();
        m.step({u.data(), {cfg.d_model}}, {one.data(), {cfg.d_model}}, span, st);
    }
    state.counters["context"] = double(context);
}
BENCHMARK(decode_step)->Args({1024, 0})->Args({1024, 1})->Args({4096, 1})->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
