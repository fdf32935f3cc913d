// doctest main for the CUDA tests. A machine with a CUDA compiler but no GPU
// (a CI runner, a laptop) reports the whole suite as skipped instead of
// failing: ctest maps the exit code below to "skipped" (SKIP_RETURN_CODE).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cstdio>

namespace {
constexpr int skip_return_code = 77;
}

int main(int argc, char** argv) {
    doctest::Context context(argc, argv);
    if (context.shouldExit()) {  // --help, --version, --list-test-cases ...
        return context.run();
    }
    int devices = 0;
    const cudaError_t status = cudaGetDeviceCount(&devices);
    if (status != cudaSuccess || devices == 0) {
        std::printf("no usable CUDA device (%s): skipping the CUDA tests\n",
                    status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
        return skip_return_code;
    }
    return context.run();
}
