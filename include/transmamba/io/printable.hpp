#pragma once
// Bytes from a file, made safe to quote in an error message. A corrupt header or config can hold
// anything: invalid UTF-8, control characters (a JSON "\u001b" in a tensor name is an ANSI escape
// once decoded), megabytes of text. Every piece of file content that goes into a message passes
// through printable(): bytes outside 0x20..0x7e become \xNN, a backslash becomes \\ (so that \xNN
// is never ambiguous), and the text is cut after `max_bytes` input bytes with the full length said.
#include <cstddef>
#include <string>
#include <string_view>

namespace transmamba {

// Room for a long tensor name or a JSON parser's message; a header of megabytes is not a message.
inline constexpr std::size_t printable_default_max_bytes = 200;

inline std::string printable(std::string_view bytes, std::size_t max_bytes = printable_default_max_bytes) {
    constexpr char hex[] = "0123456789abcdef";
    const std::string_view shown = bytes.substr(0, max_bytes);
    std::string out;
    out.reserve(shown.size() + 16);
    for (const char c : shown) {
        const auto b = static_cast<unsigned char>(c);
        if (b == '\\') {
            out += "\\\\";
        } else if (b >= 0x20 && b <= 0x7e) {
            out += c;
        } else {
            out += "\\x";
            out += hex[b >> 4];
            out += hex[b & 0xf];
        }
    }
    if (shown.size() < bytes.size()) out.append("... (").append(std::to_string(bytes.size())).append(" bytes)");
    return out;
}

}  // namespace transmamba
