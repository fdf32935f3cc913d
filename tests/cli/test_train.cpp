// `transmamba train` on a tiny MQAR model through the program's own command (cli::train): a few
// hundred steps on the CPU, in seconds; the loss falls and the accuracy on the queried values rises
// far above chance (1 / 16 here). The checkpoint it writes loads with load_checkpoint (run's and
// generate's path).
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "transmamba/commands.hpp"
#include "transmamba/core/parallel.hpp"
#include "transmamba/train_command.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_cli_train {

using namespace transmamba;
namespace fs = std::filesystem;

TEST_CASE("cli train: a tiny MQAR model learns to recall") {
    const fs::path dir = fs::temp_directory_path() / ("transmamba_cli_train_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    cli::train_args a;
    a.out = dir / "run";
    a.metrics = dir / "metrics.jsonl";
    a.model.d_model = 32;
    a.model.num_layers = 2;
    a.model.headdim = 16;
    a.model.d_state = 16;
    a.model.chunk = 32;
    a.model.points.transpoint = 32;  // attention over the whole sequence: the recall a Transformer has
    a.task = "mqar";
    a.vocab = 32;  // 15 keys, 16 values: chance is 1/16
    a.seq_len = 32;
    a.pairs = 4;
    a.steps = 400;
    a.batch = 16;
    a.lr = 3e-2;
    a.log_every = 100;
    a.progress = false;
    // One thread: at this size a second one only adds barriers (docs/design.md, "Threads").
    const int threads = max_threads();
    set_max_threads(1);
    const int rc = cli::train(a);
    set_max_threads(threads);
    REQUIRE(rc == 0);

    std::ifstream in(a.metrics);
    std::vector<double> loss, accuracy;
    for (std::string line; std::getline(in, line);) {
        const auto j = nlohmann::json::parse(line);
        loss.push_back(j.at("loss").get<double>());
        accuracy.push_back(j.at("accuracy").get<double>());
    }
    REQUIRE(loss.size() == 400);
    const auto mean = [](const std::vector<double>& v, std::size_t from, std::size_t to) {
        double s = 0;
        for (std::size_t i = from; i < to; ++i) s += v[i];
        return s / double(to - from);
    };
    const double loss_start = mean(loss, 0, 10), loss_end = mean(loss, 380, 400);
    const double acc_start = mean(accuracy, 0, 10), acc_end = mean(accuracy, 380, 400);
    MESSAGE("loss ", loss_start, " -> ", loss_end, ", accuracy ", acc_start, " -> ", acc_end);
    CHECK(loss_end < 0.1 * loss_start);
    CHECK(acc_start < 0.2);
    CHECK(acc_end > 0.9);  // chance is 1/16 (seeds 1, 2, 3 all reach 1.000 by step 400)
    const auto loaded = load_checkpoint<float, cpu, mamba2_pattern>(a.out);
    CHECK(loaded.schedule.transpoints == std::vector<index_t>{32});
    fs::remove_all(dir);
}

}  // namespace test_cli_train
