#pragma once
// GPT-2's byte-level alphabet: every byte gets a printable code point, so that a BPE vocabulary of
// strings covers all byte sequences. The 188 printable bytes ('!'..'~', U+00A1..U+00AC,
// U+00AE..U+00FF) stand for themselves; the other 68 (controls, space, DEL, U+0080..U+00A0, the
// soft hyphen) take U+0100, U+0101, ... in byte order. So ' ' is 'Ġ' (U+0120) and '\n' is 'Ċ'.
#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "transmamba/text/utf8.hpp"

namespace transmamba::text::byte_level {

constexpr bool stands_for_itself(unsigned b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

// byte -> its code point in the alphabet.
inline constexpr std::array<char32_t, 256> byte_to_char = [] {
    std::array<char32_t, 256> map{};
    char32_t next = 0x100;
    for (unsigned b = 0; b < 256; ++b) map[b] = stands_for_itself(b) ? char32_t(b) : next++;
    return map;
}();

// The 68 remapped code points U+0100..U+0143 -> the byte each stands for.
inline constexpr std::array<unsigned char, 68> remapped_to_byte = [] {
    std::array<unsigned char, 68> map{};
    for (unsigned b = 0; b < 256; ++b) {
        if (!stands_for_itself(b)) map[byte_to_char[b] - 0x100] = static_cast<unsigned char>(b);
    }
    return map;
}();

// The byte a code point of the alphabet stands for; nullopt for any other code point.
constexpr std::optional<unsigned char> char_to_byte(char32_t cp) {
    if (cp < 0x100) {
        if (stands_for_itself(unsigned(cp))) return static_cast<unsigned char>(cp);
        return std::nullopt;
    }
    if (cp < 0x100 + remapped_to_byte.size()) return remapped_to_byte[cp - 0x100];
    return std::nullopt;
}

// The alphabet's spelling of raw bytes (how byte-level tokens are written in vocab and merges).
inline std::string spell(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size() * 2);
    for (char c : bytes) utf8::append(out, byte_to_char[static_cast<unsigned char>(c)]);
    return out;
}

// The bytes a token stands for, as the tokenizers ByteLevel decoder reads them: the alphabet's
// bytes when every character of the token is in the alphabet, else the token's own UTF-8 (an added
// token such as "<|endoftext|>" is all alphabet; one with a space or a character above U+0143 is
// not). Appends to `out`.
inline void append_token_bytes(std::string& out, std::string_view token) {
    std::string bytes;
    bytes.reserve(token.size());
    for (std::size_t pos = 0; pos < token.size();) {
        const auto d = utf8::decode_one(token, pos);
        const auto b = d.status == utf8::decoded::kind::valid ? char_to_byte(d.cp) : std::nullopt;
        if (!b) {
            out.append(token);
            return;
        }
        bytes.push_back(static_cast<char>(*b));
        pos += d.size;
    }
    out.append(bytes);
}

}  // namespace transmamba::text::byte_level
