#pragma once
// Strict parsing of the program's integer flags: every integer value on the command line goes
// through parse_integer or parse_integer_list, so no flag accepts what another refuses. Decimal
// digits only (a leading '-' only where the range has negative values): no hex or octal, no '+',
// no spaces, no fractions or exponents, no silent saturation; a value outside [lo, hi] is an error
// that names the flag, the value as given (escaped) and the range.
#include <charconv>
#include <concepts>
#include <cstdio>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "transmamba/core/error.hpp"

namespace transmamba::cli {

// `text` quoted for a one-line message: quotes and backslashes escaped, control and non-ASCII
// bytes as \xNN, long values cut.
inline std::string quoted(std::string_view text) {
    constexpr std::size_t most = 64;
    std::string s = "'";
    for (std::size_t i = 0; i < text.size() && i < most; ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c == '\'' || c == '\\') {
            s += '\\';
            s += static_cast<char>(c);
        } else if (c < 0x20 || c >= 0x7f) {
            char hex[5];
            std::snprintf(hex, sizeof(hex), "\\x%02x", c);
            s += hex;
        } else {
            s += static_cast<char>(c);
        }
    }
    if (text.size() > most) s += "...";
    return s + "'";
}

namespace cli_detail {

// Parses `text` into `value`; returns what is wrong with it, or nullptr.
template <std::integral T>
const char* integer_problem(std::string_view text, T lo, T hi, T& value) {
    if (text.empty()) return "empty value";
    const bool negative = text.front() == '-';
    const std::string_view digits = negative ? text.substr(1) : text;
    bool decimal = !digits.empty();
    for (char c : digits) decimal = decimal && c >= '0' && c <= '9';
    if (!decimal) return "not a decimal integer";
    if (negative && lo >= 0) return "negative value";
    // Only digits and at most a leading '-' are left, which from_chars reads whole or reports out of range.
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc::result_out_of_range || (ec == std::errc{} && (value < lo || value > hi))) return "out of range";
    if (ec != std::errc{} || end != text.data() + text.size()) return "not a decimal integer";
    return nullptr;
}

}  // namespace cli_detail

// One integer value of `flag` in [lo, hi].
template <std::integral T>
T parse_integer(std::string_view flag, std::string_view text, T lo, T hi) {
    T value{};
    if (const char* problem = cli_detail::integer_problem(text, lo, hi, value))
        fail(flag, " ", quoted(text), ": ", problem, "; expected a decimal integer in [", +lo, ", ", +hi, "]");
    return value;
}

// A comma-separated list of integers of `flag`, each in [lo, hi]: at least one item, no empty item
// ("1,,3", "1," and "" are errors, not a shorter list).
template <std::integral T>
std::vector<T> parse_integer_list(std::string_view flag, std::string_view text, T lo, T hi) {
    const auto bad = [&](auto... parts) {
        fail(flag, " ", quoted(text), ": ", parts..., "; expected decimal integers in [", +lo, ", ", +hi,
             "] separated by commas");
    };
    if (text.empty()) bad("empty list");
    std::vector<T> values;
    std::size_t start = 0;
    for (std::size_t item = 1;; ++item) {
        const std::size_t comma = text.find(',', start);
        const std::string_view part = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
        T value{};
        if (part.empty()) bad("item ", item, " is empty");
        if (const char* problem = cli_detail::integer_problem(part, lo, hi, value)) bad("item ", item, " ", quoted(part), ": ", problem);
        values.push_back(value);
        if (comma == std::string_view::npos) break;
        start = comma + 1;
    }
    return values;
}

}  // namespace transmamba::cli
