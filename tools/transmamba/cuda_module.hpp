#pragma once
// The program's GPU commands live in a module of their own, libtransmamba_cli_cuda.so
// (cuda_commands.cu), which the program dlopen()s only for --device cuda: the CPU program links
// no CUDA library, starts in a few MB and runs on machines without a GPU or a driver. This header
// is the interface between the two; both are built from one tree, and the module states the
// version and argument sizes it was built with so that a stale module is refused, not called.
#include <cstddef>
#include <string>

#include "commands.hpp"

namespace transmamba::cli {

struct cuda_commands {
    const char* version;  // TRANSMAMBA_CLI_VERSION of the module's build
    std::size_t run_args_size, generate_args_size;
    // Empty when a CUDA device is usable, else why not, starting "no CUDA device".
    std::string (*device_problem)();
    int (*run)(const run_args&, storage);
    int (*generate)(const generate_args&, storage);
};

// The module's one exported symbol.
inline constexpr const char* cuda_commands_symbol = "transmamba_cli_cuda_commands";
using cuda_commands_entry = const cuda_commands* (*)();

}  // namespace transmamba::cli
