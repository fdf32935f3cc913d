// Text in and out of the program (tools/transmamba/generation_text.hpp): the token printer writes
// each token as it comes (flushed: another reader of the file sees it at once), holds a UTF-8
// character split across tokens until it is whole, and ends with what decode() gives for all ids;
// the end-of-sequence ids of generation_config.json / config.json; init's weights, whose greedy
// tokens are not the input token repeated.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/error_of.hpp"
#include "text/tiny_tokenizer.hpp"
#include "transmamba/commands.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_cli_generation_text {

using namespace transmamba;
namespace fs = std::filesystem;

namespace {

fs::path scratch_dir(const char* name) {
    const fs::path dir = fs::temp_directory_path() / ("transmamba_gen_text_test_" + std::to_string(::getpid())) / name;
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
}

// The file's bytes as another reader sees them now.
std::string contents(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void write(const fs::path& file, const std::string& text) { std::ofstream(file, std::ios::binary) << text; }

}  // namespace

TEST_CASE("cli: the token printer writes text as it comes, whole characters only, flushed per token") {
    const auto tok = tiny::load(tiny::tokenizer_json());
    const fs::path file = scratch_dir("printer") / "out.txt";
    std::FILE* out = std::fopen(file.c_str(), "wb");
    REQUIRE(out != nullptr);
    cli::token_printer printer(out, &tok);
    // "Ġthe" (258), then 中 = E4 B8 AD as the merged E4 B8 (264) and the byte AD (173), then "ab"
    // (260) and a lone continuation byte (0x80), ill-formed: U+FFFD where decode() puts it.
    const std::vector<text::token_id> ids{258, 264, 173, 260, 0x80, 'x'};
    const std::vector<std::string> seen_after{" the", " the", " the\xE4\xB8\xAD", " the\xE4\xB8\xAD" "ab",
                                              " the\xE4\xB8\xAD" "ab\xEF\xBF\xBD", " the\xE4\xB8\xAD" "ab\xEF\xBF\xBDx"};
    for (std::size_t i = 0; i < ids.size(); ++i) {
        printer.print(ids[i]);
        CHECK(contents(file) == seen_after[i]);  // on disk before the next token: flushed
    }
    printer.finish();
    std::fclose(out);
    CHECK(contents(file) == tok.decode(ids) + "\n");
}

TEST_CASE("cli: the token printer: a character cut off at the end, ids the tokenizer lacks, ids mode") {
    const auto tok = tiny::load(tiny::tokenizer_json());
    const fs::path dir = scratch_dir("printer2");
    {
        std::FILE* out = std::fopen((dir / "cut.txt").c_str(), "wb");
        cli::token_printer printer(out, &tok);
        printer.print('a');
        printer.print(264);  // E4 B8, never completed
        CHECK(contents(dir / "cut.txt") == "a");
        printer.print(280);  // below vocab_size() but unused: U+FFFD, and the cut character before it too
        printer.print(5000);
        printer.finish();
        std::fclose(out);
        const std::string want = std::string("a") + tok.decode(std::vector<text::token_id>{264}) + "\xEF\xBF\xBD\xEF\xBF\xBD\n";
        CHECK(contents(dir / "cut.txt") == want);
    }
    {
        std::FILE* out = std::fopen((dir / "ids.txt").c_str(), "wb");
        cli::token_printer printer(out, nullptr);
        printer.print(12);
        CHECK(contents(dir / "ids.txt") == "12");
        printer.print(0);
        printer.print(5000);
        printer.finish();
        std::fclose(out);
        CHECK(contents(dir / "ids.txt") == "12,0,5000\n");
    }
}

TEST_CASE("cli: end-of-sequence ids from generation_config.json, else config.json") {
    const fs::path dir = scratch_dir("eos");
    CHECK(cli::end_of_sequence_ids(dir).empty());
    write(dir / "config.json", R"({"eos_token_id": 7, "time_step_limit": [0.0, Infinity]})");
    CHECK(cli::end_of_sequence_ids(dir) == std::vector<std::int64_t>{7});
    write(dir / "generation_config.json", R"({"eos_token_id": [0, 50279]})");
    CHECK(cli::end_of_sequence_ids(dir) == std::vector<std::int64_t>{0, 50279});
    write(dir / "generation_config.json", R"({"eos_token_id": null, "bos_token_id": 0})");
    CHECK(cli::end_of_sequence_ids(dir) == std::vector<std::int64_t>{7});
    write(dir / "generation_config.json", R"({"eos_token_id": 3})");
    CHECK(cli::end_of_sequence_ids(dir) == std::vector<std::int64_t>{3});
    for (const char* bad : {R"({"eos_token_id": -1})", R"({"eos_token_id": [1, "x"]})", R"({"eos_token_id": 1.5})"}) {
        write(dir / "generation_config.json", bad);
        CHECK(testing::has(testing::error_of([&] { (void)cli::end_of_sequence_ids(dir); }),
                           "eos_token_id must be a non-negative integer or a list of them"));
    }
    write(dir / "generation_config.json", "{ not json");
    CHECK(testing::has(testing::error_of([&] { (void)cli::end_of_sequence_ids(dir); }), "generation_config.json' is not valid JSON"));
}

TEST_CASE("cli: --prompt needs tokenizer.json and says so; it encodes with the checkpoint's tokenizer") {
    const fs::path dir = scratch_dir("prompt");
    const auto missing = testing::error_of([&] { (void)cli::checkpoint_tokenizer(dir, "--prompt"); });
    CHECK(testing::has(missing, "--prompt needs the checkpoint's tokenizer"));
    CHECK(testing::has(missing, "tokenizer.json' does not exist"));
    write(dir / "tokenizer.json", tiny::tokenizer_json().dump());
    const auto tok = cli::checkpoint_tokenizer(dir, "--prompt");
    const auto encoded = tok.encode(" the abab");
    CHECK(cli::prompt_ids(dir, {}, std::string(" the abab"), &tok) == std::vector<std::int64_t>(encoded.begin(), encoded.end()));
    CHECK(encoded.size() < 9);  // merged tokens, not one id per byte
    CHECK(cli::prompt_ids(dir, {4, 5}, std::nullopt, nullptr) == std::vector<std::int64_t>{4, 5});
    CHECK(testing::has(testing::error_of([&] { (void)cli::prompt_ids(dir, {}, std::string(), &tok); }), "--prompt is empty"));
}

TEST_CASE("cli: init's weights do not make the tied head repeat the input token") {
    // With embeddings ~ U(-1, 1) the input token's own logit led by ~12 at every position; at
    // U(-1, 1) / sqrt(d_model) the layers decide. Measured on one forward pass over random tokens:
    // how often the argmax is the input token itself, and how many distinct argmaxes there are.
    cli::init_args ia;
    ia.out = scratch_dir("alive");
    ia.d_model = 64;
    ia.num_layers = 2;
    ia.vocab = 300;
    ia.force = true;
    REQUIRE(cli::init(ia) == 0);
    auto loaded = load_checkpoint<float, cpu, mamba2_pattern>(ia.out);
    const index_t L = 64, V = 300;
    std::vector<std::int64_t> ids(static_cast<std::size_t>(L));
    for (index_t i = 0; i < L; ++i) ids[std::size_t(i)] = (i * 97 + 13) % V;
    std::vector<float> logits(static_cast<std::size_t>(L * V));
    workspace<cpu> ws;
    loaded.model.forward({ids.data(), {1, L}}, {logits.data(), {1, L, V}}, loaded.schedule, ws);
    int own = 0;
    std::set<std::int64_t> argmaxes;
    for (index_t i = 0; i < L; ++i) {
        const float* row = logits.data() + i * V;
        const auto top = std::int64_t(std::max_element(row, row + V) - row);
        own += top == ids[std::size_t(i)];
        argmaxes.insert(top);
    }
    CHECK(own <= 4);
    CHECK(argmaxes.size() >= 32);
    // The embeddings are within the scaled range; the tokenizer was written (vocab >= 256).
    loaded.model.for_each_parameter([&](const std::string& name, const auto& buf, const std::vector<index_t>&) {
        if (name != "backbone.embeddings.weight") return;
        for (std::size_t i = 0; i < buf.size(); ++i) CHECK_MESSAGE(std::abs(buf.data()[i]) <= 1.0f / 8.0f, i);
    });
    CHECK(fs::exists(ia.out / "tokenizer.json"));
    CHECK(text::tokenizer::from_file(ia.out).encode("hi") == std::vector<text::token_id>{'h', 'i'});
}

}  // namespace test_cli_generation_text
