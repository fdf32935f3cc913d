// libFuzzer target for the safetensors reader (built with -DTRANSMAMBA_BUILD_FUZZERS=ON and clang;
// see tests/CMakeLists.txt). Inputs starting with the byte 'C' go to the config.json parser instead.
//   ./build/fuzz/tests/fuzz_safetensors -max_total_time=60 corpus/ tests/data/fuzz_seeds/
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "io/fuzz_body.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 0 && data[0] == 'C') {
        (void)transmamba::testing::fuzz_hf_config_text(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
        return 0;
    }
    (void)transmamba::testing::fuzz_safetensors_bytes(std::span(reinterpret_cast<const std::byte*>(data), size));
    return 0;
}
