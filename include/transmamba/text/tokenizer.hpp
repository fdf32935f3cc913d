#pragma once
// A checkpoint's tokenizer.json (the Hugging Face `tokenizers` format) for byte-level BPE, the
// GPT-2 / GPT-NeoX tokenizer family that the Mamba2 models use. encode() runs the library's
// pipeline: added tokens are split off (non-normalized ones in the raw text, then normalized ones
// in the normalized text), the normalizer (none or NFC), the pre-tokenizer (GPT-2 regex split and
// byte-level alphabet), the BPE model, the post-processor's special tokens. decode() maps ids to
// bytes as the ByteLevel decoder does and turns ill-formed UTF-8 into U+FFFD. Everything else the
// format can express is refused with an error naming the field: docs/text.md lists what is
// supported. encode and decode are const and keep no state, so one tokenizer serves many threads.
// Needs nlohmann-json (target transmamba::io).
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "transmamba/core/error.hpp"
#include "transmamba/text/added_tokens.hpp"
#include "transmamba/text/bpe.hpp"
#include "transmamba/text/byte_level.hpp"
#include "transmamba/text/gpt2_split.hpp"
#include "transmamba/text/nfc.hpp"
#include "transmamba/text/utf8.hpp"

namespace transmamba::text {

// The pattern of GPT-2's pre-tokenizer, the only one a "Split" pre-tokenizer may have.
inline constexpr std::string_view gpt2_pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// One step of the pre-tokenizer: a Split on the GPT-2 pattern, or the ByteLevel pre-tokenizer
// (optionally a space in front of each piece, optionally the same split; then the byte alphabet).
struct pre_tokenizer_step {
    enum class kind : unsigned char { gpt2_split, byte_level } what;
    bool add_prefix_space = false;
    bool use_regex = false;

    bool operator==(const pre_tokenizer_step&) const = default;
};

class tokenizer {
public:
    // A tokenizer.json file, or a checkpoint directory holding one.
    static tokenizer from_file(const std::filesystem::path& path) {
        std::filesystem::path file = path;
        if (std::filesystem::is_directory(file)) file /= "tokenizer.json";
        std::ifstream in(file, std::ios::binary);
        require(bool(in), "tokenizer: cannot open '", file.string(), "'",
                std::filesystem::exists(path) ? "" : " (no such file or directory)");
        std::ostringstream text;
        text << in.rdbuf();
        return from_json(text.str(), file.string());
    }

    // The text of a tokenizer.json; `source` names it in errors.
    static tokenizer from_json(std::string_view json_text, std::string source = "tokenizer.json") {
        nlohmann::json doc;
        try {
            doc = nlohmann::json::parse(json_text);
        } catch (const nlohmann::json::exception& e) {
            fail(source, ": not valid JSON (", e.what(), ")");
        }
        return tokenizer(doc, std::move(source));
    }

    // The ids of `text` (valid UTF-8, else an error naming the byte). add_special_tokens: apply the
    // post-processor's template (e.g. a BOS id), as tokenizers' encode(text) does by default.
    std::vector<token_id> encode(std::string_view text, bool add_special_tokens = true) const {
        (void)utf8::decode_strict(text, "tokenizer: the text to encode");
        std::vector<token_id> ids;
        if (add_special_tokens) ids = prefix_ids_;
        std::vector<text_segment> raw_split;
        if (raw_matcher_.empty()) {
            raw_split.push_back({std::string(text), std::nullopt});
        } else {
            raw_matcher_.split(text, raw_split);
        }
        std::vector<text_segment> segments;
        for (auto& seg : raw_split) {
            if (seg.id) {
                segments.push_back(std::move(seg));
                continue;
            }
            std::string normalized = nfc_ ? nfc(seg.text) : std::move(seg.text);
            if (normalized_matcher_.empty()) {
                if (!normalized.empty()) segments.push_back({std::move(normalized), std::nullopt});
            } else {
                normalized_matcher_.split(normalized, segments);
            }
        }
        for (const auto& seg : segments) {
            if (seg.id) {
                ids.push_back(*seg.id);
                continue;
            }
            for (const auto& word : pre_tokenize(seg.text)) model_->tokenize(word, ids);
        }
        if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
        return ids;
    }

    // The text of `ids`; an id the tokenizer does not know is an error. skip_special_tokens drops
    // the added tokens marked special (tokenizers' decode(ids, skip_special_tokens=True)).
    std::string decode(std::span<const token_id> ids, bool skip_special_tokens = false) const {
        std::string bytes;
        for (token_id id : ids) append_bytes(bytes, id, skip_special_tokens);
        return utf8::lossy(bytes);
    }

    // The raw bytes one token stands for (possibly part of a UTF-8 character), appended to `out`.
    void append_bytes(std::string& out, token_id id, bool skip_special_tokens = false) const {
        if (id < 0 || id >= vocab_size() || !has_token_[std::size_t(id)]) {
            fail("tokenizer: id ", id, " is not in the vocabulary of ", source_, " (ids 0..", vocab_size() - 1,
                 id >= 0 && id < vocab_size() ? ", and this one is unused)" : ")");
        }
        if (skip_special_tokens && is_special_[std::size_t(id)]) return;
        byte_level::append_token_bytes(out, id_to_token_[std::size_t(id)]);
    }

    // The id of a token written as in tokenizer.json (an added token's content, or a vocab entry
    // in the byte-level alphabet, e.g. "Ġthe"); nullopt when there is none.
    std::optional<token_id> token_to_id(std::string_view token) const {
        for (const auto& t : added_) {
            if (t.content == token) return t.id;
        }
        const auto it = model_->vocab().find(std::string(token));
        return it == model_->vocab().end() ? std::nullopt : std::optional<token_id>(it->second);
    }

    // One past the largest id: the rows a model's embedding needs at least.
    token_id vocab_size() const { return token_id(id_to_token_.size()); }
    // Whether `id` stands for a token (ids below vocab_size() may be unused).
    bool contains(token_id id) const { return id >= 0 && id < vocab_size() && has_token_[std::size_t(id)]; }
    bool is_special(token_id id) const { return id >= 0 && id < vocab_size() && is_special_[std::size_t(id)]; }
    const std::vector<added_token>& added_tokens() const { return added_; }
    const std::vector<pre_tokenizer_step>& pre_tokenizer() const { return steps_; }
    bool normalizes_nfc() const { return nfc_; }
    const std::string& source() const { return source_; }

    // The pieces the pre-tokenizer makes of one segment (raw UTF-8 bytes each, before the byte
    // alphabet: the alphabet is a relabelling of bytes the BPE model works on directly).
    std::vector<std::string> pre_tokenize(std::string_view segment) const {
        std::vector<std::u32string> pieces{utf8::decode_strict(segment, "tokenizer: a segment")};
        for (const auto& step : steps_) {
            std::vector<std::u32string> next;
            for (auto& piece : pieces) {
                if (step.what == pre_tokenizer_step::kind::byte_level && step.add_prefix_space &&
                    (piece.empty() || piece.front() != U' ')) {
                    piece.insert(piece.begin(), U' ');
                }
                if (step.what == pre_tokenizer_step::kind::gpt2_split || step.use_regex) {
                    for (const auto& [b, e] : gpt2_split(piece)) next.push_back(piece.substr(b, e - b));
                } else if (!piece.empty()) {
                    next.push_back(std::move(piece));
                }
            }
            pieces = std::move(next);
        }
        std::vector<std::string> words;
        words.reserve(pieces.size());
        for (const auto& p : pieces) words.push_back(utf8::encode(p));
        return words;
    }

private:
    using json = nlohmann::json;

    tokenizer(const json& doc, std::string source) : source_(std::move(source)) {
        require(doc.is_object(), source_, ": the top level is not a JSON object");
        for (const char* field : {"truncation", "padding"}) {
            if (doc.contains(field) && !doc[field].is_null()) {
                fail(source_, ": ", field, " is set (", doc[field].dump(), "); only null is supported: ",
                     field, " changes the ids of an encoding, and transmamba encodes whole texts");
            }
        }
        read_normalizer(doc.value("normalizer", json()), "normalizer");
        read_pre_tokenizer(doc.value("pre_tokenizer", json()), "pre_tokenizer");
        require(!steps_.empty() && steps_.back().what == pre_tokenizer_step::kind::byte_level, source_,
                ": pre_tokenizer: byte-level BPE needs a ByteLevel pre-tokenizer as the last step (got ",
                doc.value("pre_tokenizer", json()).dump(), ")");
        for (std::size_t i = 0; i + 1 < steps_.size(); ++i) {
            require(steps_[i].what != pre_tokenizer_step::kind::byte_level, source_,
                    ": pre_tokenizer: a ByteLevel step followed by another step is not supported");
        }
        read_decoder(doc.value("decoder", json()), "decoder");
        read_model(doc.value("model", json()));
        read_added_tokens(doc.value("added_tokens", json::array()));
        read_post_processor(doc.value("post_processor", json()), "post_processor");
    }

    std::string type_of(const json& j, const std::string& path) const {
        require(j.is_object() && j.contains("type") && j["type"].is_string(), source_, ": ", path,
                " has no \"type\" string (got ", j.dump(), ")");
        return j["type"].get<std::string>();
    }

    bool flag(const json& j, const char* field, bool fallback, const std::string& path) const {
        if (!j.contains(field) || j[field].is_null()) return fallback;
        require(j[field].is_boolean(), source_, ": ", path, ".", field, " is not true or false (got ",
                j[field].dump(), ")");
        return j[field].get<bool>();
    }

    void read_normalizer(const json& j, const std::string& path) {
        if (j.is_null()) return;
        const std::string type = type_of(j, path);
        if (type == "NFC") {
            nfc_ = true;
        } else if (type == "Sequence") {
            const json& list = j.value("normalizers", json());
            require(list.is_array(), source_, ": ", path, ".normalizers is not an array");
            for (std::size_t i = 0; i < list.size(); ++i) read_normalizer(list[i], path + ".normalizers[" + std::to_string(i) + "]");
        } else {
            fail(source_, ": ", path, ".type \"", type, "\" is not supported (supported: null, NFC, a Sequence of those)");
        }
    }

    void read_pre_tokenizer(const json& j, const std::string& path) {
        require(!j.is_null(), source_, ": ", path, " is null; byte-level BPE needs the ByteLevel pre-tokenizer");
        const std::string type = type_of(j, path);
        if (type == "ByteLevel") {
            // tokenizers' defaults (ByteLevel::default()) for fields a file leaves out.
            steps_.push_back({pre_tokenizer_step::kind::byte_level, flag(j, "add_prefix_space", true, path),
                              flag(j, "use_regex", true, path)});
        } else if (type == "Split") {
            const json& pattern = j.value("pattern", json());
            require(pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string(), source_, ": ", path,
                    ".pattern is not {\"Regex\": ...} (got ", pattern.dump(), "); only the GPT-2 regex is supported");
            require(pattern["Regex"].get<std::string>() == gpt2_pattern, source_, ": ", path, ".pattern.Regex ",
                    pattern["Regex"].dump(), " is not supported; the only supported pattern is GPT-2's ",
                    json(std::string(gpt2_pattern)).dump());
            require(j.value("behavior", std::string()) == "Isolated", source_, ": ", path, ".behavior ",
                    j.value("behavior", json()).dump(), " is not supported (only \"Isolated\")");
            require(!flag(j, "invert", false, path), source_, ": ", path, ".invert true is not supported");
            steps_.push_back({pre_tokenizer_step::kind::gpt2_split, false, false});
        } else if (type == "Sequence") {
            const json& list = j.value("pretokenizers", json());
            require(list.is_array(), source_, ": ", path, ".pretokenizers is not an array");
            for (std::size_t i = 0; i < list.size(); ++i) {
                read_pre_tokenizer(list[i], path + ".pretokenizers[" + std::to_string(i) + "]");
            }
        } else {
            fail(source_, ": ", path, ".type \"", type,
                 "\" is not supported (supported: ByteLevel, Split on the GPT-2 regex, a Sequence of those)");
        }
    }

    void read_decoder(const json& j, const std::string& path) {
        require(!j.is_null(), source_, ": ", path, " is null; byte-level BPE needs the ByteLevel decoder");
        const std::string type = type_of(j, path);
        if (type == "ByteLevel") return;
        if (type == "Sequence") {
            const json& list = j.value("decoders", json());
            require(list.is_array() && list.size() == 1, source_, ": ", path,
                    ".decoders: only a Sequence of exactly one ByteLevel decoder is supported (got ", list.dump(), ")");
            read_decoder(list[0], path + ".decoders[0]");
            return;
        }
        fail(source_, ": ", path, ".type \"", type, "\" is not supported (only ByteLevel)");
    }

    void read_model(const json& m) {
        const std::string type = type_of(m, "model");
        require(type == "BPE", source_, ": model.type \"", type, "\" is not supported (only BPE)");
        if (m.contains("dropout") && !m["dropout"].is_null()) {
            require(m["dropout"].is_number() && m["dropout"].get<double>() == 0.0, source_, ": model.dropout ",
                    m["dropout"].dump(), " is not supported (only null or 0: dropout makes encoding random)");
        }
        for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
            if (m.contains(field) && !m[field].is_null()) {
                require(m[field].is_string() && m[field].get<std::string>().empty(), source_, ": model.", field, " ",
                        m[field].dump(), " is not supported (only null: byte-level BPE has no word affixes)");
            }
        }
        require(!flag(m, "byte_fallback", false, "model"), source_,
                ": model.byte_fallback true is not supported (that is SentencePiece-style BPE, not byte-level)");
        const json& vocab = m.value("vocab", json());
        require(vocab.is_object(), source_, ": model.vocab is not an object of token -> id");
        std::unordered_map<std::string, token_id> tokens;
        tokens.reserve(vocab.size());
        for (const auto& [token, id] : vocab.items()) {
            require(id.is_number_unsigned() && id.get<std::uint64_t>() < (std::uint64_t(1) << 31), source_,
                    ": model.vocab[", json(token).dump(), "] = ", id.dump(), " is not an id in 0..2^31-1");
            tokens.emplace(token, id.get<token_id>());
        }
        const json& merges = m.value("merges", json::array());
        require(merges.is_array(), source_, ": model.merges is not an array");
        std::vector<std::pair<std::string, std::string>> pairs;
        pairs.reserve(merges.size());
        for (std::size_t i = 0; i < merges.size(); ++i) {
            const json& entry = merges[i];
            if (entry.is_string()) {
                const std::string s = entry.get<std::string>();
                const auto space = s.find(' ');
                require(space != std::string::npos && space > 0 && space + 1 < s.size() &&
                            s.find(' ', space + 1) == std::string::npos,
                        source_, ": model.merges[", i, "] = ", entry.dump(), " is not two tokens separated by one space");
                pairs.emplace_back(s.substr(0, space), s.substr(space + 1));
            } else {
                require(entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string(), source_,
                        ": model.merges[", i, "] = ", entry.dump(), " is neither \"a b\" nor [\"a\", \"b\"]");
                pairs.emplace_back(entry[0].get<std::string>(), entry[1].get<std::string>());
            }
        }
        std::optional<token_id> unk;
        if (m.contains("unk_token") && !m["unk_token"].is_null()) {
            require(m["unk_token"].is_string(), source_, ": model.unk_token is not a string");
            const auto it = tokens.find(m["unk_token"].get<std::string>());
            require(it != tokens.end(), source_, ": model.unk_token ", m["unk_token"].dump(), " is not in model.vocab");
            unk = it->second;
        }
        for (const auto& [token, id] : tokens) set_token(id, token, "model.vocab");
        model_ = std::make_shared<const bpe_model>(std::move(tokens), pairs, unk, flag(m, "fuse_unk", false, "model"),
                                                   flag(m, "ignore_merges", false, "model"), source_);
    }

    void set_token(token_id id, const std::string& token, const char* where) {
        if (std::size_t(id) >= id_to_token_.size()) {
            id_to_token_.resize(std::size_t(id) + 1);
            has_token_.resize(std::size_t(id) + 1, false);
            is_special_.resize(std::size_t(id) + 1, false);
        }
        require(!has_token_[std::size_t(id)], source_, ": ", where, ": id ", id, " is given to both ",
                json(id_to_token_[std::size_t(id)]).dump(), " and ", json(token).dump());
        id_to_token_[std::size_t(id)] = token;
        has_token_[std::size_t(id)] = true;
    }

    void read_added_tokens(const json& list) {
        require(list.is_array(), source_, ": added_tokens is not an array");
        std::vector<added_token> raw, normalized;
        for (std::size_t i = 0; i < list.size(); ++i) {
            const json& t = list[i];
            const std::string path = "added_tokens[" + std::to_string(i) + "]";
            require(t.is_object() && t.contains("id") && t["id"].is_number_unsigned() && t.contains("content") &&
                        t["content"].is_string(),
                    source_, ": ", path, " has no unsigned \"id\" and string \"content\" (got ", t.dump(), ")");
            added_token token;
            token.id = t["id"].get<token_id>();
            require(token.id < (token_id(1) << 31), source_, ": ", path, ".id ", token.id, " is too large");
            token.content = t["content"].get<std::string>();
            (void)utf8::decode_strict(token.content, source_ + ": " + path + ".content");
            token.special = flag(t, "special", false, path);
            token.normalized = flag(t, "normalized", !token.special, path);
            token.lstrip = flag(t, "lstrip", false, path);
            token.rstrip = flag(t, "rstrip", false, path);
            require(!flag(t, "single_word", false, path), source_, ": ", path,
                    ".single_word true is not supported (", json(token.content).dump(), ")");
            // An added token may repeat a vocab entry (GPT-NeoX's <|endoftext|> is both): the same id
            // and content is no conflict; the added token wins on decoding, as in tokenizers.
            const std::size_t at = std::size_t(token.id);
            for (const auto& earlier : added_) {
                require(earlier.id != token.id, source_, ": added_tokens: id ", token.id, " is given to both ",
                        json(earlier.content).dump(), " and ", json(token.content).dump());
            }
            if (at < has_token_.size() && has_token_[at]) {
                id_to_token_[at] = token.content;
            } else {
                set_token(token.id, token.content, "added_tokens");
            }
            is_special_[at] = token.special;
            (token.normalized ? normalized : raw).push_back(token);
            added_.push_back(std::move(token));
        }
        raw_matcher_ = added_token_matcher(std::move(raw));
        normalized_matcher_ = added_token_matcher(std::move(normalized));
    }

    void read_post_processor(const json& j, const std::string& path) {
        if (j.is_null()) return;
        const std::string type = type_of(j, path);
        if (type == "ByteLevel") return;  // it only adjusts offsets, never ids
        if (type == "Sequence") {
            const json& list = j.value("processors", json());
            require(list.is_array(), source_, ": ", path, ".processors is not an array");
            for (std::size_t i = 0; i < list.size(); ++i) read_post_processor(list[i], path + ".processors[" + std::to_string(i) + "]");
            return;
        }
        require(type == "TemplateProcessing", source_, ": ", path, ".type \"", type,
                "\" is not supported (supported: null, ByteLevel, TemplateProcessing, a Sequence of those)");
        require(prefix_ids_.empty() && suffix_ids_.empty(), source_, ": ", path, ": more than one TemplateProcessing");
        const json& single = j.value("single", json());
        const json& specials = j.value("special_tokens", json::object());
        require(single.is_array(), source_, ": ", path, ".single is not an array");
        bool seen_sequence = false;
        for (std::size_t i = 0; i < single.size(); ++i) {
            const json& piece = single[i];
            const std::string at = path + ".single[" + std::to_string(i) + "]";
            if (piece.contains("Sequence")) {
                require(!seen_sequence && piece["Sequence"].value("id", std::string()) == "A", source_, ": ", at,
                        ": the single template must hold the sequence \"A\" exactly once");
                seen_sequence = true;
                continue;
            }
            require(piece.contains("SpecialToken") && piece["SpecialToken"].contains("id"), source_, ": ", at,
                    " is neither a Sequence nor a SpecialToken (got ", piece.dump(), ")");
            const json& name = piece["SpecialToken"]["id"];
            require(name.is_string() && specials.contains(name.get<std::string>()), source_, ": ", at, ": the special token ",
                    name.dump(), " is not in ", path, ".special_tokens");
            const json& ids = specials[name.get<std::string>()].value("ids", json());
            require(ids.is_array(), source_, ": ", path, ".special_tokens[", name.dump(), "].ids is not an array");
            for (const auto& id : ids) {
                require(id.is_number_unsigned() && id.get<token_id>() < vocab_size() && has_token_[id.get<std::size_t>()],
                        source_, ": ", path, ".special_tokens[", name.dump(), "].ids holds ", id.dump(),
                        ", which is not in the vocabulary");
                (seen_sequence ? suffix_ids_ : prefix_ids_).push_back(id.get<token_id>());
            }
        }
        require(seen_sequence, source_, ": ", path, ".single has no Sequence \"A\"");
    }

    std::string source_;
    bool nfc_ = false;
    std::vector<pre_tokenizer_step> steps_;
    std::shared_ptr<const bpe_model> model_;  // shared: copies of a tokenizer share the tables
    std::vector<added_token> added_;
    added_token_matcher raw_matcher_, normalized_matcher_;
    std::vector<token_id> prefix_ids_, suffix_ids_;
    std::vector<std::string> id_to_token_;
    std::vector<bool> has_token_, is_special_;
};

}  // namespace transmamba::text
