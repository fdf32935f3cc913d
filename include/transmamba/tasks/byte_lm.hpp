#pragma once
// Language modelling on the bytes of a text file the user names: every byte is a token (vocabulary
// 256), a sequence is a window of length + 1 bytes at a random offset, ids its first `length` bytes
// and targets the next byte at every position. The file is read once into memory; its size and an
// FNV-1a hash are kept, so that a resumed run can refuse a file that changed under it.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "transmamba/core/error.hpp"
#include "transmamba/tasks/stream_rng.hpp"
#include "transmamba/tasks/token_batch.hpp"

namespace transmamba {

struct byte_lm_task {
    static constexpr const char* name = "bytes";
    std::filesystem::path path;
    index_t length = 128;
    std::shared_ptr<const std::vector<std::uint8_t>> text;  // the file's bytes (shared by copies of the task)

    static byte_lm_task open(const std::filesystem::path& file, index_t length) {
        std::ifstream in(file, std::ios::binary);
        require(in.good(), "bytes task: cannot open the text file '", file.string(), "'");
        auto bytes = std::make_shared<std::vector<std::uint8_t>>(std::istreambuf_iterator<char>(in),
                                                                 std::istreambuf_iterator<char>());
        require(!in.bad(), "bytes task: cannot read the text file '", file.string(), "'");
        byte_lm_task t{file, length, std::move(bytes)};
        t.validate();
        return t;
    }

    index_t vocab_size() const { return 256; }
    index_t sequence_length() const { return length; }
    std::uint64_t size() const { return text ? text->size() : 0; }
    // FNV-1a over the bytes.
    std::uint64_t hash() const {
        std::uint64_t h = 0xcbf29ce484222325ull;
        if (text)
            for (auto b : *text) h = (h ^ b) * 0x100000001b3ull;
        return h;
    }

    void validate() const {
        require(length >= 1, "bytes task: the sequence length must be positive, got ", length);
        require(text != nullptr, "bytes task: no text file was read");
        require(text->size() >= static_cast<std::size_t>(length) + 1, "bytes task: the text file '", path.string(), "' has ",
                text->size(), " bytes; a sequence of ", length, " tokens needs at least ", length + 1);
    }

    void fill(stream_rng& rng, token_batch& out, index_t row) const {
        const auto& bytes = *text;
        const auto offset = static_cast<std::size_t>(rng.below(bytes.size() - static_cast<std::size_t>(length)));
        for (index_t t = 0; t < length; ++t) {
            out.id(row, t) = bytes[offset + std::size_t(t)];
            out.target(row, t) = bytes[offset + std::size_t(t) + 1];
        }
    }
};

}  // namespace transmamba
