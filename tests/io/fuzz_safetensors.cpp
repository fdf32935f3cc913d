// libFuzzer target for the safetensors reader (built with -DTRANSMAMBA_BUILD_FUZZERS=ON and clang;
// see tests/CMakeLists.txt). It includes only io/safetensors.hpp, which clang 14 (Debian 12's) builds;
// the config parser is covered by the randomized test in test_corruption.cpp.
//   ./build/fuzz/tests/fuzz_safetensors -max_total_time=60 corpus/ tests/data/fuzz_seeds/
#include <cstddef>
#include <cstdint>
#include <span>

#include "io/fuzz_body.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    (void)transmamba::testing::fuzz_safetensors_bytes(std::span(reinterpret_cast<const std::byte*>(data), size));
    return 0;
}
