// The generated tasks (include/transmamba/tasks/): every property a sequence must have, checked on
// many fresh sequences; a batch is a function of (seed, index) alone; bad sizes refused.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "transmamba/tasks/task.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_tasks_tasks {

using namespace transmamba;

TEST_CASE("mqar: pairs, queries, targets only on the queried values") {
    const mqar_task task{.vocab = 41, .length = 48, .pairs = 6, .queries = 4};
    task.validate();
    CHECK(task.key_count() == 20);
    CHECK(task.value_count() == 20);
    std::map<std::int64_t, int> value_seen;
    std::set<index_t> query_places;
    for (std::uint64_t index = 0; index < 50; ++index) {
        const token_batch b = make_batch(task, 11, index, 8);
        REQUIRE(b.ids.size() == 8 * 48);
        for (index_t r = 0; r < 8; ++r) {
            std::map<std::int64_t, std::int64_t> value_of;
            for (index_t i = 0; i < task.pairs; ++i) {
                const auto k = b.ids[std::size_t(r * 48 + 2 * i)], v = b.ids[std::size_t(r * 48 + 2 * i + 1)];
                CHECK(k >= 1);
                CHECK(k <= 20);
                CHECK(v >= 21);
                CHECK(v <= 40);
                CHECK(value_of.emplace(k, v).second);  // keys are distinct
                ++value_seen[v];
                CHECK(b.targets[std::size_t(r * 48 + 2 * i)] == ignore_id);  // no loss inside the pairs
            }
            index_t answered = 0;
            std::set<std::int64_t> asked;
            for (index_t t = 2 * task.pairs; t < 48; ++t) {
                const auto id = b.ids[std::size_t(r * 48 + t)], target = b.targets[std::size_t(r * 48 + t)];
                if (target == ignore_id) {
                    // Not a query: filler, or the value that follows a query.
                    if (id != 0) {
                        REQUIRE(t > 2 * task.pairs);
                        CHECK(b.targets[std::size_t(r * 48 + t - 1)] == id);
                    }
                    continue;
                }
                ++answered;
                query_places.insert(t);
                REQUIRE(value_of.contains(id));       // a query is one of the sequence's keys
                CHECK(target == value_of[id]);        // and its target is that key's value
                CHECK(b.ids[std::size_t(r * 48 + t + 1)] == target);
                CHECK(asked.insert(id).second);       // each key is asked at most once
            }
            CHECK(answered == task.queries);
        }
        CHECK(b.scored() == 8 * task.queries);
    }
    CHECK(value_seen.size() == 20);         // every value occurs
    CHECK(query_places.size() == 18);       // queries land in every one of the (48 - 12) / 2 slots after the pairs
}

TEST_CASE("mqar: a batch is a function of (seed, index); bad sizes refused") {
    const mqar_task task{.vocab = 32, .length = 32, .pairs = 4, .queries = 4};
    const auto a = make_batch(task, 5, 3, 4), b = make_batch(task, 5, 3, 4);
    CHECK(a.ids == b.ids);
    CHECK(a.targets == b.targets);
    CHECK(make_batch(task, 5, 4, 4).ids != a.ids);
    CHECK(make_batch(task, 6, 3, 4).ids != a.ids);
    // The batch's first rows do not depend on how many rows follow.
    const auto wider = make_batch(task, 5, 3, 6);
    CHECK(std::equal(a.ids.begin(), a.ids.end(), wider.ids.begin()));

    CHECK_THROWS_WITH_AS((mqar_task{.vocab = 9, .length = 64, .pairs = 5, .queries = 1}.validate()), doctest::Contains("4 keys"),
                         error);
    CHECK_THROWS_WITH_AS((mqar_task{.vocab = 64, .length = 10, .pairs = 4, .queries = 2}.validate()),
                         doctest::Contains("needs 2 * (pairs + queries) = 12"), error);
    CHECK_THROWS_WITH_AS((mqar_task{.vocab = 64, .length = 64, .pairs = 4, .queries = 5}.validate()), doctest::Contains("queries"),
                         error);
}

TEST_CASE("selective copying: the data tokens in order at the markers") {
    const selective_copying_task task{.vocab = 12, .length = 40, .tokens = 6};
    task.validate();
    std::set<index_t> places;
    for (std::uint64_t index = 0; index < 30; ++index) {
        const token_batch b = make_batch(task, 2, index, 4);
        for (index_t r = 0; r < 4; ++r) {
            std::vector<std::int64_t> data;
            for (index_t t = 0; t < task.region(); ++t) {
                const auto id = b.ids[std::size_t(r * 40 + t)];
                CHECK(b.targets[std::size_t(r * 40 + t)] == ignore_id);
                if (id != 0) {
                    CHECK(id >= 2);
                    CHECK(id < 12);
                    data.push_back(id);
                    places.insert(t);
                }
            }
            REQUIRE(data.size() == 6);
            for (index_t i = 0; i < 6; ++i) {
                CHECK(b.ids[std::size_t(r * 40 + task.region() + i)] == 1);
                CHECK(b.targets[std::size_t(r * 40 + task.region() + i)] == data[std::size_t(i)]);
            }
        }
    }
    CHECK(places.size() == std::size_t(task.region()));  // data lands everywhere in the region
    CHECK_THROWS_WITH_AS((selective_copying_task{.vocab = 12, .length = 10, .tokens = 6}.validate()),
                         doctest::Contains("2 * tokens = 12"), error);
}

TEST_CASE("bytes: windows of the file, each target the next byte") {
    namespace fs = std::filesystem;
    const fs::path file = fs::temp_directory_path() / ("transmamba_bytes_" + std::to_string(::getpid()) + ".txt");
    std::string text;
    for (int i = 0; i < 300; ++i) text += char('a' + (i * 7) % 26);
    std::ofstream(file, std::ios::binary) << text;
    const auto task = byte_lm_task::open(file, 20);
    CHECK(task.size() == 300);
    const token_batch b = make_batch(task, 9, 0, 16);
    std::set<std::size_t> offsets;
    for (index_t r = 0; r < 16; ++r) {
        const std::string window(b.ids.begin() + r * 20, b.ids.begin() + r * 20 + 20);
        const auto at = text.find(window);
        REQUIRE(at != std::string::npos);
        offsets.insert(at);
        for (index_t t = 0; t < 20; ++t)
            CHECK(b.targets[std::size_t(r * 20 + t)] == std::int64_t(std::uint8_t(text[at + std::size_t(t) + 1])));
    }
    CHECK(offsets.size() > 1);
    CHECK(b.scored() == 16 * 20);
    CHECK_THROWS_WITH_AS(byte_lm_task::open(file, 300), doctest::Contains("at least 301"), error);
    CHECK_THROWS_WITH_AS(byte_lm_task::open(file.string() + ".missing", 8), doctest::Contains("cannot open"), error);
    fs::remove(file);
}

TEST_CASE("stream_rng: below() is uniform and in range") {
    stream_rng rng(1, 2);
    std::vector<int> counts(7, 0);
    for (int i = 0; i < 70000; ++i) {
        const auto x = rng.below(7);
        REQUIRE(x < 7);
        ++counts[x];
    }
    for (int c : counts) CHECK(std::abs(c - 10000) < 500);  // ~5 sigma
    const auto d = rng.distinct(10, 10);
    CHECK(std::set<std::int64_t>(d.begin(), d.end()).size() == 10);
}

}  // namespace test_tasks_tasks
