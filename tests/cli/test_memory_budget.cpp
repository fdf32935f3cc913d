// The program's memory estimates (tools/transmamba/memory_budget.hpp and the plans of
// commands.hpp): sizes past any machine are refused before anything is allocated, with the buffer,
// its bytes and the flag behind it; a failed allocation names its phase.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <new>
#include <string>

#include "support/error_of.hpp"
#include "transmamba/commands.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_cli_memory_budget {

using namespace transmamba;
using cli::byte_count;
using cli::memory_plan;
using cli::memory_space;

namespace {
using testing::error_of;
using testing::has;
}  // namespace

TEST_CASE("cli memory: byte counts saturate instead of wrapping") {
    CHECK((byte_count(3) * byte_count(4) + byte_count(5)).value() == 17);
    const byte_count big(std::uint64_t(1) << 40);
    CHECK_FALSE((big * big).known());  // 2^80
    CHECK_FALSE((big * big * byte_count(0)).known());  // once unknown, stays unknown
    CHECK_FALSE((byte_count(std::numeric_limits<std::uint64_t>::max()) + byte_count(1)).known());
    CHECK_FALSE(byte_count::of(-1).known());
    CHECK(byte_count(2097152000).describe() == "2097152000 bytes (1.95 GiB)");
    CHECK(byte_count(100).describe() == "100 bytes");
    CHECK(byte_count::too_many().describe() == "more than 2^64 bytes");
    CHECK(cli::physical_memory_bytes() > (std::uint64_t(1) << 20));
}

TEST_CASE("cli memory: a plan over the limit names its largest buffer and that buffer's flag") {
    memory_plan plan("run");
    plan.add("the weights", byte_count(1000), "--model");
    plan.add("the logits (1 x 16384 x 32000 float32)", byte_count(2097152000), "--input's shape");
    plan.add("the logits in host memory", byte_count(2097152000), "--input's shape", memory_space::host);
    CHECK_NOTHROW(plan.require_fits(std::uint64_t(8) << 30, 0, true));
    CHECK_THROWS_WITH_AS(plan.require_fits(4000000000, 0, true),
                         doctest::Contains("run needs 4194305000 bytes (3.91 GiB), more than this machine's 4000000000 bytes "
                                           "(3.73 GiB) of memory: the largest part is the logits (1 x 16384 x 32000 float32), "
                                           "2097152000 bytes (1.95 GiB), set by --input's shape"),
                         error);
    // A GPU backend: host and device memory are checked apart.
    CHECK_NOTHROW(plan.require_fits(std::uint64_t(3) << 30, std::uint64_t(3) << 30, false));
    CHECK_THROWS_WITH_AS(plan.require_fits(std::uint64_t(3) << 30, std::uint64_t(1) << 30, false, "GPU memory"),
                         doctest::Contains("of GPU memory"), error);
    plan.add("the KV cache", byte_count::too_many(), "--max-new-tokens");
    const auto overflow = error_of([&] { plan.require_fits(std::numeric_limits<std::uint64_t>::max(), 0, true); });
    CHECK(has(overflow, "needs more than 2^64 bytes"));
    CHECK(has(overflow, "set by --max-new-tokens"));
}

TEST_CASE("cli memory: a failed allocation names what was allocated, its bytes and its flag") {
    CHECK_THROWS_WITH_AS(cli::allocation_phase("the logits (2 x 3 float32)", byte_count(24), "--input's shape",
                                               []() -> int { throw std::bad_alloc(); }),
                         doctest::Contains("out of memory allocating the logits (2 x 3 float32) (24 bytes, set by --input's shape)"),
                         error);
    CHECK(cli::allocation_phase("x", byte_count(1), "--y", [] { return 7; }) == 7);
}

namespace {

hf_mamba2_config small_config(index_t vocab) {
    hf_mamba2_config c;
    c.hidden_size = 32;
    c.state_size = 16;
    c.head_dim = 16;
    c.expand = 2;
    c.num_heads = 4;
    c.n_groups = 1;
    c.num_hidden_layers = 2;
    c.vocab_size = vocab;
    c.tie_word_embeddings = true;
    return c;
}

const memory_plan::item& find(const memory_plan& plan, const std::string& starts) {
    for (const auto& i : plan.items())
        if (i.what.starts_with(starts)) return i;
    FAIL("no item '", starts, "'");
    return plan.items().front();
}

}  // namespace

TEST_CASE("cli memory: run's plan counts the logits once, and --last only the last rows") {
    const auto cfg = small_config(32000);
    cli::run_args a;
    const auto full = cli::run_plan<float, cpu>(cfg, a, 1, 16384);
    CHECK(find(full, "the logits").bytes.value() == std::uint64_t(16384) * 32000 * 4);
    CHECK(find(full, "the logits").what.find("1 x 16384 x 32000") != std::string::npos);
    CHECK(full.total(memory_space::host).value() == 0);  // on the CPU the model's buffer is the one written
    CHECK(find(full, "the weights").bytes.value() == *cfg.parameter_count() * 4);
    a.last = true;
    const auto last = cli::run_plan<float, cpu>(cfg, a, 3, 16384);
    CHECK(find(last, "the logits").bytes.value() == std::uint64_t(3) * 32000 * 4);
    CHECK(find(last, "the KV cache").bytes.value() == 0);  // the checkpoint's schedule: pure Mamba2
    a.points.transpoint = 100;
    const auto with_cache = cli::run_plan<float, cpu>(cfg, a, 3, 16384);
    // 2 layers x 100 tokens x (keys 1 x 16 + values 4 x 16) floats + dt 4 floats.
    CHECK(find(with_cache, "the KV cache").bytes.value() == 2 * 100 * ((16 + 64) * 4 + 4 * 4));
}

TEST_CASE("cli memory: generate's plan counts the KV cache up to each layer's TransPoint") {
    auto cfg = small_config(30);
    cli::generate_args a;
    a.prompt = {1, 2, 3};
    a.max_new_tokens = 997;
    a.points.schedule = {0, 5000};
    const auto plan = cli::generate_plan<float>(cfg, a);
    // Layer 0 is pure SSM; layer 1 caches all 1000 tokens (its P = 5000 is past max_tokens).
    CHECK(find(plan, "the KV cache for 1000 tokens").bytes.value() == 1000 * ((16 + 64) * 4 + 4 * 4));
    CHECK(find(plan, "the KV cache").set_by.find("--max-new-tokens") != std::string::npos);
    a.max_new_tokens = std::numeric_limits<index_t>::max() - 3;
    a.points.schedule = {a.max_new_tokens, a.max_new_tokens};
    CHECK_FALSE(find(cli::generate_plan<float>(cfg, a), "the KV cache").bytes.known());
}

}  // namespace test_cli_memory_budget
