// text/stream_decoder.hpp: a character split across tokens comes out whole, once its last byte is
// there, and the stream's text is decode()'s.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <transmamba/text/stream_decoder.hpp>

#include "text/tiny_tokenizer.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_text_stream_decoder {

using namespace transmamba;
using text::token_id;

namespace {

std::vector<std::string> pieces_of(const text::tokenizer& tok, const std::vector<token_id>& ids, bool skip = false) {
    text::stream_decoder stream(tok, skip);
    std::vector<std::string> out;
    for (token_id id : ids) out.push_back(stream.push(id));
    out.push_back(stream.finish());
    return out;
}

std::string joined(const std::vector<std::string>& parts) {
    std::string s;
    for (const auto& p : parts) s += p;
    return s;
}

}  // namespace

TEST_CASE("stream_decoder: a multi-byte character is printed when it is complete") {
    const auto tok = tiny::load(tiny::tokenizer_json());
    // 中 is E4 B8 (token 264) + AD: nothing after the first token, the character after the second.
    CHECK(pieces_of(tok, {'a', 264, 0xAD, 'b'}) == std::vector<std::string>{"a", "", "\xE4\xB8\xAD", "b", ""});
    // 😀 = F0 9F 98 80, one byte token each.
    text::stream_decoder stream(tok);
    CHECK(stream.push(0xF0).empty());
    CHECK(stream.push(0x9F).empty());
    CHECK(stream.push(0x98).empty());
    CHECK(stream.pending_bytes() == 3);
    CHECK(stream.push(0x80) == "\xF0\x9F\x98\x80");
    CHECK(stream.pending_bytes() == 0);
}

TEST_CASE("stream_decoder: ill-formed bytes become U+FFFD where decode() puts them") {
    const auto tok = tiny::load(tiny::tokenizer_json());
    const std::string fffd = "\xEF\xBF\xBD";
    CHECK(pieces_of(tok, {0xE4, 'a'}) == std::vector<std::string>{"", fffd + "a", ""});
    CHECK(pieces_of(tok, {0xF0, 0x9F}) == std::vector<std::string>{"", "", fffd});  // cut off at the end
    CHECK(pieces_of(tok, {0x80}) == std::vector<std::string>{fffd, ""});
    CHECK(pieces_of(tok, {300, 't', 257}, /*skip=*/true) == std::vector<std::string>{"", "t", "he", ""});
    text::stream_decoder stream(tok);
    CHECK_THROWS_WITH_AS(stream.push(280), doctest::Contains("id 280 is not in the vocabulary"), error);
}

TEST_CASE("stream_decoder: the streamed text of encode(text) is text, for varied UTF-8") {
    const auto tok = tiny::load(tiny::tokenizer_json());
    for (const std::string t : {"plain ascii, the end", "\xE4\xB8\xAD\xE6\x96\x87 \xE4\xB8\xAD", "\xF0\x9F\x98\x80\xF0\x9F\x91\x8D!",
                                "e\xCC\x81\xCC\x81 \xD7\xA9\xD7\x9C", "<|endoftext|>\xE4\xB8\xAD<|pad|>"}) {
        CAPTURE(t);
        const auto ids = tok.encode(t);
        const auto parts = pieces_of(tok, ids);
        CHECK(joined(parts) == t);
        CHECK(joined(parts) == tok.decode(ids));
        for (const auto& p : parts) CHECK(text::utf8::lossy(p) == p);  // every piece is whole characters
    }
}

}  // namespace test_text_stream_decoder
