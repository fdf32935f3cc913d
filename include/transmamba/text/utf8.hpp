#pragma once
// UTF-8 decoding and encoding, strict (RFC 3629: no overlong forms, no surrogates, nothing above
// U+10FFFF). Invalid input is either refused with the byte offset (encode: tokenizers itself only
// ever sees valid strings) or replaced the way Rust's String::from_utf8_lossy does it, which is what
// the `tokenizers` library's ByteLevel decoder calls: each maximal ill-formed subpart (the longest
// prefix of a valid sequence, or else one byte) becomes one U+FFFD (Unicode 15, section 3.9,
// "U+FFFD Substitution of Maximal Subparts").
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "transmamba/core/error.hpp"

namespace transmamba::text::utf8 {

inline constexpr char32_t replacement_character = 0xFFFD;

// What decode_one found at a position.
struct decoded {
    enum class kind : unsigned char { valid, invalid, truncated } status;
    char32_t cp;       // valid only
    std::size_t size;  // bytes taken: the sequence (valid), the maximal ill-formed subpart (invalid)
                       // or every byte that is left, all a valid prefix (truncated)
};

// The range of the second byte given the lead byte (the Unicode table of well-formed sequences);
// every later continuation byte is 0x80..0xBF.
constexpr bool second_byte_ok(unsigned char lead, unsigned char b) {
    switch (lead) {
        case 0xE0: return b >= 0xA0 && b <= 0xBF;
        case 0xED: return b >= 0x80 && b <= 0x9F;
        case 0xF0: return b >= 0x90 && b <= 0xBF;
        case 0xF4: return b >= 0x80 && b <= 0x8F;
        default: return b >= 0x80 && b <= 0xBF;
    }
}

constexpr std::size_t sequence_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;  // a continuation byte, C0/C1 (always overlong) or F5..FF
}

// Decodes the sequence starting at bytes[pos] (pos < bytes.size()).
constexpr decoded decode_one(std::string_view bytes, std::size_t pos) {
    const auto lead = static_cast<unsigned char>(bytes[pos]);
    const std::size_t need = sequence_length(lead);
    if (need == 1) return {decoded::kind::valid, lead, 1};
    if (need == 0) return {decoded::kind::invalid, 0, 1};
    char32_t cp = lead & (need == 2 ? 0x1F : need == 3 ? 0x0F : 0x07);
    for (std::size_t i = 1; i < need; ++i) {
        if (pos + i >= bytes.size()) return {decoded::kind::truncated, 0, i};
        const auto b = static_cast<unsigned char>(bytes[pos + i]);
        const bool ok = i == 1 ? second_byte_ok(lead, b) : (b >= 0x80 && b <= 0xBF);
        if (!ok) return {decoded::kind::invalid, 0, i};
        cp = (cp << 6) | (b & 0x3F);
    }
    return {decoded::kind::valid, cp, need};
}

inline void append(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

// The code points of valid UTF-8; `what` names the text in the error for an invalid byte.
inline std::u32string decode_strict(std::string_view bytes, std::string_view what) {
    std::u32string out;
    out.reserve(bytes.size());
    for (std::size_t pos = 0; pos < bytes.size();) {
        const decoded d = decode_one(bytes, pos);
        if (d.status != decoded::kind::valid) {
            fail(what, ": invalid UTF-8 at byte ", pos, " (byte 0x", std::hex,
                 static_cast<unsigned>(static_cast<unsigned char>(bytes[pos])), std::dec,
                 d.status == decoded::kind::truncated ? ", a sequence cut off at the end" : "",
                 "); only valid UTF-8 text can be encoded");
        }
        out.push_back(d.cp);
        pos += d.size;
    }
    return out;
}

inline std::string encode(std::u32string_view cps) {
    std::string out;
    out.reserve(cps.size());
    for (char32_t cp : cps) append(out, cp);
    return out;
}

// Appends the valid UTF-8 of `bytes` to `out`, each maximal ill-formed subpart as U+FFFD, as
// String::from_utf8_lossy does. With keep_truncated_tail, a valid but incomplete sequence at the
// end is not replaced: its length is returned, for the caller to keep until more bytes come (the
// streaming decoder); otherwise the return value is 0.
inline std::size_t append_lossy(std::string& out, std::string_view bytes, bool keep_truncated_tail = false) {
    for (std::size_t pos = 0; pos < bytes.size();) {
        const decoded d = decode_one(bytes, pos);
        if (d.status == decoded::kind::valid) {
            out.append(bytes.substr(pos, d.size));
        } else if (d.status == decoded::kind::truncated && keep_truncated_tail) {
            return d.size;
        } else {
            append(out, replacement_character);
        }
        pos += d.size;
    }
    return 0;
}

inline std::string lossy(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size());
    append_lossy(out, bytes);
    return out;
}

}  // namespace transmamba::text::utf8
