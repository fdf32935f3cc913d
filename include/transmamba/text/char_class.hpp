#pragma once
// The three Unicode classes the GPT-2 / GPT-NeoX pre-tokenizer regex asks about: \p{L}, \p{N} and
// \s. A binary search over the generated ranges (unicode_tables.hpp), ASCII answered directly
// since almost all text is ASCII.
#include <algorithm>

#include "transmamba/text/unicode_tables.hpp"

namespace transmamba::text {

using tables::char_class;

constexpr char_class classify(char32_t cp) {
    if (cp < 0x80) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return char_class::letter;
        if (cp >= '0' && cp <= '9') return char_class::number;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return char_class::whitespace;
        return char_class::other;
    }
    const auto& ranges = tables::class_ranges;
    const auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                                     [](char32_t c, const tables::class_range& r) { return c < r.first; });
    if (it == ranges.begin()) return char_class::other;
    const auto& r = *(it - 1);
    return cp <= r.last ? r.cls : char_class::other;
}

constexpr bool is_letter(char32_t cp) { return classify(cp) == char_class::letter; }
constexpr bool is_number(char32_t cp) { return classify(cp) == char_class::number; }
constexpr bool is_whitespace(char32_t cp) { return classify(cp) == char_class::whitespace; }

}  // namespace transmamba::text
