#pragma once
// What the bench/cuda programs share: names, inputs, timing and counters, written once so that
// every GPU benchmark measures and reports the same way (../shared/docs/PERF.md, "Method").
//
// Names: <component>/<impl>/<dtype>/<key>:<value>/... with the keys in the order b, L, h, p, n, g,
// P, cache, graph (those that apply), e.g. attention/transmamba/bf16/b:4/L:16384/h:32/p:64/n:128/g:1.
// Google Benchmark appends "/iterations:<N>/manual_time" to the name in its output (fixed iteration
// count, manual time): a reader strips everything from "/iterations:" on.
//
// Timing: CUDA events recorded on the stream right before and right after each call, one call per
// iteration, after warm-up calls; the iteration's time is the events' elapsed time (manual time).
// Google Benchmark's own time column is the mean; the `median_ms` counter is the figure to read.
//
// Counters (all from the median):
//   median_ms      median over the iterations (authoritative)
//   tokens_per_s   tokens processed per second
//   TFLOP_per_s    the work as SPEC section 4 counts it (each program's header says how)
//   GB_per_s       the bytes each program's header names (the unavoidable traffic, no scratch)
//   flop_fraction  TFLOP_per_s / the measured ceiling of the arithmetic: bf16 / f16 676, tf32 352,
//                  fp32 52 TFLOP/s (cuBLAS GEMM 8192^3 on the H100, ../shared/docs/PERF.md)
//   byte_fraction  GB_per_s / 3000 (the H100's measured device-to-device copy rate)
//   ceiling_TFLOP_per_s  the ceiling flop_fraction divided by
//
// Registration touches no GPU, so `--benchmark_list_tests` runs on a machine without one.
#include <benchmark/benchmark.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <transmamba/backend/cuda/check.cuh>
#include <transmamba/backend/cuda/context.cuh>
#include <transmamba/backend/cuda/device_buffer.cuh>
#include <transmamba/backend/cuda/types.cuh>

namespace transmamba::bench {

using kernels::cuda::check_cuda;

// ---- names and ceilings -------------------------------------------------------------------------

template <class T>
constexpr const char* dtype_name() {
    if constexpr (std::is_same_v<T, float>) return "fp32";
    else if constexpr (std::is_same_v<T, __nv_bfloat16>) return "bf16";
    else return "f16";
}

inline constexpr double copy_GB_per_s = 3000.0;

// The measured ceiling of an arithmetic, by the dtype key of a benchmark name.
inline double ceiling_TFLOP_per_s(std::string_view arithmetic) {
    if (arithmetic == "bf16" || arithmetic == "f16") return 676.0;
    if (arithmetic == "tf32") return 352.0;
    return 52.0;  // fp32 without tensor cores
}

struct name_key {
    const char* key;
    long long value;
};

// <component>/<impl>/<dtype>/<k>:<v>/...; the caller lists the keys in the convention's order.
inline std::string bench_name(std::string_view component, std::string_view impl, std::string_view dtype,
                              std::initializer_list<name_key> keys) {
    std::string name;
    name.append(component).append("/").append(impl).append("/").append(dtype);
    for (const auto& k : keys) name.append("/").append(k.key).append(":").append(std::to_string(k.value));
    return name;
}

// ---- inputs -------------------------------------------------------------------------------------

__host__ __device__ inline std::uint64_t splitmix64(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Uniform [lo, hi) from a hash of (seed, index): hundreds of MB in microseconds, no host round trip.
template <class T>
__global__ void fill_uniform_kernel(T* data, std::size_t n, std::uint64_t seed, float lo, float hi) {
    for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
        const float u = static_cast<float>(splitmix64(seed * 0x100000001b3ull + i) >> 40) * (1.0f / 16777216.0f);
        data[i] = kernels::cuda::from_float<T>(lo + (hi - lo) * u);
    }
}

template <class T>
void fill_uniform(T* data, std::size_t n, std::uint64_t seed, float lo, float hi, cudaStream_t stream = nullptr) {
    if (n == 0) return;
    fill_uniform_kernel<<<kernels::cuda::blocks_for(n, 256), 256, 0, stream>>>(data, n, seed, lo, hi);
    kernels::cuda::check_launch("fill_uniform_kernel");
}
template <class T>
void fill_uniform(device_buffer<T>& buf, std::uint64_t seed, float lo, float hi, cudaStream_t stream = nullptr) {
    fill_uniform(buf.data(), buf.size(), seed, lo, hi, stream);
}

// ---- timing -------------------------------------------------------------------------------------

class event_pair {
public:
    event_pair() {
        check_cuda(cudaEventCreate(&start_), "cudaEventCreate");
        check_cuda(cudaEventCreate(&stop_), "cudaEventCreate");
    }
    event_pair(const event_pair&) = delete;
    event_pair& operator=(const event_pair&) = delete;
    ~event_pair() {
        cudaEventDestroy(start_);
        cudaEventDestroy(stop_);
    }
    // Milliseconds of GPU time from just before `call` is issued on `stream` to the end of its work.
    template <class F>
    double time(cudaStream_t stream, F&& call) {
        check_cuda(cudaEventRecord(start_, stream), "cudaEventRecord");
        call();
        check_cuda(cudaEventRecord(stop_, stream), "cudaEventRecord");
        check_cuda(cudaEventSynchronize(stop_), "cudaEventSynchronize");
        float ms = 0;
        check_cuda(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
        return ms;
    }

private:
    cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

inline double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const std::size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// `warmup` untimed calls, then one timed call per iteration (`prepare`, e.g. restoring an initial
// state, runs before each call outside the timed window). Returns the times in ms.
template <class Prepare, class Call>
std::vector<double> time_iterations(benchmark::State& st, cudaStream_t stream, int warmup, Prepare&& prepare, Call&& call) {
    for (int i = 0; i < warmup; ++i) {
        prepare();
        call();
    }
    check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize (warm-up)");
    event_pair ev;
    std::vector<double> times;
    times.reserve(static_cast<std::size_t>(st.max_iterations));
    for (auto _ : st) {
        prepare();
        const double ms = ev.time(stream, call);
        times.push_back(ms);
        st.SetIterationTime(ms * 1e-3);
    }
    return times;
}
template <class Call>
std::vector<double> time_iterations(benchmark::State& st, cudaStream_t stream, int warmup, Call&& call) {
    return time_iterations(st, stream, warmup, [] {}, std::forward<Call>(call));
}

// The work `body` issues on the context it is given, captured once in a CUDA graph on `stream`
// (relaxed mode: host-side driver queries such as cudaFuncSetAttribute stay allowed).
class captured_graph {
public:
    template <class Body>
    captured_graph(cudaStream_t stream, Body&& body) {
        check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
        try {
            body(cuda_context{stream});
        } catch (...) {
            cudaStreamEndCapture(stream, &graph_);
            if (graph_) cudaGraphDestroy(graph_);
            throw;
        }
        check_cuda(cudaStreamEndCapture(stream, &graph_), "cudaStreamEndCapture");
        check_cuda(cudaGraphInstantiate(&exec_, graph_, 0), "cudaGraphInstantiate");
    }
    captured_graph(const captured_graph&) = delete;
    captured_graph& operator=(const captured_graph&) = delete;
    ~captured_graph() {
        if (exec_) cudaGraphExecDestroy(exec_);
        if (graph_) cudaGraphDestroy(graph_);
    }
    void launch(cudaStream_t stream) const { check_cuda(cudaGraphLaunch(exec_, stream), "cudaGraphLaunch"); }

private:
    cudaGraph_t graph_ = nullptr;
    cudaGraphExec_t exec_ = nullptr;
};

// Median ms of `replays` launches of `body` captured once in a CUDA graph on a stream of its own
// (the first 3 replays are warm-up). `body` must issue its work on the context it is given.
template <class Body>
double graph_median_ms(int replays, Body&& body) {
    cuda_stream stream;
    const captured_graph graph(stream.get(), std::forward<Body>(body));
    event_pair ev;
    std::vector<double> times;
    for (int rep = 0; rep < replays + 3; ++rep) {
        const double ms = ev.time(stream.get(), [&] { graph.launch(stream.get()); });
        if (rep >= 3) times.push_back(ms);
    }
    return median(std::move(times));
}

// ---- counters -----------------------------------------------------------------------------------

struct work_counts {
    double tokens = 0;   // tokens processed by one call
    double flops = 0;    // as SPEC section 4 counts them
    double bytes = 0;    // the unavoidable traffic of one call
    double ceiling = 0;  // TFLOP/s the flop_fraction is taken of
};

inline void set_counters(benchmark::State& st, const std::vector<double>& times_ms, const work_counts& w) {
    const double ms = median(times_ms);
    const double s = ms * 1e-3;
    st.counters["median_ms"] = ms;
    if (s <= 0) return;
    const double tflops = w.flops / s * 1e-12, gbs = w.bytes / s * 1e-9;
    st.counters["tokens_per_s"] = w.tokens / s;
    st.counters["TFLOP_per_s"] = tflops;
    st.counters["GB_per_s"] = gbs;
    st.counters["flop_fraction"] = w.ceiling > 0 ? tflops / w.ceiling : 0.0;
    st.counters["byte_fraction"] = gbs / copy_GB_per_s;
    st.counters["ceiling_TFLOP_per_s"] = w.ceiling;
}

// ---- registration and main ----------------------------------------------------------------------

// Iterations for a call expected to take `est_ms`: about `budget_ms` of timed calls, at least
// `min_iters` (a median of fewer means little; 3 for calls of a second or more, whose spread is
// small), at most `max_iters`.
inline int iterations_for(double est_ms, double budget_ms = 1000.0, int min_iters = 5, int max_iters = 50) {
    if (est_ms >= 1000.0) min_iters = std::min(min_iters, 3);
    const double n = est_ms > 0 ? budget_ms / est_ms : max_iters;
    return static_cast<int>(std::clamp(n, double(min_iters), double(max_iters)));
}
// Warm-up calls: 3, or 1 for a call of a tenth of a second or more.
inline int warmup_for(double est_ms) { return est_ms >= 100.0 ? 1 : 3; }

// Runs a benchmark body; a library error (a bad shape, out of memory) skips this benchmark with
// the message instead of ending the program.
template <class Body>
void guarded(benchmark::State& st, Body&& body) {
    try {
        body(st);
    } catch (const std::exception& e) {
        st.SkipWithError(e.what());
    }
}

inline benchmark::internal::Benchmark* add(const std::string& name, int iterations,
                                           std::function<void(benchmark::State&)> body) {
    return benchmark::RegisterBenchmark(name.c_str(),
                                        [body = std::move(body)](benchmark::State& st) { guarded(st, body); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(iterations);
}

// Initialise, name the device in the JSON context (not when only listing: no GPU needed then),
// run what --benchmark_filter selects.
inline int run_main(int argc, char** argv) {
    bool listing = false;
    for (int i = 1; i < argc; ++i)
        if (std::strncmp(argv[i], "--benchmark_list_tests", 22) == 0 &&
            std::strcmp(argv[i], "--benchmark_list_tests=false") != 0)
            listing = true;
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    if (!listing) {
        cudaDeviceProp prop{};
        if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
            benchmark::AddCustomContext("device", prop.name);
            benchmark::AddCustomContext("l2_bytes", std::to_string(prop.l2CacheSize));
        }
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

}  // namespace transmamba::bench
