#pragma once
// The BPE model of a byte-level tokenizer: a word (the bytes of one pre-tokenizer piece) starts as
// one symbol per byte, and merges are applied lowest rank first (rank = position in the merges
// list), equal ranks leftmost first, one occurrence at a time, re-checking each queued pair against
// the current symbols. That is the `tokenizers` library's order (Word::merge_all), which can differ
// from "merge every occurrence of the best pair" when merges overlap, so it is followed exactly.
#include <cstdint>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "transmamba/core/error.hpp"
#include "transmamba/text/byte_level.hpp"

namespace transmamba::text {

using token_id = std::int64_t;

class bpe_model {
public:
    struct merge_rule {
        std::uint32_t rank;
        token_id result;
    };

    // vocab: token (in the byte-level alphabet) -> id; merges: pairs of tokens in priority order.
    // `source` names the file in errors. unk: the unk_token's id for a byte whose token is missing.
    bpe_model(std::unordered_map<std::string, token_id> vocab,
              const std::vector<std::pair<std::string, std::string>>& merges, std::optional<token_id> unk,
              bool fuse_unk, bool ignore_merges, std::string_view source)
        : vocab_(std::move(vocab)), unk_(unk), fuse_unk_(fuse_unk), ignore_merges_(ignore_merges) {
        for (unsigned b = 0; b < 256; ++b) {
            std::string spelled;
            utf8::append(spelled, byte_level::byte_to_char[b]);
            const auto it = vocab_.find(spelled);
            byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
        }
        merges_.reserve(merges.size());
        for (std::size_t rank = 0; rank < merges.size(); ++rank) {
            const std::string& a = merges[rank].first;
            const std::string& b = merges[rank].second;
            const auto id_of = [&](const std::string& token) {
                const auto it = vocab_.find(token);
                if (it == vocab_.end()) {
                    fail(source, ": model.merges[", rank, "] = \"", a, " ", b, "\": the token \"", token,
                         "\" is not in model.vocab");
                }
                return it->second;
            };
            // One statement each, so that the first missing token is the one named, on every compiler.
            const token_id left = id_of(a);
            const token_id right = id_of(b);
            const token_id merged = id_of(a + b);
            // A later duplicate replaces an earlier one, as in tokenizers.
            merges_[key(left, right)] = merge_rule{std::uint32_t(rank), merged};
        }
    }

    // Appends the ids of one word (the raw bytes of one pre-tokenizer piece).
    void tokenize(std::string_view word, std::vector<token_id>& out) const {
        if (word.empty()) return;
        if (ignore_merges_) {
            if (const auto it = vocab_.find(byte_level::spell(word)); it != vocab_.end()) {
                out.push_back(it->second);
                return;
            }
        }
        std::vector<symbol> symbols;
        symbols.reserve(word.size());
        for (char c : word) {
            const auto b = static_cast<unsigned char>(c);
            token_id id = byte_ids_[b];
            if (id < 0) {
                if (!unk_) {
                    fail("tokenizer: the byte 0x", std::hex, unsigned(b), std::dec,
                         " has no token in model.vocab (spelled U+", std::hex,
                         std::uint32_t(byte_level::byte_to_char[b]), std::dec,
                         ") and model.unk_token is null; the vocabulary does not cover all 256 bytes");
                }
                if (fuse_unk_ && !symbols.empty() && symbols.back().id == *unk_ && symbols.back().is_unk) continue;
                symbols.push_back(symbol{*unk_, true});
                continue;
            }
            symbols.push_back(symbol{id, false});
        }
        merge_all(symbols);
        for (const auto& s : symbols) {
            if (s.alive) out.push_back(s.id);
        }
    }

    const std::unordered_map<std::string, token_id>& vocab() const { return vocab_; }

private:
    struct symbol {
        token_id id;
        bool is_unk = false;
        bool alive = true;
        std::ptrdiff_t prev = -1, next = -1;
    };
    struct queued_merge {
        std::uint32_t rank;
        std::size_t pos;
        token_id result;
        // std::priority_queue pops the largest: the largest is the lowest rank, then lowest position.
        bool operator<(const queued_merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };

    static std::uint64_t key(token_id a, token_id b) { return (std::uint64_t(a) << 32) | std::uint64_t(b); }

    const merge_rule* find_merge(token_id a, token_id b) const {
        const auto it = merges_.find(key(a, b));
        return it == merges_.end() ? nullptr : &it->second;
    }

    void merge_all(std::vector<symbol>& symbols) const {
        const std::size_t n = symbols.size();
        for (std::size_t i = 0; i < n; ++i) {
            symbols[i].prev = std::ptrdiff_t(i) - 1;
            symbols[i].next = i + 1 < n ? std::ptrdiff_t(i + 1) : -1;
        }
        std::priority_queue<queued_merge> queue;
        for (std::size_t i = 0; i + 1 < n; ++i) {
            if (const auto* m = find_merge(symbols[i].id, symbols[i + 1].id)) queue.push({m->rank, i, m->result});
        }
        while (!queue.empty()) {
            const queued_merge top = queue.top();
            queue.pop();
            symbol& left = symbols[top.pos];
            if (!left.alive || left.next < 0) continue;
            symbol& right = symbols[std::size_t(left.next)];
            // A stale entry: the pair at this position changed since it was queued.
            const auto* current = find_merge(left.id, right.id);
            if (current == nullptr || current->result != top.result) continue;
            left.id = top.result;
            left.is_unk = false;
            right.alive = false;
            left.next = right.next;
            if (right.next >= 0) symbols[std::size_t(right.next)].prev = std::ptrdiff_t(top.pos);
            if (left.prev >= 0) {
                if (const auto* m = find_merge(symbols[std::size_t(left.prev)].id, left.id)) {
                    queue.push({m->rank, std::size_t(left.prev), m->result});
                }
            }
            if (left.next >= 0) {
                if (const auto* m = find_merge(left.id, symbols[std::size_t(left.next)].id)) {
                    queue.push({m->rank, top.pos, m->result});
                }
            }
        }
    }

    std::unordered_map<std::string, token_id> vocab_;
    std::unordered_map<std::uint64_t, merge_rule> merges_;
    std::array<token_id, 256> byte_ids_{};
    std::optional<token_id> unk_;
    bool fuse_unk_ = false;
    bool ignore_merges_ = false;
};

}  // namespace transmamba::text
