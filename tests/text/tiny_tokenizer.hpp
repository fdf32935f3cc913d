#pragma once
// A tokenizer.json small enough to reason about by hand, built as JSON so that each test can change
// one field. The vocabulary is the 256 byte tokens, id = the byte's value (so an unmerged byte's id
// is the byte), then merged tokens from 256 on, and two special added tokens:
//   256 "Ġt"   = Ġ + t        rank 0        261 "ll"   = l + l   rank 5
//   257 "he"   = h + e        rank 1        262 "ĠĠ"   = Ġ + Ġ   rank 6
//   258 "Ġthe" = Ġt + he      rank 2        263 "ĊĊ"   = Ċ + Ċ   rank 7
//   259 "aba"  = ab + a       rank 3        264 E4 B8 (the first two bytes of 中) rank 8
//   260 "ab"   = a + b        rank 4        300 <|endoftext|>, 301 <|pad|>: special, not normalized
// Rank 3 before rank 4 is on purpose: "abab" tells the tokenizers library's merge order (one pair
// at a time, lowest rank first) from "merge every occurrence of the best pair".
#include <string>

#include <nlohmann/json.hpp>

#include <transmamba/text/byte_level.hpp>
#include <transmamba/text/tokenizer.hpp>

namespace tiny {

inline std::string spelled(std::string_view bytes) { return transmamba::text::byte_level::spell(bytes); }

inline nlohmann::json tokenizer_json() {
    using nlohmann::json;
    json vocab = json::object();
    for (unsigned b = 0; b < 256; ++b) vocab[spelled(std::string(1, char(b)))] = b;
    const std::pair<std::string, std::string> merges[] = {
        {spelled(" "), "t"}, {"h", "e"},   {spelled(" t"), "he"}, {"ab", "a"},
        {"a", "b"},          {"l", "l"},   {spelled(" "), spelled(" ")}, {spelled("\n"), spelled("\n")},
        {spelled("\xE4"), spelled("\xB8")}};
    json merge_list = json::array();
    int next = 256;
    for (const auto& [a, b] : merges) {
        vocab[a + b] = next++;
        merge_list.push_back(a + " " + b);
    }
    json doc = {
        {"version", "1.0"},
        {"truncation", nullptr},
        {"padding", nullptr},
        {"added_tokens",
         json::array({
             {{"id", 300}, {"content", "<|endoftext|>"}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
              {"normalized", false}, {"special", true}},
             {{"id", 301}, {"content", "<|pad|>"}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
              {"normalized", false}, {"special", true}},
         })},
        {"normalizer", nullptr},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
        {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
        {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
        {"model",
         {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
          {"vocab", vocab}, {"merges", merge_list}}},
    };
    return doc;
}

inline transmamba::text::tokenizer load(const nlohmann::json& doc) {
    return transmamba::text::tokenizer::from_json(doc.dump(), "tiny/tokenizer.json");
}

}  // namespace tiny
