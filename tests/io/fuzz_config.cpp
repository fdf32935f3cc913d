// libFuzzer target for the config.json parser (io/hf_config.hpp), built with
// -DTRANSMAMBA_BUILD_FUZZERS=ON and clang (the fuzz preset; tests/CMakeLists.txt):
//   build/fuzz/tests/fuzz_config -max_total_time=60 corpus/ tests/data/fuzz_seeds/config/
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "io/fuzz_body.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    (void)transmamba::testing::fuzz_hf_config_text(std::string_view(reinterpret_cast<const char*>(data), size));
    return 0;
}
