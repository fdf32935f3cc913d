// text/char_class.hpp and text/gpt2_split.hpp: the Unicode classes of the GPT-2 regex and the
// hand-written matcher of 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+.
// (While writing it, the matcher agreed with Python's `regex` module, \s spelled as Oniguruma's,
// on 40,000 random strings; these cases pin each alternative.)
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <transmamba/text/char_class.hpp>
#include <transmamba/text/gpt2_split.hpp>
#include <transmamba/text/utf8.hpp>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_text_gpt2_split {

using namespace transmamba::text;

namespace {

std::vector<std::string> split(const std::string& s) {
    const auto cps = utf8::decode_strict(s, "s");
    std::vector<std::string> out;
    for (const auto& [b, e] : gpt2_split(cps)) out.push_back(utf8::encode(cps.substr(b, e - b)));
    return out;
}

using pieces = std::vector<std::string>;

}  // namespace

TEST_CASE("char_class: letters, numbers and Oniguruma's whitespace") {
    CHECK(classify(U'a') == char_class::letter);
    CHECK(classify(0x4E2D) == char_class::letter);   // 中 (Lo)
    CHECK(classify(0x05E9) == char_class::letter);   // ש
    CHECK(classify(0x02B0) == char_class::letter);   // ʰ (Lm)
    CHECK(classify(0x0301) == char_class::other);    // a combining mark is not \p{L}
    CHECK(classify(U'7') == char_class::number);
    CHECK(classify(0x0663) == char_class::number);   // Arabic-Indic 3 (Nd)
    CHECK(classify(0x00BD) == char_class::number);   // ½ (No)
    CHECK(classify(0x2167) == char_class::number);   // Ⅷ (Nl)
    for (char32_t ws : {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000}) {
        CAPTURE(std::uint32_t(ws));
        CHECK(classify(ws) == char_class::whitespace);
    }
    // Python's isspace() also says yes to U+001C..U+001F; Oniguruma's \s does not.
    CHECK(classify(0x1C) == char_class::other);
    CHECK(classify(0x200B) == char_class::other);    // zero width space is Cf
    CHECK(classify(0x1F600) == char_class::other);   // 😀
    CHECK(classify(0x10FFFF) == char_class::other);
}

TEST_CASE("gpt2_split: each alternative of the regex") {
    CHECK(split("it's we're I've I'm we'll he'd don't") ==
          pieces{"it", "'s", " we", "'re", " I", "'ve", " I", "'m", " we", "'ll", " he", "'d", " don", "'t"});
    CHECK(split("'S 'x") == pieces{"'", "S", " '", "x"});             // contractions are lower case only
    CHECK(split("x!'s") == pieces{"x", "!'", "s"});                   // a run of other takes the apostrophe
    CHECK(split("Hello world123 4.5") == pieces{"Hello", " world", "123", " 4", ".", "5"});
    CHECK(split("a  b") == pieces{"a", " ", " b"});
    CHECK(split("a   b") == pieces{"a", "  ", " b"});
    CHECK(split("a \n b") == pieces{"a", " \n", " b"});
    CHECK(split("a\nb") == pieces{"a", "\n", "b"});                   // a lone \n before a letter: \s+
    CHECK(split("a\n\nb") == pieces{"a", "\n", "\n", "b"});
    CHECK(split("end  ") == pieces{"end", "  "});                     // whole run at the end
    CHECK(split(" ") == pieces{" "});
    CHECK(split("  !!? x") == pieces{" ", " !!?", " x"});
    CHECK(split("\t\tx") == pieces{"\t", "\t", "x"});
    CHECK(split("\xC2\xA0x") == pieces{"\xC2\xA0", "x"});            // NBSP is \s but not the optional space
    CHECK(split("\xE4\xB8\xAD\xE6\x96\x87 \xE4\xB8\xAD") == pieces{"\xE4\xB8\xAD\xE6\x96\x87", " \xE4\xB8\xAD"});
    CHECK(split("e\xCC\x81t\xC3\xA9") == pieces{"e", "\xCC\x81", "t\xC3\xA9"});  // U+0301 is other
    CHECK(split("\xF0\x9F\x98\x80\xF0\x9F\x98\x80 \xF0\x9F\x98\x80") == pieces{"\xF0\x9F\x98\x80\xF0\x9F\x98\x80", " \xF0\x9F\x98\x80"});
    CHECK(split("") == pieces{});
}

}  // namespace test_text_gpt2_split
