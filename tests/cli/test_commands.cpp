// The `transmamba` program's commands (tools/transmamba/commands.hpp) on the CPU: init writes a
// checkpoint that run and generate read back; run's logits are the library's; greedy generation
// follows the argmax of one forward pass over prompt + generated tokens.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "reference/reference.hpp"
#include "transmamba/commands.hpp"

using namespace transmamba;
namespace fs = std::filesystem;

namespace {

int run_cpu(const cli::run_args& a) { return cli::run<float, cpu>(a); }
cli::generation generate_cpu(const cli::generate_args& a) { return cli::generate_tokens<float, cpu>(a); }

fs::path scratch_dir(const char* name) {
    const fs::path dir = fs::temp_directory_path() / ("transmamba_cli_test_" + std::to_string(::getpid())) / name;
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
}

}  // namespace

TEST_CASE("cli: init, run and generate agree with the library") {
    const fs::path dir = scratch_dir("model");
    cli::init_args ia;
    ia.out = dir;
    ia.d_model = 32;
    ia.num_layers = 3;
    ia.vocab = 40;
    ia.ngroups = 2;
    ia.schedule = {0, 6, 100};
    ia.tie = false;
    REQUIRE(cli::init(ia) == 0);
    auto loaded = load_checkpoint<float, cpu, mamba2_pattern>(dir);
    CHECK(loaded.has_schedule);
    const index_t V = 40, L = 11, batch = 2;

    // run: logits as the library computes them with the checkpoint's schedule.
    std::vector<std::int64_t> ids(static_cast<std::size_t>(batch * L));
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = std::int64_t((i * 13 + 5) % V);
    safetensors_writer in;
    in.add("input_ids", {batch, L}, ids);
    in.write(dir / "in.safetensors");
    cli::run_args ra;
    ra.model = dir;
    ra.input = dir / "in.safetensors";
    ra.output = dir / "out.safetensors";
    ra.states = true;
    REQUIRE(cli::run<float, cpu>(ra) == 0);
    const safetensors_file out(ra.output);
    const auto got = out.read<float>("logits", std::vector<std::int64_t>{batch, L, V});
    std::vector<float> want(got.size());
    workspace<cpu> ws;
    loaded.model.forward({ids.data(), {batch, L}}, {want.data(), {batch, L, V}}, loaded.schedule, ws);
    CHECK(reference::max_relative_error(reference::to_double(got), reference::to_double(want)) < 1e-6);
    const auto& c = loaded.model.config().backbone.mixer;
    for (int layer = 0; layer < 3; ++layer) {
        const auto s = out.read<float>("final_state." + std::to_string(layer),
                                       std::vector<std::int64_t>{batch, c.nheads(), c.headdim, c.d_state});
        CHECK(reference::max_relative_error(reference::to_double(s), reference::to_double(s)) == 0.0);  // finite
    }

    // --transpoint overrides the checkpoint's schedule.
    ra.points.transpoint = L;
    ra.states = false;
    REQUIRE(cli::run<float, cpu>(ra) == 0);
    const auto all_attention = safetensors_file(ra.output).read<float>("logits");
    CHECK(reference::max_relative_error(reference::to_double(all_attention), reference::to_double(want)) > 1e-3);

    // generate (greedy): each new token is the argmax of one forward pass over what came before.
    cli::generate_args ga;
    ga.model = dir;
    ga.prompt = {3, 1, 4, 1, 5};
    ga.max_new_tokens = 8;
    ga.progress = false;
    const auto g = cli::generate_tokens<float, cpu>(ga);
    REQUIRE(g.tokens.size() == 8);
    std::vector<std::int64_t> seq = ga.prompt;
    seq.insert(seq.end(), g.tokens.begin(), g.tokens.end());
    const auto n = static_cast<index_t>(seq.size());
    std::vector<float> logits(static_cast<std::size_t>(n * V));
    // The session resolves TransPoints at max_tokens = prompt + new tokens = n: so does this pass.
    loaded.model.forward({seq.data(), {1, n}}, {logits.data(), {1, n, V}}, loaded.schedule, ws);
    for (std::size_t k = 0; k < g.tokens.size(); ++k) {
        const float* row = logits.data() + (ga.prompt.size() - 1 + k) * std::size_t(V);
        CHECK(std::max_element(row, row + V) - row == g.tokens[k]);
    }
}

TEST_CASE("cli: bad schedules and inputs are errors that name the problem") {
    const fs::path dir = scratch_dir("bad");
    cli::init_args ia;
    ia.out = dir;
    ia.d_model = 32;
    ia.num_layers = 2;
    ia.vocab = 20;
    REQUIRE(cli::init(ia) == 0);
    cli::run_args ra;
    ra.model = dir;
    ra.input = dir / "missing.safetensors";
    ra.output = dir / "out.safetensors";
    CHECK_THROWS_AS(run_cpu(ra), error);
    ra.points.schedule = {1, 2, 3};
    safetensors_writer in;
    in.add("input_ids", {1, 3}, std::vector<std::int64_t>{1, 2, 3});
    in.write(dir / "in.safetensors");
    ra.input = dir / "in.safetensors";
    CHECK_THROWS_WITH_AS(run_cpu(ra), doctest::Contains("per_layer TransPoint schedule needs 2 entries"), error);
    CHECK_FALSE(fs::exists(ra.output));  // nothing written
    cli::generate_args ga;
    ga.model = dir;
    ga.prompt = {1, 99};
    CHECK_THROWS_WITH_AS(generate_cpu(ga), doctest::Contains("token id 99"), error);
}
