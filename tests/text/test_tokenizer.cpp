// text/tokenizer.hpp on the hand-made tokenizer of tiny_tokenizer.hpp: ids worked out by hand from
// its merges, added tokens, prefix spaces, templates, NFC, and exact round trips.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <transmamba/text/tokenizer.hpp>

#include "text/tiny_tokenizer.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_text_tokenizer {

using namespace transmamba;
using text::token_id;
using ids = std::vector<token_id>;

TEST_CASE("tokenizer: BPE merges in the tokenizers library's order") {
    const auto tok = tiny::load(tiny::tokenizer_json());
    CHECK(tok.vocab_size() == 302);
    CHECK(tok.encode("the") == ids{'t', 257});            // "t h e": only (h, e) merges
    CHECK(tok.encode(" the") == ids{258});                // Ġ t -> Ġt, h e -> he, Ġt he -> Ġthe
    CHECK(tok.encode("hello the") == ids{257, 261, 'o', 258});
    // (a, b) at 0 first, which makes (ab, a), rank 3, which beats the (a, b) at 2: "aba" + "b".
    // Merging every (a, b) first would give "ab" "ab".
    CHECK(tok.encode("abab") == ids{259, 'b'});
    CHECK(tok.encode("") == ids{});
    CHECK(tok.encode("\xE4\xB8\xAD") == ids{264, 0xAD});  // 中 = E4 B8 AD
}

TEST_CASE("tokenizer: the GPT-2 pre-tokenizer pieces decide what merges") {
    const auto tok = tiny::load(tiny::tokenizer_json());
    CHECK(tok.encode("a   b") == ids{'a', 262, ' ', 'b'});   // "a" "  " " b": the last space goes with b
    CHECK(tok.encode("x\n\n") == ids{'x', 263});             // a run at the end stays whole
    CHECK(tok.encode("x\n\ny") == ids{'x', '\n', '\n', 'y'});  // "\n" then "\n" alone before "y"
    CHECK(tok.encode("don't") == ids{'d', 'o', 'n', '\'', 't'});
    CHECK(tok.pre_tokenize("don't stop 12ab  !!") ==
          std::vector<std::string>{"don", "'t", " stop", " 12", "ab", " ", " !!"});
}

TEST_CASE("tokenizer: added tokens are matched before pre-tokenization, longest first") {
    auto doc = tiny::tokenizer_json();
    const auto tok = tiny::load(doc);
    CHECK(tok.encode("<|endoftext|>the<|endoftext|>") == ids{300, 't', 257, 300});
    CHECK(tok.encode("a<|pad|> the") == ids{'a', 301, 258});
    CHECK(tok.encode("<|endoftext|") == tok.encode("<|endoftext|", false));  // no match, plain text
    CHECK(tok.token_to_id("<|endoftext|>") == 300);
    CHECK(tok.token_to_id(tiny::spelled(" the")) == 258);
    CHECK(!tok.token_to_id("nope"));
    CHECK(tok.is_special(300));
    CHECK(!tok.is_special(258));

    // Leftmost-longest: "<|end" and "<|endoftext|>" both start at 0, the longer wins; lstrip and
    // rstrip take the spaces around a match into the token.
    doc["added_tokens"].push_back({{"id", 302}, {"content", "<|end"}, {"special", true}, {"normalized", false}});
    doc["added_tokens"].push_back({{"id", 303}, {"content", "<mask>"}, {"special", true}, {"normalized", false},
                                   {"lstrip", true}, {"rstrip", true}});
    const auto more = tiny::load(doc);
    CHECK(more.encode("<|endoftext|><|end") == ids{300, 302});
    CHECK(more.encode("a  <mask>\t b") == ids{'a', 303, 'b'});

    // Non-normalized tokens are split off first: "ab" (raw) wins over an earlier "xa" (normalized).
    doc["added_tokens"].push_back({{"id", 304}, {"content", "ab"}, {"normalized", false}});
    doc["added_tokens"].push_back({{"id", 305}, {"content", "xa"}, {"normalized", true}});
    CHECK(tiny::load(doc).encode("xab") == ids{'x', 304});
}

TEST_CASE("tokenizer: merges in the [\"a\", \"b\"] form read as the \"a b\" form") {
    auto doc = tiny::tokenizer_json();
    const auto strings = tiny::load(doc);
    for (auto& m : doc["model"]["merges"]) {
        const std::string s = m.get<std::string>();
        m = nlohmann::json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
    }
    const auto pairs = tiny::load(doc);
    for (const char* s : {"the", " the", "abab", "hello the", "a   b", "\xE4\xB8\xAD"}) CHECK(pairs.encode(s) == strings.encode(s));
}

TEST_CASE("tokenizer: add_prefix_space puts a space before each piece of text") {
    auto doc = tiny::tokenizer_json();
    doc["pre_tokenizer"]["add_prefix_space"] = true;
    const auto tok = tiny::load(doc);
    CHECK(tok.encode("the") == ids{258});
    CHECK(tok.encode(" the") == ids{258});                     // already there: not doubled
    CHECK(tok.encode("<|endoftext|>the") == ids{300, 258});    // per piece between added tokens
    CHECK(tok.decode(tok.encode("the")) == " the");            // the ByteLevel decoder keeps it
}

TEST_CASE("tokenizer: a Sequence of Split (GPT-2 regex) and ByteLevel without its regex") {
    auto doc = tiny::tokenizer_json();
    const auto plain = tiny::load(doc);
    doc["pre_tokenizer"] = {{"type", "Sequence"},
                            {"pretokenizers",
                             {{{"type", "Split"},
                               {"pattern", {{"Regex", std::string(text::gpt2_pattern)}}},
                               {"behavior", "Isolated"},
                               {"invert", false}},
                              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    const auto split = tiny::load(doc);
    for (const char* s : {"hello the", "a   b", "x\n\ny", "don't 12 !!"}) CHECK(split.encode(s) == plain.encode(s));
    // ByteLevel without a regex and without a split: the whole text is one word.
    doc["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
    CHECK(tiny::load(doc).encode("a   b") == ids{'a', 262, ' ', 'b'});
    CHECK(tiny::load(doc).encode("x the") == ids{'x', 258});
}

TEST_CASE("tokenizer: TemplateProcessing adds its special tokens around the text") {
    auto doc = tiny::tokenizer_json();
    doc["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"SpecialToken", {{"id", "<|pad|>"}, {"type_id", 0}}}}}},
        {"pair", nlohmann::json::array()},
        {"special_tokens",
         {{"<|endoftext|>", {{"id", "<|endoftext|>"}, {"ids", {300}}, {"tokens", {"<|endoftext|>"}}}},
          {"<|pad|>", {{"id", "<|pad|>"}, {"ids", {301}}, {"tokens", {"<|pad|>"}}}}}}};
    const auto tok = tiny::load(doc);
    CHECK(tok.encode("the") == ids{300, 't', 257, 301});
    CHECK(tok.encode("the", /*add_special_tokens=*/false) == ids{'t', 257});
    // Inside a Sequence with ByteLevel, as Llama-3-style files have it.
    doc["post_processor"] = {{"type", "Sequence"},
                             {"processors", {{{"type", "ByteLevel"}, {"trim_offsets", false}}, doc["post_processor"]}}};
    CHECK(tiny::load(doc).encode("the") == ids{300, 't', 257, 301});
}

TEST_CASE("tokenizer: the NFC normalizer, and normalized added tokens matched after it") {
    auto doc = tiny::tokenizer_json();
    doc["normalizer"] = {{"type", "NFC"}};
    doc["added_tokens"].push_back({{"id", 302}, {"content", "\xC3\xA9t\xC3\xA9"}, {"normalized", true}, {"special", false}});
    const auto tok = tiny::load(doc);
    CHECK(tok.normalizes_nfc());
    const std::string composed = "caf\xC3\xA9";       // café, é = U+00E9
    const std::string decomposed = "cafe\xCC\x81";    // e + U+0301
    CHECK(tok.encode(decomposed) == tok.encode(composed));
    CHECK(tok.decode(tok.encode(decomposed)) == composed);
    CHECK(tok.encode("ete\xCC\x81t\xC3\xA9") == ids{'e', 't', 302});  // "été" found in the NFC text
    // tokenizers' ByteLevel decoder reads a token whose characters are all in the byte alphabet as
    // those bytes, also an added token: "été" is the bytes E9 74 E9, which is not UTF-8.
    CHECK(tok.decode(ids{302}) == "\xEF\xBF\xBDt\xEF\xBF\xBD");
    // Sequence [NFC] and an empty Sequence are the same normalizers.
    doc["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}}}};
    CHECK(tiny::load(doc).encode(decomposed) == tok.encode(composed));
    doc["normalizer"] = {{"type", "Sequence"}, {"normalizers", nlohmann::json::array()}};
    CHECK(!tiny::load(doc).normalizes_nfc());
}

TEST_CASE("tokenizer: unk_token stands for a byte the vocabulary lacks, fused when fuse_unk") {
    auto doc = tiny::tokenizer_json();
    doc["model"]["vocab"].erase(tiny::spelled("\xBE"));
    doc["model"]["vocab"].erase(tiny::spelled("\xBF"));
    doc["model"]["vocab"]["<unk>"] = 299;
    doc["model"]["unk_token"] = "<unk>";
    const std::string text = "a\xEF\xBF\xBE";  // U+FFFE: the bytes EF BF BE
    CHECK(tiny::load(doc).encode(text) == ids{'a', 0xEF, 299, 299});
    doc["model"]["fuse_unk"] = true;
    CHECK(tiny::load(doc).encode(text) == ids{'a', 0xEF, 299});
}

TEST_CASE("tokenizer: ignore_merges maps a word that is a vocab entry straight to its id") {
    auto doc = tiny::tokenizer_json();
    doc["model"]["vocab"]["abab"] = 299;
    CHECK(tiny::load(doc).encode("abab") == ids{259, 'b'});
    doc["model"]["ignore_merges"] = true;
    CHECK(tiny::load(doc).encode("abab") == ids{299});
    CHECK(tiny::load(doc).encode("abba") == ids{260, 'b', 'a'});
}

TEST_CASE("tokenizer: decode(encode(text)) == text for varied UTF-8") {
    const auto tok = tiny::load(tiny::tokenizer_json());
    const std::vector<std::string> texts = {
        "The quick brown fox jumps over the lazy dog.",
        "   leading, trailing and    inner   runs of spaces   ",
        "tabs\tand\t\tnew\nlines\r\n\r\nand\x0b\x0c form feeds\n\n\n",
        "digits 0 12 345 6789 3.14159 1e-10 +42",
        "contractions: don't, I'm, you're, we've, she'll, he'd, it's, 'S 'T",
        "\xE4\xB8\xAD\xE6\x96\x87\xE6\xB5\x8B\xE8\xAF\x95 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E",  // 中文测试 日本語
        "emoji \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD family \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9",
        "combining e\xCC\x81 a\xCC\x80\xCC\x81 n\xCC\x83",
        "RTL \xD7\xA9\xD7\x9C\xD7\x95\xD7\x9D \xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7 \xD9\xA1\xD9\xA2\xD9\xA3",
        "NBSP\xC2\xA0" "ideographic\xE3\x80\x80space\xE2\x80\xA8line sep",
        "<|endoftext|>special<|pad|> in text<|endoftext|>",
        "\x01\x02 controls \x7f and U+10FFFF \xF4\x8F\xBF\xBF",
        "",
    };
    for (const auto& t : texts) {
        CAPTURE(t);
        CHECK(tok.decode(tok.encode(t)) == t);
    }
    CHECK(tok.decode(tok.encode("<|endoftext|>the<|pad|>"), /*skip_special_tokens=*/true) == "the");
}

TEST_CASE("tokenizer: decode replaces ill-formed UTF-8 as String::from_utf8_lossy does") {
    const auto tok = tiny::load(tiny::tokenizer_json());
    const std::string fffd = "\xEF\xBF\xBD";
    CHECK(tok.decode(ids{0xE4}) == fffd);
    CHECK(tok.decode(ids{0xE4, 'a'}) == fffd + "a");
    CHECK(tok.decode(ids{264}) == fffd);                 // E4 B8: one maximal subpart
    CHECK(tok.decode(ids{0xF0, 0x9F, 0x98}) == fffd);
    CHECK(tok.decode(ids{0x80, 0x80}) == fffd + fffd);   // lone continuation bytes: one each
    CHECK(tok.decode(ids{0xC0, 0xAF}) == fffd + fffd);   // an overlong form is no prefix
    CHECK(tok.decode(ids{0xED, 0xA0, 0x80}) == fffd + fffd + fffd);  // a surrogate
}

}  // namespace test_text_tokenizer
