// The program's GPU module (libtransmamba_cli_cuda.so, cuda_module.hpp): the GPU instantiations of
// the subcommands, compiled by nvcc only when CUDA is enabled and loaded by the program only for
// --device cuda.
#include <cuda_runtime.h>

#include <transmamba/backend/cuda.cuh>
#include <transmamba/io/cuda_elements.cuh>

#include <exception>
#include <limits>
#include <string>

#include "commands.hpp"
#include "cuda_module.hpp"

namespace transmamba::cli {

// The GPU's memory, for the commands' memory plans (commands.hpp).
template <>
struct backend_memory<transmamba::cuda> {
    static std::uint64_t bytes() {
        std::size_t free = 0, total = 0;
        if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
            (void)cudaGetLastError();
            return std::numeric_limits<std::uint64_t>::max();  // unknown: let the allocation decide
        }
        return total;
    }
    static constexpr std::string_view name = "GPU memory";
    // For the model's summary line: "cuda:0 (NVIDIA H200)".
    static std::string device() {
        int id = 0;
        cudaDeviceProp prop{};
        if (cudaGetDevice(&id) != cudaSuccess || cudaGetDeviceProperties(&prop, id) != cudaSuccess) {
            (void)cudaGetLastError();
            return "cuda";
        }
        return "cuda:" + std::to_string(id) + " (" + prop.name + ")";
    }
};

namespace {

// Empty when a device is usable; else a plain sentence starting "no CUDA device".
std::string device_problem() {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaSuccess && count > 0) return {};
    (void)cudaGetLastError();
    switch (e) {
        case cudaSuccess:
        case cudaErrorNoDevice: return "no CUDA device: this machine has no NVIDIA GPU that CUDA can see";
        case cudaErrorInsufficientDriver:
            return "no CUDA device: no NVIDIA driver is loaded, or it is older than this program's CUDA runtime";
        default: return std::string("no CUDA device usable: ") + cudaGetErrorString(e);
    }
}

int run_on_gpu(const run_args& a, storage s) {
    switch (s) {
        case storage::bf16: return run<__nv_bfloat16, transmamba::cuda>(a);
        case storage::f16: return run<__half, transmamba::cuda>(a);
        default: return run<float, transmamba::cuda>(a);
    }
}

int generate_on_gpu(const generate_args& a, storage s) {
    switch (s) {
        case storage::bf16: return generate<__nv_bfloat16, transmamba::cuda>(a);
        case storage::f16: return generate<__half, transmamba::cuda>(a);
        default: return generate<float, transmamba::cuda>(a);
    }
}

const cuda_commands commands{TRANSMAMBA_CLI_VERSION, sizeof(run_args), sizeof(generate_args), &device_problem, &run_on_gpu,
                             &generate_on_gpu};

}  // namespace

}  // namespace transmamba::cli

extern "C" __attribute__((visibility("default"))) const transmamba::cli::cuda_commands* transmamba_cli_cuda_commands() {
    return &transmamba::cli::commands;
}
