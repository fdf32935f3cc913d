#pragma once
// The GPT-2 pre-tokenizer regex, which GPT-NeoX's ByteLevel pre-tokenizer also uses, written out
// by hand (no regex engine is a dependency):
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// Matches are taken left to right, each the first alternative that matches at the position (the
// regex's ordered alternation with greedy quantifiers); every character is a letter, a number,
// whitespace or other, so the matches tile the text. The optional prefix is U+0020 only; \s is
// Oniguruma's (tokenizers' regex engine): U+0009..U+000D, U+0085, Zs, Zl, Zp.
// `\s+(?!\S)` is a whitespace run that does not end right before a non-space: the whole run at the
// end of the text, else the run less its last character (which then starts the next match, as
// " word" or alone), and nothing for a run of one that precedes a non-space.
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "transmamba/text/char_class.hpp"

namespace transmamba::text {

// [begin, end) code-point offsets of the pieces of `text`.
inline std::vector<std::pair<std::size_t, std::size_t>> gpt2_split(std::u32string_view text) {
    std::vector<std::pair<std::size_t, std::size_t>> pieces;
    const std::size_t n = text.size();
    std::vector<char_class> cls(n);
    for (std::size_t i = 0; i < n; ++i) cls[i] = classify(text[i]);
    const auto run_of = [&](std::size_t from, auto&& in_class) {
        std::size_t j = from;
        while (j < n && in_class(cls[j])) ++j;
        return j;
    };
    const auto is = [](char_class c) { return [c](char_class x) { return x == c; }; };
    // The contraction suffix at i (an apostrophe), or 0.
    const auto contraction = [&](std::size_t i) -> std::size_t {
        if (text[i] != U'\'' || i + 1 >= n) return 0;
        const char32_t a = text[i + 1];
        if (a == U's' || a == U't' || a == U'm' || a == U'd') return 2;
        if (i + 2 < n) {
            const char32_t b = text[i + 2];
            if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) return 3;
        }
        return 0;
    };
    for (std::size_t i = 0; i < n;) {
        std::size_t end = i;
        if (const std::size_t c = contraction(i); c != 0) {
            end = i + c;
        } else {
            // " ?X+" for X in letter, number, other: the optional space, then a non-empty run.
            const std::size_t body = (text[i] == U' ' && i + 1 < n) ? i + 1 : i;
            const char_class head = cls[body];
            if (head != char_class::whitespace) {
                end = run_of(body, is(head));
            } else {  // body is whitespace, so text[i] is too
                const std::size_t run_end = run_of(i, is(char_class::whitespace));
                if (run_end == n) {
                    end = n;  // \s+(?!\S) at the end of the text
                } else if (run_end - i >= 2) {
                    end = run_end - 1;  // \s+(?!\S): leave the last space to the next piece
                } else {
                    end = run_end;  // \s+: a lone whitespace character before a non-space
                }
            }
        }
        pieces.emplace_back(i, end);
        i = end;
    }
    return pieces;
}

}  // namespace transmamba::text
