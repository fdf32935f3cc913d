#pragma once
// What the fuzzers (fuzz_safetensors.cpp, fuzz_config.cpp) and the randomized corruption test do with
// one input: parse it as a safetensors file (or a config.json) and, when that succeeds, read every
// tensor in every way the reader offers, write it again and parse the copy. The only acceptable
// failure is a transmamba::error whose message is printable ASCII (io/printable.hpp); a broken
// invariant throws std::logic_error (a crash for libFuzzer, a failed test for doctest), and a read
// out of bounds is caught by AddressSanitizer. Includes only headers that clang 14 builds.
#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <transmamba/io/hf_config.hpp>
#include <transmamba/io/safetensors.hpp>

namespace transmamba::testing {

enum class fuzz_outcome { rejected, accepted };

// A rejection's message may quote the input only escaped.
inline fuzz_outcome rejected_printably(const error& e) {
    const std::string_view msg = e.what();
    if (!std::all_of(msg.begin(), msg.end(), [](char c) { return c >= 0x20 && c <= 0x7e; }))
        throw std::logic_error("an error message holds bytes that are not printable ASCII: " + printable(msg, 400));
    return fuzz_outcome::rejected;
}

inline fuzz_outcome fuzz_safetensors_bytes(std::span<const std::byte> bytes) {
    std::vector<tensor_info> seen;
    std::vector<std::vector<std::byte>> raw;
    std::map<std::string, std::string> metadata;
    try {
        const safetensors_view v(bytes, "fuzz input");
        for (const auto& t : v.tensors()) {
            const auto data = v.raw(t);
            if (data.size() != t.bytes() || data.size() != t.elements * dtype_size(t.type))
                throw std::logic_error("raw span of '" + t.name + "' disagrees with its shape");
            if (is_float_dtype(t.type)) {
                (void)v.read<float>(t);
                (void)v.read<double>(t);
                (void)v.read<bf16_bits>(t);
                (void)v.read<f16_bits>(t);
            } else if (is_integer_dtype(t.type)) {
                (void)v.read<std::int64_t>(t).size();  // U64 values above 2^63 are an error: fine
            }
            seen.push_back(t);
            raw.emplace_back(data.begin(), data.end());
        }
        metadata = v.metadata();
    } catch (const error& e) {
        return rejected_printably(e);
    }
    // Accepted: the writer must reproduce an equivalent file.
    safetensors_writer w;
    for (const auto& [k, val] : metadata) w.set_metadata(k, val);
    for (std::size_t i = 0; i < seen.size(); ++i) w.add_raw(seen[i].name, seen[i].type, seen[i].shape, raw[i]);
    const auto copy = w.serialize();
    const safetensors_view again(copy, "fuzz copy");
    if (again.tensors().size() != seen.size() || again.metadata() != metadata)
        throw std::logic_error("re-written file differs in tensors or metadata");
    for (std::size_t i = 0; i < seen.size(); ++i) {
        const auto& t = seen[i];
        const auto* u = again.find(t.name);
        if (u == nullptr || u->type != t.type || u->shape != t.shape) throw std::logic_error("re-written tensor differs: " + t.name);
        const auto a = again.raw(*u);
        const auto& b = raw[i];
        if (!std::equal(a.begin(), a.end(), b.begin(), b.end())) throw std::logic_error("re-written data differs: " + t.name);
    }
    return fuzz_outcome::accepted;
}

// config.json text: parse it, and when that succeeds, write it and parse the result to the same config.
inline fuzz_outcome fuzz_hf_config_text(std::string_view text) {
    hf_mamba2_config c;
    try {
        c = parse_hf_mamba2_config(text, "fuzz config");
    } catch (const error& e) {
        return rejected_printably(e);
    }
    const auto again = parse_hf_mamba2_config(to_json_text(c), "fuzz config copy");
    const auto sizes = [](const hf_mamba2_config& h) {
        return std::vector<index_t>{h.hidden_size, h.state_size, h.num_heads, h.head_dim, h.n_groups, h.expand,
                                    h.conv_kernel, h.chunk_size, h.num_hidden_layers, h.vocab_size};
    };
    if (sizes(again) != sizes(c) || again.transmamba != c.transmamba || again.tie_word_embeddings != c.tie_word_embeddings ||
        again.use_conv_bias != c.use_conv_bias)
        throw std::logic_error("config does not survive writing and reading");
    return fuzz_outcome::accepted;
}

}  // namespace transmamba::testing
