// The GPU instantiations of the subcommands (compiled by nvcc only when CUDA is enabled).
#include <transmamba/backend/cuda.cuh>
#include <transmamba/io/cuda_elements.cuh>

#include "commands.hpp"

namespace transmamba::cli {

int run_cuda(const run_args& a, storage s) {
    switch (s) {
        case storage::bf16: return run<__nv_bfloat16, transmamba::cuda>(a);
        case storage::f16: return run<__half, transmamba::cuda>(a);
        default: return run<float, transmamba::cuda>(a);
    }
}

int generate_cuda(const generate_args& a, storage s) {
    switch (s) {
        case storage::bf16: return generate<__nv_bfloat16, transmamba::cuda>(a);
        case storage::f16: return generate<__half, transmamba::cuda>(a);
        default: return generate<float, transmamba::cuda>(a);
    }
}

}  // namespace transmamba::cli
