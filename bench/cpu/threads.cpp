// Decoding a tiny model alone and beside a competing load (issue 15, docs/PERF.md "Threads under
// contention"): the CLI init's default model (d_model 64, 2 layers, headdim 16, d_state 16, vocab
// 256, every P = 0), random weights, one inference_session stepping one token per iteration.
//
// Each record sets, in its name:
//   threads:N     set_max_threads(N)
//   min_work:W    set_parallel_min_work(W): 0 forks every parallel_for (the library before the
//                 threshold), 32768 is the default
//   load:K        0 alone; 1 beside another OpenMP program (this program re-run as
//                 --competing_load=omp: two threads entering a parallel region every ~10 us, the
//                 shape of any OpenMP program with short loops, with libgomp's default waiting);
//                 2 beside two busy single-threaded processes (--competing_load=spin)
// The wait policy is the process's (libgomp reads OMP_WAIT_POLICY at start): bench/cpu/threads.sh
// runs this program once per policy. The load processes get the default policy and 2 threads.
// Counter: tokens_per_s, from the wall clock of the steps.
#include <benchmark/benchmark.h>

#include "support/cpu_inputs.hpp"

#include <transmamba/decode/session.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

using namespace transmamba;

namespace {

// ---- the competing load ---------------------------------------------------------------------------

[[noreturn]] void omp_load() {
    std::vector<double> v(1 << 12, 1.0);
    for (;;) {
#pragma omp parallel for num_threads(2) schedule(static)
        for (int i = 0; i < int(v.size()); ++i) v[std::size_t(i)] = v[std::size_t(i)] * 0.999 + 1e-3;
        benchmark::DoNotOptimize(v.data());
    }
}

[[noreturn]] void spin_load() {
    volatile unsigned long x = 0;
    for (;;) x = x + 1;
}

// The load processes of one record, ended (SIGKILL, then reaped) when it goes out of scope.
class competing_load {
public:
    competing_load(const char* self, int kind) {
        if (kind == 0) return;
        std::vector<std::string> env;
        for (char** e = environ; *e; ++e)
            if (std::strncmp(*e, "OMP_", 4) != 0 && std::strncmp(*e, "GOMP_", 5) != 0) env.emplace_back(*e);
        env.emplace_back("OMP_NUM_THREADS=2");
        std::vector<char*> envp;
        for (auto& e : env) envp.push_back(e.data());
        envp.push_back(nullptr);
        const int processes = kind == 1 ? 1 : 2;
        std::string arg = kind == 1 ? "--competing_load=omp" : "--competing_load=spin";
        for (int i = 0; i < processes; ++i) {
            char* argv[] = {const_cast<char*>(self), arg.data(), nullptr};
            pid_t pid = 0;
            if (posix_spawn(&pid, self, nullptr, nullptr, argv, envp.data()) != 0) {
                std::fprintf(stderr, "could not start the competing load\n");
                std::exit(1);
            }
            pids_.push_back(pid);
        }
        usleep(200000);  // let the load reach its loop
    }
    ~competing_load() {
        for (pid_t pid : pids_) kill(pid, SIGKILL);
        for (pid_t pid : pids_) waitpid(pid, nullptr, 0);
    }
    competing_load(const competing_load&) = delete;
    competing_load& operator=(const competing_load&) = delete;

private:
    std::vector<pid_t> pids_;
};

const char* self_path = nullptr;

// ---- the record -----------------------------------------------------------------------------------

using tiny_model = language_model<float, cpu, mamba2_pattern>;

tiny_model make_tiny_model() {
    language_model_config cfg;
    auto& m = cfg.backbone.mixer;
    m.d_model = 64;
    m.expand = 2;
    m.headdim = 16;
    m.d_state = 16;
    m.ngroups = 1;
    m.chunk_size = 64;
    cfg.backbone.num_layers = 2;
    cfg.vocab_size = 256;
    tiny_model model(cfg);
    randomize(model, 1);
    return model;
}

void decode_tiny(benchmark::State& state, int threads, index_t min_work, int load) {
    static const tiny_model model = make_tiny_model();
    const int saved_threads = max_threads();
    const index_t saved_work = parallel_min_work();
    set_max_threads(threads);
    set_parallel_min_work(min_work);
    {
        const competing_load competitor(self_path, load);
        inference_session<tiny_model> session(model, all_ssm{}, index_t(1) << 40);  // a pure-SSM session: O(1) memory
        const std::vector<std::int64_t> prompt{1, 2, 3, 4, 5, 6, 7, 8};
        session.prefill(prompt);
        std::int64_t token = 9;
        double seconds = 0;
        for (auto _ : state) {
            const auto t0 = std::chrono::steady_clock::now();
            const auto logits = session.step(token);
            seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            benchmark::DoNotOptimize(logits.data());
            token = (token * 31 + 7) % 256;
        }
        state.counters["tokens_per_s"] = seconds > 0 ? double(state.iterations()) / seconds : 0.0;
    }
    set_max_threads(saved_threads);
    set_parallel_min_work(saved_work);
}

}  // namespace

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--competing_load=omp") == 0) omp_load();
        if (std::strcmp(argv[i], "--competing_load=spin") == 0) spin_load();
    }
    self_path = "/proc/self/exe";
    static char exe[4096];
    if (const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1); n > 0) {
        exe[n] = '\0';
        self_path = exe;
    }
    const index_t default_work = parallel_min_work();
    for (int load : {0, 1, 2})
        for (index_t work : {index_t(0), default_work})
            for (int threads : {1, 2}) {
                if (threads == 1 && work == 0) continue;  // one thread never forks either way
                const std::string name = "decode_tiny/transmamba/fp32/threads:" + std::to_string(threads) +
                                         "/min_work:" + std::to_string(work) + "/load:" + std::to_string(load);
                benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) { decode_tiny(s, threads, work, load); })
                    ->Unit(benchmark::kMicrosecond)
                    ->MinTime(0.5)
                    ->UseRealTime();
            }
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
