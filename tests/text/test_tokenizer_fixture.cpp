// text/tokenizer.hpp against the Hugging Face `tokenizers` library: tests/data/tokenizer_fixture/
// holds tokenizers that library trained and the ids it gives for a few thousand lines of varied
// text (tests/data/make_tokenizer_fixture.py, run where `tokenizers` is installed). Every line
// must encode to the same ids and decode to the same text, also when streamed, and decode(encode)
// must give the line back (its NFC form where the tokenizer normalizes). The environment variable
// TRANSMAMBA_TOKENIZER_FIXTURE points the test at another directory made by that script.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <transmamba/text.hpp>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_text_tokenizer_fixture {

using namespace transmamba;
using text::token_id;

namespace {

std::filesystem::path fixture_dir() {
    if (const char* dir = std::getenv("TRANSMAMBA_TOKENIZER_FIXTURE"); dir != nullptr && *dir != '\0') return dir;
    return std::filesystem::path(TRANSMAMBA_TEST_DATA_DIR) / "tokenizer_fixture";
}

std::string printable(const std::string& s) { return nlohmann::json(s).dump(-1, ' ', /*ensure_ascii=*/true); }

std::string printable(const std::vector<token_id>& ids) { return nlohmann::json(ids).dump(); }

}  // namespace

TEST_CASE("tokenizer: agrees with the tokenizers library on the fixture text") {
    const auto dir = fixture_dir();
    if (!std::filesystem::exists(dir / "expected.json")) {
        MESSAGE("skipped: no tokenizer fixture at " << dir.string()
                << " (make it with `python3 tests/data/make_tokenizer_fixture.py` where the tokenizers library is installed)");
        return;
    }
    std::ifstream in(dir / "expected.json", std::ios::binary);
    const auto expected = nlohmann::json::parse(in);
    const auto lines = expected.at("lines").get<std::vector<std::string>>();
    MESSAGE("fixture from tokenizers " << expected.value("tokenizers_version", std::string("?")) << ", " << lines.size() << " lines");
    REQUIRE(lines.size() >= 1000);
    REQUIRE(expected.at("cases").size() >= 1);
    for (const auto& c : expected.at("cases")) {
        const std::string name = c.at("tokenizer").get<std::string>();
        CAPTURE(name);
        const auto tok = text::tokenizer::from_file(dir / name);
        const auto ids = c.at("ids").get<std::vector<std::vector<token_id>>>();
        const auto decoded = c.at("decoded").get<std::vector<std::string>>();
        REQUIRE(ids.size() == lines.size());
        REQUIRE(decoded.size() == lines.size());
        std::size_t encode_mismatches = 0, decode_mismatches = 0, stream_mismatches = 0, round_trip_mismatches = 0;
        for (std::size_t i = 0; i < lines.size(); ++i) {
            const auto ours = tok.encode(lines[i]);
            if (ours != ids[i] && ++encode_mismatches <= 5) {
                MESSAGE(name << " line " << i << " " << printable(lines[i]) << "\n  tokenizers: " << printable(ids[i])
                             << "\n  transmamba: " << printable(ours));
            }
            if (tok.decode(ids[i]) != decoded[i] && ++decode_mismatches <= 5) {
                MESSAGE(name << " line " << i << ": decode " << printable(tok.decode(ids[i])) << " != " << printable(decoded[i]));
            }
            text::stream_decoder stream(tok);
            std::string streamed;
            for (token_id id : ids[i]) streamed += stream.push(id);
            streamed += stream.finish();
            if (streamed != decoded[i]) ++stream_mismatches;
            // The prefix-space and template variant adds text; the other two give the line back.
            if (name != "tokenizer_prefix_space.json") {
                const std::string want = tok.normalizes_nfc() ? text::nfc(std::string_view(lines[i])) : lines[i];
                if (tok.decode(ours) != want && ++round_trip_mismatches <= 5) {
                    MESSAGE(name << " line " << i << ": decode(encode) " << printable(tok.decode(ours)) << " != " << printable(want));
                }
            }
        }
        CHECK(encode_mismatches == 0);
        CHECK(decode_mismatches == 0);
        CHECK(stream_mismatches == 0);
        CHECK(round_trip_mismatches == 0);
    }
}

}  // namespace test_text_tokenizer_fixture
