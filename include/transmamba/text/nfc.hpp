#pragma once
// Unicode Normalization Form C (UAX #15): full canonical decomposition, canonical ordering of
// combining marks, canonical composition. The `normalizer: {"type": "NFC"}` of GPT-NeoX's
// tokenizer.json (the tokenizer of the Mamba2 models). Data from nfc_tables.hpp (generated from
// Python's unicodedata); Hangul syllables are composed and decomposed arithmetically (UAX #15,
// section 3.12 of the Unicode standard).
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "transmamba/text/nfc_tables.hpp"
#include "transmamba/text/utf8.hpp"

namespace transmamba::text {

namespace hangul {
inline constexpr char32_t s_base = 0xAC00, l_base = 0x1100, v_base = 0x1161, t_base = 0x11A7;
inline constexpr char32_t l_count = 19, v_count = 21, t_count = 28;
inline constexpr char32_t n_count = v_count * t_count, s_count = l_count * n_count;
}  // namespace hangul

constexpr std::uint8_t combining_class(char32_t cp) {
    if (cp < 0x300) return 0;
    const auto& ranges = tables::combining_classes;
    const auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                                     [](char32_t c, const tables::combining_class_range& r) { return c < r.first; });
    if (it == ranges.begin()) return 0;
    const auto& r = *(it - 1);
    return cp <= r.last ? r.ccc : 0;
}

inline const tables::canonical_decomposition* find_decomposition(char32_t cp) {
    const auto& table = tables::canonical_decompositions;
    const auto it = std::lower_bound(table.begin(), table.end(), cp,
                                     [](const tables::canonical_decomposition& d, char32_t c) { return d.cp < c; });
    return it != table.end() && it->cp == cp ? &*it : nullptr;
}

inline void append_canonical_decomposition(std::u32string& out, char32_t cp) {
    if (cp >= hangul::s_base && cp < hangul::s_base + hangul::s_count) {
        const char32_t s = cp - hangul::s_base;
        out.push_back(hangul::l_base + s / hangul::n_count);
        out.push_back(hangul::v_base + (s % hangul::n_count) / hangul::t_count);
        if (s % hangul::t_count != 0) out.push_back(hangul::t_base + s % hangul::t_count);
        return;
    }
    if (cp < 0xC0) {  // nothing below U+00C0 decomposes
        out.push_back(cp);
        return;
    }
    const auto* d = find_decomposition(cp);
    if (d == nullptr) {
        out.push_back(cp);
        return;
    }
    append_canonical_decomposition(out, d->first);
    if (d->second != 0) append_canonical_decomposition(out, d->second);
}

// The primary composite of (first, second), or 0.
inline char32_t compose_pair(char32_t first, char32_t second) {
    if (first >= hangul::l_base && first < hangul::l_base + hangul::l_count && second >= hangul::v_base &&
        second < hangul::v_base + hangul::v_count) {
        return hangul::s_base + ((first - hangul::l_base) * hangul::v_count + (second - hangul::v_base)) * hangul::t_count;
    }
    if (first >= hangul::s_base && first < hangul::s_base + hangul::s_count && (first - hangul::s_base) % hangul::t_count == 0 &&
        second > hangul::t_base && second < hangul::t_base + hangul::t_count) {
        return first + (second - hangul::t_base);
    }
    static const auto compositions = [] {
        std::unordered_map<std::uint64_t, char32_t> map;
        for (const auto& d : tables::canonical_decompositions) {
            if (d.composes) map.emplace((std::uint64_t(d.first) << 32) | d.second, d.cp);
        }
        return map;
    }();
    const auto it = compositions.find((std::uint64_t(first) << 32) | second);
    return it == compositions.end() ? 0 : it->second;
}

inline std::u32string nfc(std::u32string_view text) {
    // Decompose and put each run of combining marks in canonical order (a stable sort by class).
    std::u32string d;
    d.reserve(text.size());
    for (char32_t cp : text) append_canonical_decomposition(d, cp);
    for (std::size_t i = 0; i < d.size();) {
        if (combining_class(d[i]) == 0) {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < d.size() && combining_class(d[j]) != 0) ++j;
        std::stable_sort(d.begin() + std::ptrdiff_t(i), d.begin() + std::ptrdiff_t(j),
                         [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
        i = j;
    }
    // Compose: a mark joins the last starter unless a mark of the same or a higher class, or a
    // starter, stands between them ("blocked").
    std::u32string out;
    out.reserve(d.size());
    std::ptrdiff_t starter = -1;
    int last_class = -1;  // class of the last character kept; -1: none yet
    for (char32_t cp : d) {
        const int cc = combining_class(cp);
        if (starter >= 0 && (last_class < cc || last_class == 0)) {
            if (char32_t composite = compose_pair(out[std::size_t(starter)], cp); composite != 0) {
                out[std::size_t(starter)] = composite;
                continue;
            }
        }
        if (cc == 0) starter = std::ptrdiff_t(out.size());
        last_class = cc;
        out.push_back(cp);
    }
    return out;
}

inline std::string nfc(std::string_view utf8_text, std::string_view what = "text") {
    return utf8::encode(nfc(utf8::decode_strict(utf8_text, what)));
}

}  // namespace transmamba::text
