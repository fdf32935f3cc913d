// Batched decoding on the CPU (decode/batch.hpp): tokens/s of one inference_batch stepping b
// sequences at once, against the same b sequences each decoded by its own inference_session, one
// step after the other (what a server without batched decoding does). Both decode the same model
// (a Mamba2-shaped stack of mixer layers, every layer an SSM layer: P = 0) from 32-token prompts.
//
// Names: `decode_batch/<impl>/fp32/b:<sequences>/L:<prompt>/h/p/n/g/P/d:<d_model>/layers:<n>`;
// counter tokens_per_s = b tokens per step over the wall clock.
#include <benchmark/benchmark.h>

#include <transmamba/transmamba.hpp>
#include <transmamba/decode/batch.hpp>
#include <transmamba/decode/session.hpp>
#include <transmamba/model/language_model.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace transmamba;

namespace {

using model_type = language_model<float, cpu, mamba2_pattern>;

struct shape {
    index_t d_model, layers, headdim, d_state, vocab;
};

std::unique_ptr<model_type> make_model(const shape& s) {
    language_model_config cfg;
    cfg.backbone.mixer.d_model = s.d_model;
    cfg.backbone.mixer.headdim = s.headdim;
    cfg.backbone.mixer.d_state = s.d_state;
    cfg.backbone.mixer.ngroups = 1;
    cfg.backbone.mixer.chunk_size = 64;
    cfg.backbone.num_layers = s.layers;
    cfg.vocab_size = s.vocab;
    auto m = std::make_unique<model_type>(cfg);
    randomize(*m, 1);
    return m;
}

constexpr index_t prompt_len = 32, max_tokens = index_t(1) << 30;

std::vector<std::int64_t> prompt(index_t seq, index_t vocab) {
    std::vector<std::int64_t> ids;
    for (index_t t = 0; t < prompt_len; ++t) ids.push_back((seq * 31 + t * 7) % vocab);
    return ids;
}

void report(benchmark::State& state, double seconds, index_t sequences) {
    if (seconds > 0)
        state.counters["tokens_per_s"] = double(sequences) * double(state.iterations()) / seconds;
    state.counters["threads"] = max_threads();
}

void batched(benchmark::State& state, shape s, index_t sequences) {
    const auto model = make_model(s);
    inference_batch<model_type> batch(*model, all_ssm{});
    std::vector<index_t> ids;
    std::vector<std::int64_t> tokens;
    for (index_t q = 0; q < sequences; ++q) {
        ids.push_back(batch.join(prompt(q, s.vocab), max_tokens));
        tokens.push_back(q % s.vocab);
    }
    double seconds = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        auto rows = batch.step(ids, tokens);
        benchmark::DoNotOptimize(rows.data());
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    report(state, seconds, sequences);
}

void sessions(benchmark::State& state, shape s, index_t sequences) {
    const auto model = make_model(s);
    std::vector<std::unique_ptr<inference_session<model_type>>> all;
    for (index_t q = 0; q < sequences; ++q) {
        all.push_back(std::make_unique<inference_session<model_type>>(*model, all_ssm{}, max_tokens));
        all.back()->prefill(prompt(q, s.vocab));
    }
    double seconds = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        for (index_t q = 0; q < sequences; ++q) benchmark::DoNotOptimize(all[std::size_t(q)]->step(q % s.vocab).data());
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    report(state, seconds, sequences);
}

std::string name(const char* impl, const shape& s, index_t b) {
    const index_t h = 2 * s.d_model / s.headdim;
    return std::string("decode_batch/") + impl + "/fp32/b:" + std::to_string(b) + "/L:" + std::to_string(prompt_len) +
           "/h:" + std::to_string(h) + "/p:" + std::to_string(s.headdim) + "/n:" + std::to_string(s.d_state) +
           "/g:1/P:0/d:" + std::to_string(s.d_model) + "/layers:" + std::to_string(s.layers);
}

void register_all() {
    // Small enough for the 2-core development machine; the device's d_model 2048 shape is one more
    // entry (bench/run_device.sh runs these programs there).
    for (const shape& s : {shape{256, 4, 64, 64, 4096}, shape{2048, 4, 64, 128, 32768}})
        for (index_t b : {1, 16, 64}) {
            benchmark::RegisterBenchmark(name("transmamba_batch", s, b).c_str(), batched, s, b)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
            benchmark::RegisterBenchmark(name("transmamba_sessions", s, b).c_str(), sessions, s, b)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
        }
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
