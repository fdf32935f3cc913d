// text/byte_level.hpp: GPT-2's byte alphabet and how the ByteLevel decoder reads a token's bytes.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include <transmamba/text/byte_level.hpp>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_text_byte_level {

using namespace transmamba::text;

TEST_CASE("byte_level: the alphabet is a bijection onto printable code points") {
    std::set<char32_t> seen;
    for (unsigned b = 0; b < 256; ++b) {
        const char32_t c = byte_level::byte_to_char[b];
        CHECK(seen.insert(c).second);
        REQUIRE(byte_level::char_to_byte(c));
        CHECK(*byte_level::char_to_byte(c) == b);
    }
    CHECK(byte_level::byte_to_char[' '] == 0x120);   // Ġ
    CHECK(byte_level::byte_to_char['\n'] == 0x10A);  // Ċ
    CHECK(byte_level::byte_to_char['a'] == U'a');
    CHECK(byte_level::byte_to_char[0xAD] == 0x143);  // the soft hyphen is the last remapped byte
    CHECK(byte_level::byte_to_char[0xE9] == 0xE9);
    CHECK(!byte_level::char_to_byte(0x144));
    CHECK(!byte_level::char_to_byte(U' '));
    CHECK(byte_level::spell(" the\n") == "\xC4\xA0the\xC4\x8A");
}

TEST_CASE("byte_level: a token's bytes, with the raw-UTF-8 fallback of the ByteLevel decoder") {
    std::string out;
    byte_level::append_token_bytes(out, "\xC4\xA0the");  // Ġthe
    CHECK(out == " the");
    out.clear();
    byte_level::append_token_bytes(out, "<|endoftext|>");  // all in the alphabet, as itself
    CHECK(out == "<|endoftext|>");
    out.clear();
    byte_level::append_token_bytes(out, "  ");  // a space is not in the alphabet: the token as it is
    CHECK(out == "  ");
    out.clear();
    byte_level::append_token_bytes(out, "\xE4\xB8\xAD");  // 中 (U+4E2D) is not in the alphabet
    CHECK(out == "\xE4\xB8\xAD");
    out.clear();
    byte_level::append_token_bytes(out, "\xC3\xA9");  // é is: it stands for the byte E9
    CHECK(out == "\xE9");
}

}  // namespace test_text_byte_level
