// The `transmamba` program's commands (tools/transmamba/commands.hpp) on the CPU: init writes a
// checkpoint that run and generate read back; run's logits are the library's (--last: the last
// rows of them); greedy generation follows the argmax of one forward pass over prompt + generated
// tokens; --schedule means one TransPoint per layer in every command; init refuses what the loader
// refuses, and a checkpoint it would replace, before writing anything.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "support/error_of.hpp"
#include "reference/reference.hpp"
#include "transmamba/commands.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_cli_commands {

using namespace transmamba;
namespace fs = std::filesystem;

namespace {

using testing::error_of;
using testing::has;

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
    ia.points.schedule = {0, 6, 100};
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
    CHECK_THROWS_WITH_AS(run_cpu(ra), doctest::Contains("--schedule gives 3 TransPoints, but the model has 2 layers"), error);
    CHECK_FALSE(fs::exists(ra.output));  // nothing written
    cli::generate_args ga;
    ga.model = dir;
    ga.prompt = {1, 99};
    CHECK_THROWS_WITH_AS(generate_cpu(ga), doctest::Contains("token id 99"), error);
}

namespace {

fs::path tiny_model(const char* name, index_t layers = 2, index_t vocab = 24) {
    const fs::path dir = scratch_dir(name);
    cli::init_args ia;
    ia.out = dir / "model";
    ia.d_model = 32;
    ia.num_layers = layers;
    ia.vocab = vocab;
    ia.points.schedule = {0, 5};
    REQUIRE(cli::init(ia) == 0);
    return dir;
}

fs::path write_ids(const fs::path& dir, index_t batch, index_t L, index_t vocab) {
    std::vector<std::int64_t> ids(static_cast<std::size_t>(batch * L));
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = std::int64_t((i * 7 + 3) % std::size_t(vocab));
    safetensors_writer in;
    in.add("input_ids", {batch, L}, ids);
    in.write(dir / "in.safetensors");
    return dir / "in.safetensors";
}

}  // namespace

TEST_CASE("cli: run --last writes each sequence's last row of the full logits, (batch, vocab)") {
    const fs::path dir = tiny_model("last");
    const index_t batch = 3, L = 9, V = 24;
    cli::run_args ra;
    ra.model = dir / "model";
    ra.input = write_ids(dir, batch, L, V);
    ra.output = dir / "full.safetensors";
    ra.states = true;
    REQUIRE(run_cpu(ra) == 0);
    ra.output = dir / "last.safetensors";
    ra.last = true;
    REQUIRE(run_cpu(ra) == 0);
    const safetensors_file full(dir / "full.safetensors"), last(dir / "last.safetensors");
    const auto all = full.read<float>("logits", std::vector<std::int64_t>{batch, L, V});
    const auto rows = last.read<float>("logits", std::vector<std::int64_t>{batch, V});
    for (index_t b = 0; b < batch; ++b) {
        std::vector<float> want(all.begin() + (b * L + L - 1) * V, all.begin() + (b * L + L) * V), got(rows.begin() + b * V,
                                                                                                       rows.begin() + (b + 1) * V);
        CHECK(reference::max_relative_error(reference::to_double(got), reference::to_double(want)) < 1e-5);
    }
    for (int layer = 0; layer < 2; ++layer) {  // the same states either way
        const auto name = "final_state." + std::to_string(layer);
        CHECK(full.read<float>(name) == last.read<float>(name));
    }
}

TEST_CASE("cli: --schedule is one TransPoint per layer in every command; --cyclic-schedule repeats a table") {
    const fs::path dir = scratch_dir("schedules");
    cli::init_args ia;
    ia.d_model = 32;
    ia.num_layers = 4;
    ia.vocab = 20;
    ia.out = dir / "per_layer";
    ia.points.schedule = {0, 3, 6, 9};
    REQUIRE(cli::init(ia) == 0);
    auto loaded = load_checkpoint<float, cpu, mamba2_pattern>(ia.out);
    CHECK(loaded.schedule == transpoint_schedule::per_layer({0, 3, 6, 9}));

    ia.out = dir / "cyclic";
    ia.points.schedule.clear();
    ia.points.cyclic = {0, 7};
    REQUIRE(cli::init(ia) == 0);
    CHECK(load_checkpoint<float, cpu, mamba2_pattern>(ia.out).schedule == transpoint_schedule::cyclic({0, 7}));

    ia.out = dir / "fixed";
    ia.points.cyclic.clear();
    REQUIRE(cli::init(ia) == 0);
    CHECK(load_checkpoint<float, cpu, mamba2_pattern>(ia.out).schedule == transpoint_schedule::fixed(0));

    // Two entries for four layers is a cyclic table, not a schedule: init says so and writes nothing.
    ia.out = dir / "short";
    ia.points.schedule = {0, 5};
    CHECK_THROWS_WITH_AS(cli::init(ia), doctest::Contains("--schedule gives 2 TransPoints, but the model has 4 layers"), error);
    CHECK_FALSE(fs::exists(ia.out));

    // run and generate read the three flags the same way.
    cli::transpoint_choice c;
    c.cyclic = {0, 7};
    CHECK(c.resolve(transpoint_schedule{}, 4) == transpoint_schedule::cyclic({0, 7}));
    c.cyclic.clear();
    c.schedule = {1, 2, 3, 4};
    CHECK(c.resolve(transpoint_schedule{}, 4) == transpoint_schedule::per_layer({1, 2, 3, 4}));
    CHECK_THROWS_WITH_AS(c.resolve(transpoint_schedule{}, 3), doctest::Contains("--schedule gives 4 TransPoints"), error);
}

TEST_CASE("cli: init refuses what the loader refuses, and an existing checkpoint without --force, before writing") {
    const fs::path dir = scratch_dir("limits");
    cli::init_args ia;
    ia.out = dir / "model";
    ia.num_layers = 70000;
    CHECK_THROWS_WITH_AS(cli::init(ia),
                         doctest::Contains("field 'num_hidden_layers' = 70000 is out of range [1, 65536] (set by --layers)"),
                         error);
    ia.num_layers = 2;
    ia.vocab = 3000000000;
    const auto vocab_error = error_of([&] { cli::init(ia); });
    CHECK(has(vocab_error, "field 'vocab_size' = 3000000000 is out of range"));
    CHECK(has(vocab_error, "(set by --vocab)"));
    ia.vocab = 256;
    ia.d_model = 33;  // expand * d_model not a multiple of headdim
    CHECK_THROWS_WITH_AS(cli::init(ia), doctest::Contains("--d-model"), error);
    CHECK_FALSE(fs::exists(ia.out));

    // Past any machine's memory: refused by the estimate, before the weights are allocated.
    ia.d_model = index_t(1) << 24;
    ia.vocab = index_t(1) << 31;
    const auto memory_error = error_of([&] { cli::init(ia); });
    CHECK(has(memory_error, "init needs"));
    CHECK(has(memory_error, "set by --vocab and --d-model"));
    CHECK_FALSE(fs::exists(ia.out));

    ia.d_model = 32;
    ia.vocab = 20;
    REQUIRE(cli::init(ia) == 0);
    const auto before = fs::last_write_time(ia.out / "model.safetensors");
    ia.seed = 2;
    const auto exists_error = error_of([&] { cli::init(ia); });
    CHECK(has(exists_error, "already holds a checkpoint"));
    CHECK(has(exists_error, "--force"));
    CHECK(fs::last_write_time(ia.out / "model.safetensors") == before);
    ia.force = true;
    CHECK(cli::init(ia) == 0);
}

TEST_CASE("cli: run refuses to write over its input or the model before computing") {
    const fs::path dir = tiny_model("overwrite");
    cli::run_args ra;
    ra.model = dir / "model";
    ra.input = write_ids(dir, 1, 4, 24);
    const auto input_bytes = fs::file_size(ra.input);
    ra.output = ra.input;
    CHECK_THROWS_WITH_AS(run_cpu(ra), doctest::Contains("is the --input file"), error);
    CHECK(fs::file_size(ra.input) == input_bytes);
    ra.output = dir / "model" / "model.safetensors";
    const auto model_bytes = fs::file_size(ra.output);
    CHECK_THROWS_WITH_AS(run_cpu(ra), doctest::Contains("is a file of the --model checkpoint"), error);
    CHECK(fs::file_size(ra.output) == model_bytes);
    CHECK_NOTHROW(load_checkpoint<float, cpu, mamba2_pattern>(ra.model));
}

TEST_CASE("cli: generate refuses a token count whose sum with the prompt overflows, naming the range") {
    const fs::path dir = tiny_model("overflow");
    cli::generate_args ga;
    ga.model = dir / "model";
    ga.prompt = {1, 2, 3};
    ga.progress = false;
    ga.max_new_tokens = std::numeric_limits<index_t>::max();
    CHECK_THROWS_WITH_AS(generate_cpu(ga),
                         doctest::Contains("--max-new-tokens '9223372036854775807': out of range; expected a decimal integer in "
                                           "[0, 9223372036854775804]"),
                         error);
    // In range but past any machine: the KV cache below TransPoint 2^62 is refused by the estimate.
    ga.max_new_tokens = index_t(1) << 62;
    ga.points.transpoint = index_t(1) << 62;
    const auto kv_error = error_of([&] { generate_cpu(ga); });
    CHECK(has(kv_error, "generate needs"));
    CHECK(has(kv_error, "the KV cache for"));
    CHECK(has(kv_error, "set by --max-new-tokens"));
}

}  // namespace test_cli_commands
