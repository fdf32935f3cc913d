// text/utf8.hpp: strict decoding with the byte offset in errors, and the U+FFFD replacement of
// String::from_utf8_lossy (one per maximal ill-formed subpart).
#include <doctest/doctest.h>

#include <string>

#include <transmamba/text/utf8.hpp>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_text_utf8 {

using namespace transmamba;
namespace utf8 = transmamba::text::utf8;

TEST_CASE("utf8: decode and encode every kind of sequence") {
    const std::string s = "a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF";
    const std::u32string cps = utf8::decode_strict(s, "s");
    CHECK(cps == std::u32string{U'a', 0xE9, 0x4E2D, 0x1F600, 0x10FFFF});
    CHECK(utf8::encode(cps) == s);
    CHECK(utf8::encode(std::u32string{0x7F, 0x80, 0x7FF, 0x800, 0xFFFF, 0x10000}) ==
          "\x7F\xC2\x80\xDF\xBF\xE0\xA0\x80\xEF\xBF\xBF\xF0\x90\x80\x80");
}

TEST_CASE("utf8: invalid input is refused with its byte offset") {
    CHECK_THROWS_WITH_AS(utf8::decode_strict("ab\xFF", "the text"), doctest::Contains("the text: invalid UTF-8 at byte 2 (byte 0xff)"),
                         error);
    CHECK_THROWS_WITH_AS(utf8::decode_strict("ab\xE4\xB8", "t"), doctest::Contains("a sequence cut off at the end"), error);
    for (const std::string bad : {"\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\x80", "\xE0\x80\x80"}) {
        CAPTURE(bad);
        CHECK_THROWS_AS(utf8::decode_strict(bad, "t"), error);
    }
}

TEST_CASE("utf8: lossy replacement of maximal subparts (Unicode's example, table 3-8)") {
    const std::string r = "\xEF\xBF\xBD";
    // 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 -> a FFFD FFFD FFFD b FFFD c FFFD FFFD d
    CHECK(utf8::lossy("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64") == "a" + r + r + r + "b" + r + "c" + r + r + "d");
    CHECK(utf8::lossy("\xE0\x80\x80") == r + r + r);  // E0 80 is no prefix: three subparts
    CHECK(utf8::lossy("\xF0\x9F\x98") == r);
    CHECK(utf8::lossy("ok") == "ok");
    std::string out;
    CHECK(utf8::append_lossy(out, "x\xF0\x9F", /*keep_truncated_tail=*/true) == 2);
    CHECK(out == "x");
}

}  // namespace test_text_utf8
