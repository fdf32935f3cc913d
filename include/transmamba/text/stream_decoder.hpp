#pragma once
// Text as a model generates it: push() one id at a time and get the text that is complete so far.
// A UTF-8 character whose bytes come in several tokens (byte-level BPE splits rare characters,
// emoji, CJK into byte tokens) is held back until its last byte arrives; finish() flushes what is
// left. The concatenation of everything returned equals tokenizer::decode of all ids: ill-formed
// bytes become U+FFFD exactly where decode puts them, since that replacement only looks forward.
#include <string>

#include "transmamba/text/tokenizer.hpp"
#include "transmamba/text/utf8.hpp"

namespace transmamba::text {

class stream_decoder {
public:
    // Keeps a pointer to `tok`, which must outlive the decoder.
    explicit stream_decoder(const tokenizer& tok, bool skip_special_tokens = false)
        : tokenizer_(&tok), skip_special_tokens_(skip_special_tokens) {}

    // The text that `id` completes (possibly empty).
    std::string push(token_id id) {
        tokenizer_->append_bytes(pending_, id, skip_special_tokens_);
        std::string text;
        const std::size_t kept = utf8::append_lossy(text, pending_, /*keep_truncated_tail=*/true);
        pending_.erase(0, pending_.size() - kept);
        return text;
    }

    // The bytes still held (a character cut off), each ill-formed part as U+FFFD; the decoder is
    // then empty and can go on with a new text.
    std::string finish() {
        std::string text = utf8::lossy(pending_);
        pending_.clear();
        return text;
    }

    // Bytes of an incomplete character waiting for the next token.
    std::size_t pending_bytes() const { return pending_.size(); }

private:
    const tokenizer* tokenizer_;
    bool skip_special_tokens_;
    std::string pending_;
};

}  // namespace transmamba::text
