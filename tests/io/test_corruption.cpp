// Randomized corruption of valid safetensors files and config.json texts (a fixed seed, so every
// run tries the same inputs): each mutant must load or throw transmamba::error, never crash, hang or
// read out of bounds. Run under the sanitize preset too (AddressSanitizer catches the reads). The
// mutations aim at the header, where the structure is: flipped and set bytes, truncation, splices,
// insertions and deletions, a rewritten length field, and header numbers and dtypes swapped for
// others, which makes headers that are valid JSON but lie.
#include <doctest/doctest.h>

#include <transmamba/io/hf_config.hpp>
#include <transmamba/io/safetensors.hpp>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io/fuzz_body.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_io_corruption {

using namespace transmamba;
using transmamba::testing::fuzz_outcome;

namespace {

std::vector<std::byte> valid_file() {
    safetensors_writer w;
    w.set_metadata("format", "pt");
    w.add("backbone.embeddings.weight", {4, 3}, std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
    w.add("bf16", {2, 2}, std::vector<float>{1.5f, -2.0f, 3.25f, 0.0f}, dtype::BF16);
    w.add("f16", {3}, std::vector<float>{1e-5f, 60000.0f, -1.0f}, dtype::F16);
    w.add("f64", {2}, std::vector<double>{1.0 / 3.0, -2.0});
    w.add("input_ids", {1, 3}, std::vector<std::int64_t>{0, 17, 99});
    w.add("empty", {0}, std::vector<float>{});
    w.add("scalar", {}, std::vector<float>{7.0f});
    return w.serialize();
}

class mutator {
public:
    explicit mutator(std::uint64_t seed) : rng_(seed) {}

    std::vector<std::byte> mutate(std::vector<std::byte> b, std::size_t header_end) {
        const int rounds = 1 + static_cast<int>(below(3));
        for (int r = 0; r < rounds; ++r) {
            switch (below(9)) {
                case 0:  // flip bits, mostly in the header
                    for (int i = 0, n = 1 + static_cast<int>(below(4)); i < n && !b.empty(); ++i)
                        b[position(b, header_end)] ^= static_cast<std::byte>(1u << below(8));
                    break;
                case 1:  // set a byte to a structural character
                    if (!b.empty()) {
                        static constexpr char chars[] = "{}[]\":,-.0123456789eE \\\xff";
                        b[position(b, header_end)] = static_cast<std::byte>(chars[below(sizeof(chars) - 1)]);
                    }
                    break;
                case 2:  // truncate
                    b.resize(below(b.size() + 1));
                    break;
                case 3:  // splice a chunk over another place
                    if (b.size() > 2) {
                        const std::size_t from = below(b.size()), to = below(b.size());
                        const std::size_t len = std::min({below(32) + 1, b.size() - from, b.size() - to});
                        std::vector<std::byte> chunk(b.begin() + from, b.begin() + from + len);
                        std::copy(chunk.begin(), chunk.end(), b.begin() + to);
                    }
                    break;
                case 4:  // insert a copy of a chunk
                    if (!b.empty()) {
                        const std::size_t from = below(b.size()), len = std::min(below(16) + 1, b.size() - from);
                        std::vector<std::byte> chunk(b.begin() + from, b.begin() + from + len);
                        b.insert(b.begin() + position(b, header_end), chunk.begin(), chunk.end());
                    }
                    break;
                case 5:  // delete a range
                    if (!b.empty()) {
                        const std::size_t at = position(b, header_end), len = std::min(below(16) + 1, b.size() - at);
                        b.erase(b.begin() + at, b.begin() + at + len);
                    }
                    break;
                case 6:  // rewrite the length field
                    if (b.size() >= 8) {
                        const std::uint64_t old = load_le<std::uint64_t>(b.data());
                        const std::uint64_t choices[] = {0, 1, 2, old + 1, old - 1, old + 8, old * 2, b.size(), b.size() - 8,
                                                         ~std::uint64_t(0), std::uint64_t(1) << 63, rng_()};
                        store_le<std::uint64_t>(b.data(), choices[below(std::size(choices))]);
                    }
                    break;
                case 7:  // replace a number in the header text
                    replace_number(b, header_end);
                    break;
                case 8:  // replace a dtype
                    replace_dtype(b, header_end);
                    break;
            }
        }
        return b;
    }

    std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng_() % n); }

private:
    // 80% of positions in the header (the length field included).
    std::size_t position(const std::vector<std::byte>& b, std::size_t header_end) {
        const std::size_t limit = below(5) == 0 ? b.size() : std::min(b.size(), header_end);
        return below(limit == 0 ? b.size() : limit);
    }

    void replace_text(std::vector<std::byte>& b, std::size_t at, std::size_t len, const std::string& with) {
        b.erase(b.begin() + at, b.begin() + at + len);
        const auto* p = reinterpret_cast<const std::byte*>(with.data());
        b.insert(b.begin() + at, p, p + with.size());
        // Keep the length field consistent half of the time, so the JSON reaches the semantic checks.
        if (below(2) == 0 && b.size() >= 8) {
            const std::uint64_t n = load_le<std::uint64_t>(b.data());
            store_le<std::uint64_t>(b.data(), n + with.size() - len);
        }
    }

    void replace_number(std::vector<std::byte>& b, std::size_t header_end) {
        std::vector<std::pair<std::size_t, std::size_t>> numbers;  // (start, length) of digit runs
        const std::size_t end = std::min(b.size(), header_end);
        for (std::size_t i = 8; i < end;) {
            if (std::isdigit(static_cast<unsigned char>(b[i]))) {
                std::size_t j = i;
                while (j < end && std::isdigit(static_cast<unsigned char>(b[j]))) ++j;
                numbers.emplace_back(i, j - i);
                i = j;
            } else {
                ++i;
            }
        }
        if (numbers.empty()) return;
        const auto [at, len] = numbers[below(numbers.size())];
        unsigned long long v = 0;  // wraps for long digit runs: any value will do
        for (std::size_t i = 0; i < len; ++i) v = v * 10 + static_cast<unsigned>(static_cast<char>(b[at + i]) - '0');
        const std::string choices[] = {"0", "1", std::to_string(v + 1), std::to_string(v ? v - 1 : 0), std::to_string(v * 2),
                                       std::to_string(v + 4), "4294967296", "9223372036854775807", "18446744073709551615",
                                       "18446744073709551616", "-1", "1e3", "0.5"};
        replace_text(b, at, len, choices[below(std::size(choices))]);
    }

    void replace_dtype(std::vector<std::byte>& b, std::size_t header_end) {
        const std::string text(reinterpret_cast<const char*>(b.data()), std::min(b.size(), header_end));
        std::vector<std::size_t> at;
        for (std::size_t i = text.find("\"dtype\":\""); i != std::string::npos; i = text.find("\"dtype\":\"", i + 1)) at.push_back(i + 9);
        if (at.empty()) return;
        const std::size_t start = at[below(at.size())];
        const std::size_t stop = text.find('"', start);
        if (stop == std::string::npos) return;
        const char* names[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "F128", "", "f32"};
        replace_text(b, start, stop - start, names[below(std::size(names))]);
    }

    std::mt19937_64 rng_;
};

}  // namespace

TEST_CASE("randomized corruption of a safetensors file: load or transmamba::error, never a crash") {
    const auto good = valid_file();
    REQUIRE(transmamba::testing::fuzz_safetensors_bytes(good) == fuzz_outcome::accepted);
    const std::size_t header_end = 8 + load_le<std::uint64_t>(good.data());

    mutator m(0x7a11'5afe'0000'0006ull);
    const std::filesystem::path file =
        std::filesystem::temp_directory_path() / ("transmamba_corruption_" + std::to_string(::getpid()) + ".safetensors");
    int accepted = 0, rejected = 0;
    constexpr int iterations = 30000;
    for (int i = 0; i < iterations; ++i) {
        const auto bad = m.mutate(good, header_end);
        CAPTURE(i);
        fuzz_outcome outcome{};
        REQUIRE_NOTHROW(outcome = transmamba::testing::fuzz_safetensors_bytes(bad));
        (outcome == fuzz_outcome::accepted ? accepted : rejected)++;
        // Through the memory-mapped file now and then (empty and truncated files included).
        if (i % 100 == 0) {
            std::ofstream(file, std::ios::binary | std::ios::trunc)
                .write(reinterpret_cast<const char*>(bad.data()), static_cast<std::streamsize>(bad.size()));
            try {
                const safetensors_file f(file);
                for (const auto& t : f.tensors())
                    if (is_float_dtype(t.type)) (void)f.read<float>(t);
                CHECK(outcome == fuzz_outcome::accepted);
            } catch (const error& e) {
                CHECK(outcome == fuzz_outcome::rejected);
                CHECK(std::string(e.what()).find(file.string()) != std::string::npos);
            }
        }
    }
    std::filesystem::remove(file);
    MESSAGE("corruption: " << accepted << " mutants loaded, " << rejected << " rejected");
    CHECK(accepted > iterations / 100);  // the mutations reach both outcomes
    CHECK(rejected > iterations / 2);
}

TEST_CASE("randomized corruption of config.json: parse or transmamba::error") {
    const std::string good = R"({
  "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", "hidden_size": 64, "state_size": 16,
  "num_heads": 8, "head_dim": 16, "n_groups": 2, "expand": 2, "conv_kernel": 4, "chunk_size": 8,
  "num_hidden_layers": 2, "vocab_size": 96, "layer_norm_epsilon": 1e-05, "tie_word_embeddings": true,
  "time_step_limit": [0.0, Infinity], "use_conv_bias": true, "use_bias": false, "rms_norm": true,
  "transmamba": {"version": 1, "kind": "per_layer", "transpoints": [9, 3], "attention": "paper"}
})";
    REQUIRE(transmamba::testing::fuzz_hf_config_text(good) == fuzz_outcome::accepted);
    std::vector<std::byte> bytes(good.size());
    std::memcpy(bytes.data(), good.data(), good.size());
    mutator m(2026);
    int accepted = 0, rejected = 0;
    for (int i = 0; i < 20000; ++i) {
        auto bad = m.mutate(bytes, bytes.size());
        CAPTURE(i);
        const std::string text(reinterpret_cast<const char*>(bad.data()), bad.size());
        fuzz_outcome outcome{};
        REQUIRE_NOTHROW(outcome = transmamba::testing::fuzz_hf_config_text(text));
        (outcome == fuzz_outcome::accepted ? accepted : rejected)++;
    }
    MESSAGE("config corruption: " << accepted << " accepted, " << rejected << " rejected");
    CHECK(accepted > 100);
    CHECK(rejected > 1000);
}

}  // namespace test_io_corruption
