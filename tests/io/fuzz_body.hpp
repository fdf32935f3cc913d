#pragma once
// What the safetensors fuzzer and the randomized corruption test do with one input: parse it as a
// safetensors file and, when that succeeds, read every tensor in every way the reader offers, write
// it again and parse the copy. The only acceptable failure is a transmamba::error; a broken
// invariant throws std::logic_error (a crash for libFuzzer, a failed test for doctest), and a read
// out of bounds is caught by AddressSanitizer.
#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <transmamba/io/safetensors.hpp>

namespace transmamba::testing {

enum class fuzz_outcome { rejected, accepted };

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
    } catch (const error&) {
        return fuzz_outcome::rejected;
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

}  // namespace transmamba::testing
