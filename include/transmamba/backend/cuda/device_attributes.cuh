#pragma once
// What launches ask of the device on every call (its multiprocessor count, its L2 size, a kernel's
// dynamic shared-memory limit), asked of the driver once per device and cached: these queries cost
// microseconds each, which a decoding step or a small prefill cannot afford per launch.
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>

#include "transmamba/backend/cuda/check.cuh"

namespace transmamba::kernels::cuda {

inline constexpr int max_devices = 64;

inline int current_device() {
    int device = 0;
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    require(device >= 0 && device < max_devices, "CUDA device index ", device, " out of the supported range");
    return device;
}

// One attribute of the current device, read once per device (attributes never change while a
// process runs).
template <cudaDeviceAttr Attribute>
int cached_device_attribute(const char* what) {
    static std::atomic<int> values[max_devices] = {};
    const int device = current_device();
    int value = values[device].load(std::memory_order_relaxed);
    if (value == 0) {
        check_cuda(cudaDeviceGetAttribute(&value, Attribute, device), what);
        values[device].store(value, std::memory_order_relaxed);
    }
    return value;
}

inline int multiprocessor_count() {
    return cached_device_attribute<cudaDevAttrMultiProcessorCount>("cudaDeviceGetAttribute (multiprocessor count)");
}

inline int l2_cache_bytes() { return cached_device_attribute<cudaDevAttrL2CacheSize>("cudaDeviceGetAttribute (L2 size)"); }

// Raises Kernel's dynamic shared-memory limit to at least `bytes` on the current device; the
// attribute call is made only when a launch needs more than was granted before.
template <auto Kernel>
void allow_shared_memory(std::size_t bytes, const char* name) {
    static std::atomic<std::size_t> granted[max_devices] = {};
    const int device = current_device();
    if (granted[device].load(std::memory_order_relaxed) >= bytes) return;
    check_cuda(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), name);
    granted[device].store(bytes, std::memory_order_relaxed);
}

}  // namespace transmamba::kernels::cuda
