#pragma once
// Text in and out of `generate` and `run`: the checkpoint's tokenizer.json for --prompt, the
// end-of-sequence ids of generation_config.json / config.json, and the printer that writes each
// token to stdout as soon as it is made (flushed per token, so that a program killed mid-generation
// leaves every token made so far on stdout).
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "transmamba/core/error.hpp"
#include "transmamba/io/hf_config.hpp"
#include "transmamba/io/printable.hpp"
#include "transmamba/io/regular_file.hpp"
#include "transmamba/text/stream_decoder.hpp"
#include "transmamba/text/tokenizer.hpp"

namespace transmamba::cli {

// The tokenizer of checkpoint `dir`, which --prompt needs; `flag` names the option in the error.
inline text::tokenizer checkpoint_tokenizer(const std::filesystem::path& dir, std::string_view flag) {
    const std::filesystem::path file = dir / "tokenizer.json";
    require(!status_of(file).missing(), flag, " needs the checkpoint's tokenizer: '", printable(file.string()),
            "' does not exist (give the prompt as token ids with --prompt-ids, or copy the model's tokenizer.json there)");
    return text::tokenizer::from_file(file);
}

// The prompt's ids: --prompt-ids as given, or --prompt encoded by the checkpoint's tokenizer.
inline std::vector<std::int64_t> prompt_ids(const std::filesystem::path& dir, const std::vector<std::int64_t>& ids,
                                            const std::optional<std::string>& text, const text::tokenizer* tok) {
    if (!text) return ids;
    require(tok != nullptr, "--prompt: no tokenizer");
    const auto encoded = tok->encode(*text);
    require(!encoded.empty(), "--prompt is empty: the tokenizer of '", printable(dir.string()), "' gives no tokens for it");
    return {encoded.begin(), encoded.end()};
}

namespace cli_detail {

// eos_token_id of one JSON file: an integer, a list of integers, or null / absent (none).
inline std::optional<std::vector<std::int64_t>> eos_ids_in(const std::filesystem::path& file) {
    if (status_of(file).missing()) return std::nullopt;
    nlohmann::json doc;
    try {
        // config.json may hold bare Infinity / NaN tokens (io/hf_config.hpp reads them the same way).
        doc = nlohmann::json::parse(io_detail::mark_nonfinite_tokens(read_text_file(file)));
    } catch (const nlohmann::json::exception& e) {
        fail("'", printable(file.string()), "' is not valid JSON: ", printable(e.what()));
    }
    if (!doc.is_object()) fail("'", printable(file.string()), "' is not a JSON object");
    const auto it = doc.find("eos_token_id");
    if (it == doc.end() || it->is_null()) return std::nullopt;
    const auto bad = [&] {
        const std::string v = it->dump();
        fail("'", printable(file.string()), "': eos_token_id must be a non-negative integer or a list of them, got ",
             printable(v.size() > 40 ? v.substr(0, 37) + "..." : v));
    };
    std::vector<std::int64_t> ids;
    const auto add = [&](const nlohmann::json& v) {
        if (!v.is_number_unsigned() || v.get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max())) bad();
        ids.push_back(v.get<std::int64_t>());
    };
    if (it->is_array()) {
        for (const auto& v : *it) add(v);
    } else {
        add(*it);
    }
    return ids;
}

}  // namespace cli_detail

// The ids that end a generation: generation_config.json's eos_token_id, else config.json's, else none.
inline std::vector<std::int64_t> end_of_sequence_ids(const std::filesystem::path& dir) {
    if (auto ids = cli_detail::eos_ids_in(dir / "generation_config.json")) return *ids;
    if (auto ids = cli_detail::eos_ids_in(dir / "config.json")) return *ids;
    return {};
}

// Writes generated tokens to `out` as they come: ids separated by ',' (--ids, or no tokenizer), or
// text through a stream_decoder, so that a UTF-8 character split across tokens is written whole.
// An id the tokenizer lacks (a model's vocabulary is often padded past the tokenizer's) is written
// as U+FFFD. Every token is flushed: the file holds it before the next one is computed.
class token_printer {
public:
    token_printer(std::FILE* out, const text::tokenizer* tok) : out_(out), tok_(tok) {
        if (tok_) decoder_.emplace(*tok_);
    }

    void print(std::int64_t id) {
        if (!decoder_) {
            std::fprintf(out_, count_ == 0 ? "%lld" : ",%lld", static_cast<long long>(id));
        } else if (tok_->contains(text::token_id(id))) {
            write(decoder_->push(text::token_id(id)));
        } else {
            write(decoder_->finish() + "\xEF\xBF\xBD");
        }
        ++count_;
        std::fflush(out_);
    }

    // The end of the output: a character still cut off (as U+FFFD) and a newline.
    void finish() {
        if (decoder_) write(decoder_->finish());
        std::fputc('\n', out_);
        std::fflush(out_);
    }

private:
    void write(const std::string& s) { std::fwrite(s.data(), 1, s.size(), out_); }

    std::FILE* out_;
    const text::tokenizer* tok_;
    std::optional<text::stream_decoder> decoder_;
    std::size_t count_ = 0;
};

}  // namespace transmamba::cli
