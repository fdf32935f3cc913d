// generate --prompts (tools/transmamba/batch_generate.hpp): a file of prompts decoded as one batch
// gives each prompt the tokens that generate gives it alone (sequence i with seed + i), greedy and
// sampled; a bad line of the file is an error naming the line.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "support/error_of.hpp"
#include "transmamba/batch_generate.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_cli_batch_generate {

using namespace transmamba;
namespace fs = std::filesystem;

namespace {

fs::path scratch_dir(const char* name) {
    const fs::path dir = fs::temp_directory_path() / ("transmamba_batch_cli_test_" + std::to_string(::getpid())) / name;
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
}

}  // namespace

TEST_CASE("cli: generate --prompts decodes a file of prompts as one batch, each as generate does alone") {
    const fs::path dir = scratch_dir("model");
    cli::init_args ia;
    ia.out = dir;
    ia.d_model = 32;
    ia.num_layers = 3;
    ia.vocab = 40;
    ia.points.schedule = {0, 6, 100};
    REQUIRE(cli::init(ia) == 0);
    const std::vector<std::vector<std::int64_t>> prompts{{3, 1, 4, 1, 5}, {7}, {2, 7, 1, 8, 2, 8, 1, 8, 2}};
    {
        std::ofstream f(dir / "prompts.txt");
        f << "3,1,4,1,5\n\n7\r\n2,7,1,8,2,8,1,8,2\n";
    }
    for (double temperature : {0.0, 0.8}) {
        cli::generate_args ga;
        ga.model = dir;
        ga.max_new_tokens = 9;
        ga.progress = false;
        ga.sampling.temperature = temperature;
        ga.sampling.top_k = 10;
        ga.sampling.seed = 5;
        const auto batch = cli::generate_batch_tokens<float, cpu>(cli::batch_args_of(ga, dir / "prompts.txt"));
        REQUIRE(batch.tokens.size() == prompts.size());
        CHECK(batch.prompt_tokens == 15);
        for (std::size_t i = 0; i < prompts.size(); ++i) {
            ga.prompt = prompts[i];
            ga.sampling.seed = 5 + i;
            CAPTURE(i);
            CHECK(batch.tokens[i] == cli::generate_tokens<float, cpu>(ga).tokens);
        }
    }
    {
        std::ofstream f(dir / "bad.txt");
        f << "1,2\n3,,4\n";
    }
    cli::generate_args ga;
    ga.model = dir;
    const auto msg = testing::error_of([&] { (void)cli::generate_batch_tokens<float, cpu>(cli::batch_args_of(ga, dir / "bad.txt")); });
    CHECK(testing::has(msg, "line 2"));
    CHECK(testing::has(msg, "item 2 is empty"));
    CHECK(testing::has(testing::error_of([&] {
                           (void)cli::generate_batch_tokens<float, cpu>(cli::batch_args_of(ga, dir / "missing.txt"));
                       }),
                       "not a regular file"));
}

}  // namespace test_cli_batch_generate
