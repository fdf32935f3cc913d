// The MQAR experiment of docs/experiments.md: does TransMamba recall like a Transformer and unlike
// Mamba2, at less cost than the Transformer?
//
// One model (a stack of TransMamba mixers, the same weights' shapes and the same initialisation for
// a seed), trained on multi-query associative recall at several sequence lengths L and numbers of
// key-value pairs, under four TransPoint schedules: P = 0 in every layer (Mamba2), P = L (a
// Transformer: attention with Q = C, K = B, V = x), the paper's V9 scaled to L, and a fixed P = L/4.
// Only the schedule differs, so the parameter count is the same by construction. Every run is a
// function of its seed (weights and training data); the test set of a cell is one stream, the same
// for every model and seed. One JSON line per run goes to --out.
//
//   mqar_experiment --out mqar.jsonl                  # the default grid (docs/experiments.md)
//   mqar_experiment --out t.jsonl --lengths 32 --pairs 4 --seeds 1 --steps 50 --jobs 2
#include <transmamba/train/trainer.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

using namespace transmamba;

namespace {

struct grid {
    std::vector<index_t> lengths{64, 128, 256};
    std::vector<index_t> pairs{4, 8};
    std::vector<std::string> models{"mamba2", "transformer", "transmamba-v9", "transmamba-quarter"};
    std::vector<std::uint64_t> seeds{1, 2, 3};
};

struct recipe {
    index_t d_model = 32, layers = 4, headdim = 16, d_state = 16, chunk = 64, vocab = 64;
    index_t steps = 800, batch = 16, warmup = -1;  // warmup -1: a tenth of the steps
    double lr = 3e-2;
    index_t test_batches = 8;
    std::uint64_t test_seed = 1000003;
};

// The paper's V9 (policy/transpoint.hpp: {0, 128, ..., 8192} for training length 8192), each entry
// scaled by L / 8192: the same fractions of the sequence, {0, 1/64, ..., 1/2, 1}. A model of 8k layers
// takes it cyclically, as the paper does. A smaller model cannot hold the table: cycled, its layers
// would take only the first entries (4 layers: P <= L/16, almost Mamba2), so layer i of n takes entry
// floor(8 i / n) instead, the table spread over the depth (4 layers: 0, L/32, L/8, L/2).
transpoint_schedule scaled_v9(index_t L, index_t layers) {
    const auto& table = paper_schedule("V9").table;
    const auto scaled = [&](std::size_t j) { return table[j] * L / 8192; };
    std::vector<index_t> points;
    if (layers % index_t(table.size()) == 0) {
        for (std::size_t j = 0; j < table.size(); ++j) points.push_back(scaled(j));
        return transpoint_schedule::cyclic(std::move(points));
    }
    for (index_t i = 0; i < layers; ++i) points.push_back(scaled(std::size_t(i * index_t(table.size()) / layers)));
    return transpoint_schedule::per_layer(std::move(points));
}

transpoint_schedule schedule_of(const std::string& model, index_t L, index_t layers) {
    if (model == "mamba2") return transpoint_schedule::fixed(0);
    if (model == "transformer") return transpoint_schedule::fixed(L);
    if (model == "transmamba-v9") return scaled_v9(L, layers);
    if (model == "transmamba-quarter") return transpoint_schedule::fixed(L / 4);
    fail("--models: '", model, "' is not a model: mamba2, transformer, transmamba-v9 or transmamba-quarter");
}

struct run_spec {
    std::string model;
    index_t length = 0, pairs = 0;
    std::uint64_t seed = 0;
};

training_config config_of(const run_spec& r, const recipe& k) {
    training_config c;
    c.model.vocab_size = k.vocab;
    c.model.tie_word_embeddings = true;
    auto& m = c.model.backbone.mixer;
    m.d_model = k.d_model;
    m.expand = 2;
    m.headdim = k.headdim;
    m.d_state = k.d_state;
    m.ngroups = 1;
    m.chunk_size = k.chunk;
    c.model.backbone.num_layers = k.layers;
    c.schedule = schedule_of(r.model, r.length, k.layers);
    c.task = mqar_task{k.vocab, r.length, r.pairs, r.pairs};
    c.steps = k.steps;
    c.batch = k.batch;
    c.seed = r.seed;
    c.lr = cosine_schedule{k.lr, k.lr / 10, k.warmup >= 0 ? k.warmup : k.steps / 10, k.steps};
    c.validate();
    return c;
}

nlohmann::json run_one(const run_spec& r, const recipe& k, int threads) {
    using clock = std::chrono::steady_clock;
    require(max_threads() == threads, "this run's thread was to use ", threads, " OpenMP threads but has ", max_threads(),
            ": the OpenMP runtime does not keep the count per thread, and the jobs would oversubscribe the cores");
    const training_config c = config_of(r, k);
    trainer<float> run(training_state<float>::fresh(c));
    // The last tenth of the steps, averaged: one batch's loss is noisy.
    const index_t tail = std::max<index_t>(1, k.steps / 10);
    double tail_loss = 0, tail_correct = 0, tail_scored = 0;
    const auto start = clock::now();
    while (!run.done()) {
        const step_report s = run.step();
        if (s.step > k.steps - tail) {
            tail_loss += s.loss;
            tail_correct += s.accuracy * double(s.scored);
            tail_scored += double(s.scored);
        }
    }
    const double train_seconds = std::chrono::duration<double>(clock::now() - start).count();

    // Held-out sequences: a stream no training run draws from (main checks the seed), the same
    // for every model and seed of the cell.
    language_model_training<float, cpu, mamba2_pattern> eval(loss_options{ignore_id});
    double test_loss = 0;
    index_t test_correct = 0, test_scored = 0;
    const auto eval_start = clock::now();
    for (index_t b = 0; b < k.test_batches; ++b) {
        const token_batch batch = make_batch(c.task, k.test_seed, std::uint64_t(b), k.batch);
        const loss_stats s = eval.forward_loss(run.state().model, batch.id_view(), batch.target_view(), c.schedule);
        test_loss += s.loss * double(s.counted);
        test_correct += s.correct;
        test_scored += s.counted;
    }
    const double eval_seconds = std::chrono::duration<double>(clock::now() - eval_start).count();

    std::vector<index_t> per_layer;
    for (index_t i = 0; i < k.layers; ++i) per_layer.push_back(resolve_transpoint(c.schedule, i, r.length));
    const auto& task = std::get<mqar_task>(c.task);
    return {{"model", r.model},
            {"seq_len", r.length},
            {"pairs", r.pairs},
            {"queries", task.queries},
            {"seed", r.seed},
            {"transpoints", per_layer},
            {"test_accuracy", double(test_correct) / double(test_scored)},
            {"test_loss", test_loss / double(test_scored)},
            {"test_queries", test_scored},
            {"chance", 1.0 / double(task.value_count())},
            {"train_loss", tail_loss / double(tail)},
            {"train_accuracy", tail_correct / tail_scored},
            {"steps", run.state().step},
            {"batch", k.batch},
            {"tokens", run.state().step * k.batch * r.length},
            {"train_seconds", train_seconds},
            {"eval_seconds", eval_seconds},
            {"parameters", c.model.parameter_count()},
            {"d_model", k.d_model},
            {"layers", k.layers},
            {"headdim", k.headdim},
            {"d_state", k.d_state},
            {"chunk", k.chunk},
            {"vocab", k.vocab},
            {"lr", k.lr},
            {"threads", threads}};
}

// Relative cost of a run, to start the longest first. Measured (docs/experiments.md): the SSM's
// backward (the sequential form of docs/training.md) costs more than the attention's at these
// lengths, so a run's time grows about as L whatever its schedule, Mamba2's the longest.
double cost_estimate(const run_spec& r) { return double(r.length) * (r.model == "transformer" ? 0.8 : 1.0); }

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"MQAR: Mamba2, a Transformer and TransMamba (V9, P = L/4) at equal parameter count (docs/experiments.md)"};
    grid g;
    recipe k;
    std::string out;
    int jobs = int(std::max(1u, std::thread::hardware_concurrency()));
    int threads_per_job = 1;
    bool quiet = false;
    app.add_option("--out", out, "the JSON lines file, one line per run")->required();
    app.add_option("--lengths", g.lengths, "sequence lengths L")->delimiter(',')->capture_default_str();
    app.add_option("--pairs", g.pairs, "key-value pairs per sequence (as many queries)")->delimiter(',')->capture_default_str();
    app.add_option("--models", g.models, "mamba2, transformer, transmamba-v9, transmamba-quarter")->delimiter(',')->capture_default_str();
    app.add_option("--seeds", g.seeds, "one run per seed (weights and training data)")->delimiter(',')->capture_default_str();
    app.add_option("--steps", k.steps, "updates per run")->capture_default_str();
    app.add_option("--batch", k.batch, "sequences per update")->capture_default_str();
    app.add_option("--lr", k.lr, "peak learning rate (cosine to a tenth)")->capture_default_str();
    app.add_option("--warmup", k.warmup, "warm-up updates (default: a tenth of --steps)");
    app.add_option("--d-model", k.d_model, "model width")->capture_default_str();
    app.add_option("--layers", k.layers, "mixer layers (a multiple of 8 takes V9 cyclically, as the paper; else spread over the depth)")->capture_default_str();
    app.add_option("--headdim", k.headdim, "head dimension")->capture_default_str();
    app.add_option("--d-state", k.d_state, "state size (the attention's query/key size)")->capture_default_str();
    app.add_option("--chunk", k.chunk, "SSD chunk length")->capture_default_str();
    app.add_option("--vocab", k.vocab, "MQAR vocabulary: filler, (vocab-1)/2 keys, the rest values")->capture_default_str();
    app.add_option("--test-batches", k.test_batches, "held-out batches (of --batch sequences) per run")->capture_default_str();
    app.add_option("--test-seed", k.test_seed, "seed of the held-out stream (must not be a training seed)")->capture_default_str();
    app.add_option("--jobs", jobs, "runs at once, each on its own thread (default: the cores)")->check(CLI::Range(1, 4096));
    app.add_option("--threads-per-job", threads_per_job, "CPU threads inside one run")->capture_default_str()->check(CLI::Range(1, 4096));
    app.add_flag("--quiet", quiet, "no line per finished run on stderr");
    CLI11_PARSE(app, argc, argv);

    try {
        require(k.test_batches >= 1, "--test-batches must be at least 1, got ", k.test_batches);
        require(std::find(g.seeds.begin(), g.seeds.end(), k.test_seed) == g.seeds.end(), "--test-seed ", k.test_seed,
                " is also a training seed: the held-out stream would be a training stream");
        std::vector<run_spec> runs;
        for (const index_t L : g.lengths)
            for (const index_t p : g.pairs)
                for (const auto& m : g.models)
                    for (const auto s : g.seeds) runs.push_back({m, L, p, s});
        require(!runs.empty(), "the grid is empty");
        for (const auto& r : runs) (void)config_of(r, k);  // every cell valid before anything runs
        std::stable_sort(runs.begin(), runs.end(),
                         [](const run_spec& a, const run_spec& b) { return cost_estimate(a) > cost_estimate(b); });

        std::ofstream file(out, std::ios::trunc);
        require(file.good(), "--out '", out, "': cannot open the file for writing");
        std::mutex lock;
        std::atomic<std::size_t> next{0};
        std::atomic<int> failed{0};
        std::size_t done = 0;
        const auto start = std::chrono::steady_clock::now();
        const auto worker = [&] {
            // The thread count is OpenMP's per-thread setting (its nthreads ICV), read by parallel_for and
            // by Eigen's GEMMs on this thread: jobs x threads_per_job threads in all, no more.
            set_max_threads(threads_per_job);
            for (std::size_t i; (i = next.fetch_add(1)) < runs.size();) {
                const run_spec& r = runs[i];
                nlohmann::json line;
                try {
                    line = run_one(r, k, threads_per_job);
                } catch (const std::exception& e) {
                    line = {{"model", r.model}, {"seq_len", r.length}, {"pairs", r.pairs}, {"seed", r.seed}, {"error", e.what()}};
                    ++failed;
                }
                const std::lock_guard<std::mutex> hold(lock);
                file << line.dump() << '\n' << std::flush;
                ++done;
                if (!quiet) {
                    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                    if (line.contains("error"))
                        std::fprintf(stderr, "[%zu/%zu %.0fs] %s L %lld pairs %lld seed %llu FAILED: %s\n", done, runs.size(), t,
                                     r.model.c_str(), (long long)r.length, (long long)r.pairs, (unsigned long long)r.seed,
                                     line["error"].get<std::string>().c_str());
                    else
                        std::fprintf(stderr, "[%zu/%zu %.0fs] %-18s L %4lld pairs %3lld seed %llu: test accuracy %.3f, loss %.3f, %.1f s\n",
                                     done, runs.size(), t, r.model.c_str(), (long long)r.length, (long long)r.pairs,
                                     (unsigned long long)r.seed, line["test_accuracy"].get<double>(),
                                     line["test_loss"].get<double>(), line["train_seconds"].get<double>());
                }
            }
        };
        std::vector<std::thread> pool;
        const int workers = std::min<int>(jobs, int(runs.size()));
        for (int w = 0; w < workers; ++w) pool.emplace_back(worker);
        for (auto& t : pool) t.join();
        file.close();
        require(file.good(), "--out '", out, "': writing the results failed");
        if (failed) {
            std::fprintf(stderr, "mqar_experiment: %d of %zu runs failed (their lines in %s say why)\n", failed.load(), runs.size(),
                         out.c_str());
            return 1;
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "mqar_experiment: %s\n", e.what());
        return 2;
    }
}
