// text/tokenizer.hpp: every part of tokenizer.json that is not supported is an error naming the
// field (never a silently different encoding), and so are broken files, unknown ids and invalid
// UTF-8 text.
#include <doctest/doctest.h>

#include <filesystem>
#include <functional>
#include <string>

#include <transmamba/text/tokenizer.hpp>

#include "text/tiny_tokenizer.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_text_tokenizer_refusals {

using namespace transmamba;
using nlohmann::json;

namespace {

// The error of loading the tiny tokenizer after `change`.
std::string error_after(const std::function<void(json&)>& change) {
    json doc = tiny::tokenizer_json();
    change(doc);
    try {
        (void)tiny::load(doc);
    } catch (const transmamba::error& e) {
        return e.what();
    }
    return "(no error)";
}

json byte_level() { return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}; }

}  // namespace

TEST_CASE("tokenizer refuses: normalizers other than NFC") {
    CHECK(error_after([](json& d) { d["normalizer"] = {{"type", "NFKC"}}; }) ==
          "transmamba: tiny/tokenizer.json: normalizer.type \"NFKC\" is not supported (supported: null, NFC, a Sequence of those)");
    CHECK_MESSAGE(error_after([](json& d) {
                      d["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Lowercase"}}}}};
                  }).find("normalizer.normalizers[1].type \"Lowercase\" is not supported") != std::string::npos,
                  "a Sequence names the failing member");
    CHECK(error_after([](json& d) { d["normalizer"] = {{"kind", "NFC"}}; }).find("normalizer has no \"type\" string") !=
          std::string::npos);
}

TEST_CASE("tokenizer refuses: pre-tokenizers other than ByteLevel and the GPT-2 Split") {
    const auto has = [](const std::string& message, const std::string& part) {
        CAPTURE(message);
        CHECK(message.find(part) != std::string::npos);
    };
    has(error_after([](json& d) { d["pre_tokenizer"] = nullptr; }), "pre_tokenizer is null; byte-level BPE needs the ByteLevel");
    has(error_after([](json& d) { d["pre_tokenizer"] = {{"type", "Metaspace"}}; }), "pre_tokenizer.type \"Metaspace\" is not supported");
    // Llama-3's pattern is not GPT-2's.
    const std::string llama3 =
        R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    has(error_after([&](json& d) {
            d["pre_tokenizer"] = {{"type", "Sequence"},
                                  {"pretokenizers",
                                   {{{"type", "Split"}, {"pattern", {{"Regex", llama3}}}, {"behavior", "Isolated"}, {"invert", false}},
                                    byte_level()}}};
        }),
        "pre_tokenizer.pretokenizers[0].pattern.Regex \"(?i:'s");
    const auto split = [](const char* behavior, bool invert) {
        return json{{"type", "Split"}, {"pattern", {{"Regex", std::string(text::gpt2_pattern)}}}, {"behavior", behavior}, {"invert", invert}};
    };
    has(error_after([&](json& d) { d["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split("Removed", false), byte_level()}}}; }),
        ".behavior \"Removed\" is not supported");
    has(error_after([&](json& d) { d["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split("Isolated", true), byte_level()}}}; }),
        ".invert true is not supported");
    has(error_after([&](json& d) {
            d["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Isolated"}};
        }),
        "pre_tokenizer.pattern is not {\"Regex\": ...}");
    has(error_after([&](json& d) { d["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split("Isolated", false)}}}; }),
        "needs a ByteLevel pre-tokenizer as the last step");
    has(error_after([&](json& d) { d["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {byte_level(), split("Isolated", false)}}}; }),
        "needs a ByteLevel pre-tokenizer as the last step");
    has(error_after([&](json& d) { d["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {byte_level(), byte_level()}}}; }),
        "a ByteLevel step followed by another step is not supported");
    has(error_after([](json& d) { d["pre_tokenizer"]["add_prefix_space"] = "yes"; }),
        "pre_tokenizer.add_prefix_space is not true or false");
}

TEST_CASE("tokenizer refuses: decoders other than ByteLevel") {
    CHECK(error_after([](json& d) { d["decoder"] = nullptr; }).find("decoder is null; byte-level BPE needs the ByteLevel decoder") !=
          std::string::npos);
    CHECK(error_after([](json& d) { d["decoder"] = {{"type", "WordPiece"}}; }).find("decoder.type \"WordPiece\" is not supported") !=
          std::string::npos);
    CHECK(error_after([](json& d) {
              d["decoder"] = {{"type", "Sequence"}, {"decoders", {byte_level(), {{"type", "Strip"}}}}};
          }).find("decoder.decoders: only a Sequence of exactly one ByteLevel") != std::string::npos);
}

TEST_CASE("tokenizer refuses: models and model options other than byte-level BPE") {
    const auto has = [](const std::string& message, const std::string& part) {
        CAPTURE(message);
        CHECK(message.find(part) != std::string::npos);
    };
    has(error_after([](json& d) { d["model"]["type"] = "Unigram"; }), "model.type \"Unigram\" is not supported (only BPE)");
    has(error_after([](json& d) { d["model"].erase("type"); }), "model has no \"type\" string");
    has(error_after([](json& d) { d["model"]["dropout"] = 0.1; }), "model.dropout 0.1 is not supported");
    has(error_after([](json& d) { d["model"]["continuing_subword_prefix"] = "##"; }),
        "model.continuing_subword_prefix \"##\" is not supported");
    has(error_after([](json& d) { d["model"]["end_of_word_suffix"] = "</w>"; }), "model.end_of_word_suffix \"</w>\" is not supported");
    has(error_after([](json& d) { d["model"]["byte_fallback"] = true; }), "model.byte_fallback true is not supported");
    has(error_after([](json& d) { d["model"]["vocab"] = json::array(); }), "model.vocab is not an object");
    has(error_after([](json& d) { d["model"]["vocab"]["x y"] = -3; }), "model.vocab[\"x y\"] = -3 is not an id");
    has(error_after([](json& d) { d["model"]["vocab"]["dup"] = 257; }), "model.vocab: id 257 is given to both");
    has(error_after([](json& d) { d["model"]["merges"].push_back("a b c"); }),
        "model.merges[9] = \"a b c\" is not two tokens separated by one space");
    has(error_after([](json& d) { d["model"]["merges"].push_back(json::array({"a"})); }), "model.merges[9] = [\"a\"] is neither");
    has(error_after([](json& d) { d["model"]["merges"].push_back("q zz"); }),
        "model.merges[9] = \"q zz\": the token \"zz\" is not in model.vocab");
    has(error_after([](json& d) { d["model"]["merges"].push_back("q z"); }),  // "qz" itself is missing
        "model.merges[9] = \"q z\": the token \"qz\" is not in model.vocab");
    has(error_after([](json& d) { d["model"]["unk_token"] = "<unk>"; }), "model.unk_token \"<unk>\" is not in model.vocab");
}

TEST_CASE("tokenizer refuses: added tokens, post-processors, truncation and padding it cannot honour") {
    const auto has = [](const std::string& message, const std::string& part) {
        CAPTURE(message);
        CHECK(message.find(part) != std::string::npos);
    };
    has(error_after([](json& d) { d["added_tokens"][1]["single_word"] = true; }),
        "added_tokens[1].single_word true is not supported (\"<|pad|>\")");
    has(error_after([](json& d) { d["added_tokens"][0].erase("id"); }), "added_tokens[0] has no unsigned \"id\"");
    has(error_after([](json& d) { d["added_tokens"][1]["id"] = 300; }), "added_tokens: id 300 is given to both");
    has(error_after([](json& d) { d["post_processor"] = {{"type", "RobertaProcessing"}}; }),
        "post_processor.type \"RobertaProcessing\" is not supported");
    has(error_after([](json& d) {
            d["post_processor"] = {{"type", "TemplateProcessing"},
                                   {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}}}}}},
                                   {"special_tokens", json::object()}};
        }),
        "post_processor.single[0]: the special token \"<s>\" is not in post_processor.special_tokens");
    has(error_after([](json& d) {
            d["post_processor"] = {{"type", "TemplateProcessing"}, {"single", json::array()}, {"special_tokens", json::object()}};
        }),
        "post_processor.single has no Sequence \"A\"");
    has(error_after([](json& d) { d["truncation"] = {{"max_length", 512}}; }), "truncation is set ({\"max_length\":512}); only null");
    has(error_after([](json& d) { d["padding"] = {{"strategy", "BatchLongest"}}; }), "padding is set");
}

TEST_CASE("tokenizer refuses: broken files, unknown ids, invalid UTF-8, uncovered bytes") {
    CHECK_THROWS_WITH_AS(text::tokenizer::from_json("{\"model\": ", "t.json"), doctest::Contains("t.json: not valid JSON"), error);
    CHECK_THROWS_WITH_AS(text::tokenizer::from_json("[1, 2]", "t.json"), doctest::Contains("t.json: the top level is not a JSON object"),
                         error);
    const auto missing = std::filesystem::temp_directory_path() / "transmamba-no-such-dir" / "tokenizer.json";
    CHECK_THROWS_WITH_AS(text::tokenizer::from_file(missing), doctest::Contains("(no such file or directory)"), error);

    const auto tok = tiny::load(tiny::tokenizer_json());
    CHECK_THROWS_WITH_AS(tok.decode(std::vector<text::token_id>{'a', 280}),
                         doctest::Contains("id 280 is not in the vocabulary of tiny/tokenizer.json"), error);
    CHECK_THROWS_WITH_AS(tok.decode(std::vector<text::token_id>{-1}), doctest::Contains("id -1 is not in the vocabulary"), error);
    CHECK_THROWS_WITH_AS(tok.encode("ok \xC3("), doctest::Contains("the text to encode: invalid UTF-8 at byte 3"), error);

    json doc = tiny::tokenizer_json();
    doc["model"]["vocab"].erase(tiny::spelled("\xBF"));
    const auto partial = tiny::load(doc);
    CHECK(partial.encode("fine") == partial.encode("fine"));
    CHECK_THROWS_WITH_AS(partial.encode("\xC2\xBF"), doctest::Contains("the byte 0xbf has no token in model.vocab"), error);
}

TEST_CASE("tokenizer: from_file reads a file or the tokenizer.json of a directory") {
    const auto dir = std::filesystem::temp_directory_path() / "transmamba-tokenizer-from-file";
    std::filesystem::create_directories(dir);
    {
        std::ofstream(dir / "tokenizer.json") << tiny::tokenizer_json().dump();
    }
    const auto from_dir = text::tokenizer::from_file(dir);
    const auto from_path = text::tokenizer::from_file(dir / "tokenizer.json");
    CHECK(from_dir.encode(" the") == std::vector<text::token_id>{258});
    CHECK(from_path.encode(" the") == std::vector<text::token_id>{258});
    CHECK(from_dir.source() == (dir / "tokenizer.json").string());
    std::filesystem::remove_all(dir);
}

}  // namespace test_text_tokenizer_refusals
