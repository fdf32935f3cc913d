// Load time against the number of tensors (io/safetensors.hpp, io/checkpoint.hpp): the header
// parse from memory, a memory-mapped file opened and validated, and a whole checkpoint directory
// of tiny layers loaded, so that the scaling in the number of tensors is what is measured. Names
// follow `<component>/<impl>/fp32/<key>:<value>`; counters give tensors/s.
//   build/default/bench/bench_cpu_io --benchmark_format=json
#include <benchmark/benchmark.h>

#include <transmamba/io.hpp>

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

using namespace transmamba;
namespace fs = std::filesystem;

namespace {

// A header of `n` one-element F32 tensors named as a checkpoint names them, and its data.
std::vector<std::byte> header_image(std::size_t n) {
    std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
    for (std::size_t i = 0; i < n; ++i)
        header += ",\"backbone.layers." + std::to_string(i / 8) + ".mixer.w" + std::to_string(i % 8) +
                  "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" + std::to_string(4 * i) + "," +
                  std::to_string(4 * i + 4) + "]}";
    header += "}";
    std::vector<std::byte> out(8 + header.size() + 4 * n);
    store_le<std::uint64_t>(out.data(), header.size());
    std::memcpy(out.data() + 8, header.data(), header.size());
    return out;
}

fs::path scratch(const std::string& name) {
    const fs::path p = fs::temp_directory_path() / ("transmamba_bench_io_" + std::to_string(::getpid())) / name;
    fs::create_directories(p.parent_path());
    return p;
}

void per_tensor_counters(benchmark::State& state, std::size_t tensors) {
    state.counters["tensors"] = static_cast<double>(tensors);
    state.counters["tensors_per_s"] =
        benchmark::Counter(static_cast<double>(tensors), benchmark::Counter::kIsIterationInvariantRate);
}

void header_parse(benchmark::State& state, std::size_t n) {
    const auto bytes = header_image(n);
    for (auto _ : state) {
        const safetensors_view v(bytes, "bench");
        benchmark::DoNotOptimize(v.tensors().data());
    }
    per_tensor_counters(state, n);
    state.counters["header_bytes"] = static_cast<double>(bytes.size() - 4 * n - 8);
}

void file_open(benchmark::State& state, std::size_t n) {
    const fs::path file = scratch("tensors_" + std::to_string(n) + ".safetensors");
    {
        const auto bytes = header_image(n);
        write_file_atomically(file, [&](file_sink& sink) { sink.write(bytes.data(), bytes.size()); });
    }
    for (auto _ : state) {
        const safetensors_file f(file);
        benchmark::DoNotOptimize(f.tensors().data());
    }
    per_tensor_counters(state, n);
    fs::remove(file);
}

// A checkpoint of `layers` tiny layers (hidden 16): 8 tensors a layer, as `init --layers` writes.
void checkpoint_load(benchmark::State& state, index_t layers) {
    const fs::path dir = scratch("ckpt_" + std::to_string(layers));
    language_model_config c;
    c.backbone.mixer.d_model = 16;
    c.backbone.mixer.expand = 2;
    c.backbone.mixer.headdim = 8;
    c.backbone.mixer.d_state = 8;
    c.backbone.mixer.ngroups = 1;
    c.backbone.mixer.d_conv = 4;
    c.backbone.mixer.chunk_size = 8;
    c.backbone.num_layers = layers;
    c.vocab_size = 32;
    {
        language_model<float, cpu> m(c);
        randomize(m, 1);
        save_checkpoint(m, transpoint_schedule::fixed(0), dir);
    }
    const std::size_t tensors = safetensors_file(dir / "model.safetensors").tensors().size();
    for (auto _ : state) {
        const auto loaded = load_checkpoint<float, cpu>(dir);
        benchmark::DoNotOptimize(&loaded.model);
    }
    per_tensor_counters(state, tensors);
    state.counters["layers"] = static_cast<double>(layers);
    fs::remove_all(dir);
}

void register_all() {
    for (std::size_t n : {1000, 10000, 100000}) {
        benchmark::RegisterBenchmark(("safetensors_header/sax/fp32/tensors:" + std::to_string(n)).c_str(),
                                     [n](benchmark::State& s) { header_parse(s, n); })
            ->Unit(benchmark::kMillisecond);
        benchmark::RegisterBenchmark(("safetensors_file/mmap/fp32/tensors:" + std::to_string(n)).c_str(),
                                     [n](benchmark::State& s) { file_open(s, n); })
            ->Unit(benchmark::kMillisecond);
    }
    for (index_t layers : {100, 1000, 8000})
        benchmark::RegisterBenchmark(("checkpoint/load_checkpoint/fp32/layers:" + std::to_string(layers)).c_str(),
                                     [layers](benchmark::State& s) { checkpoint_load(s, layers); })
            ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
    register_all();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    fs::remove_all(fs::temp_directory_path() / ("transmamba_bench_io_" + std::to_string(::getpid())));
    return 0;
}
