#pragma once
// The added tokens of a tokenizer.json ("added_tokens": special tokens such as <|endoftext|>, and
// GPT-NeoX's runs of spaces): found in the text before any pre-tokenization, each match becoming
// its token's id directly. Matching is leftmost-longest (at the earliest position where any token
// occurs, the longest token there), as the tokenizers library's Aho-Corasick automaton does.
// Tokens with "normalized": false are matched in the raw text first; those with "normalized": true
// afterwards, in the normalized (e.g. NFC) text of the pieces between the first kind.
// lstrip / rstrip take the whitespace (White_Space) before / after a match into it.
#include <algorithm>
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "transmamba/text/bpe.hpp"
#include "transmamba/text/char_class.hpp"
#include "transmamba/text/utf8.hpp"

namespace transmamba::text {

struct added_token {
    token_id id = 0;
    std::string content;
    bool special = false;
    bool normalized = false;
    bool lstrip = false;
    bool rstrip = false;
};

// A piece of the text: either a matched added token (id set) or text still to be tokenized.
struct text_segment {
    std::string text;
    std::optional<token_id> id;
};

class added_token_matcher {
public:
    added_token_matcher() = default;
    // The tokens to match; empty contents never match.
    explicit added_token_matcher(std::vector<added_token> tokens) : tokens_(std::move(tokens)) {
        std::erase_if(tokens_, [](const added_token& t) { return t.content.empty(); });
        // Longest first, so the first hit at a position is the longest one there.
        std::stable_sort(tokens_.begin(), tokens_.end(),
                         [](const added_token& a, const added_token& b) { return a.content.size() > b.content.size(); });
        for (std::size_t i = 0; i < tokens_.size(); ++i) {
            by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(i);
        }
    }

    bool empty() const { return tokens_.empty(); }

    // Splits `text` at the matches; appends to `out`, dropping empty pieces.
    void split(std::string_view text, std::vector<text_segment>& out) const {
        std::size_t done = 0;  // text[..done) is in `out`
        for (std::size_t pos = 0; pos < text.size();) {
            const added_token* hit = nullptr;
            for (std::size_t i : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
                if (text.substr(pos).starts_with(tokens_[i].content)) {
                    hit = &tokens_[i];
                    break;
                }
            }
            if (hit == nullptr) {
                ++pos;
                continue;
            }
            std::size_t start = pos, stop = pos + hit->content.size();
            if (hit->lstrip) start = std::max(done, whitespace_start_before(text, start));
            if (hit->rstrip) stop = whitespace_end_after(text, stop);
            if (done < start) out.push_back({std::string(text.substr(done, start - done)), std::nullopt});
            out.push_back({std::string(text.substr(start, stop - start)), hit->id});
            done = pos = stop;
        }
        if (done < text.size()) out.push_back({std::string(text.substr(done)), std::nullopt});
    }

private:
    // The start of the whitespace run that ends at `end` (text is valid UTF-8).
    static std::size_t whitespace_start_before(std::string_view text, std::size_t end) {
        std::size_t start = end;
        while (start > 0) {
            std::size_t lead = start - 1;
            while (lead > 0 && (static_cast<unsigned char>(text[lead]) & 0xC0) == 0x80) --lead;
            if (!is_whitespace(utf8::decode_one(text, lead).cp)) break;
            start = lead;
        }
        return start;
    }
    static std::size_t whitespace_end_after(std::string_view text, std::size_t begin) {
        std::size_t end = begin;
        while (end < text.size()) {
            const auto d = utf8::decode_one(text, end);
            if (!is_whitespace(d.cp)) break;
            end += d.size;
        }
        return end;
    }

    std::vector<added_token> tokens_;
    std::array<std::vector<std::size_t>, 256> by_first_byte_;
};

}  // namespace transmamba::text
