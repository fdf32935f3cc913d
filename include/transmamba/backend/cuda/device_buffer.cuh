#pragma once
// Owning device array (RAII over cudaMalloc / cudaFree): the CUDA backend's buffer.
#include <cstddef>
#include <utility>

#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/core/checked_size.hpp"

namespace transmamba {

template <class T>
class device_buffer {
public:
    device_buffer() = default;
    explicit device_buffer(std::size_t n) { resize(n); }
    device_buffer(const device_buffer& other) : device_buffer(other.size_) {
        if (size_)
            kernels::cuda::check_cuda(cudaMemcpy(ptr_, other.ptr_, size_ * sizeof(T), cudaMemcpyDeviceToDevice),
                                      "cudaMemcpy (device_buffer copy)");
    }
    device_buffer& operator=(const device_buffer& other) {
        if (this != &other) {
            device_buffer copy(other);
            swap(copy);
        }
        return *this;
    }
    device_buffer(device_buffer&& other) noexcept { swap(other); }
    device_buffer& operator=(device_buffer&& other) noexcept {
        swap(other);
        return *this;
    }
    ~device_buffer() { release(); }

    // Discards the contents when the size changes.
    void resize(std::size_t n) {
        if (n == size_) return;
        const std::size_t bytes = checked_bytes<T>(n, "device_buffer::resize(", n, ")");  // before anything is freed
        release();
        if (n) kernels::cuda::check_cuda(cudaMalloc(reinterpret_cast<void**>(&ptr_), bytes), "cudaMalloc");
        size_ = n;
    }

    T* data() { return ptr_; }
    const T* data() const { return ptr_; }
    std::size_t size() const { return size_; }
    void swap(device_buffer& other) noexcept {
        std::swap(ptr_, other.ptr_);
        std::swap(size_, other.size_);
    }

private:
    void release() noexcept {
        if (ptr_) cudaFree(ptr_);  // cannot throw from a destructor; a failing free is not recoverable
        ptr_ = nullptr;
        size_ = 0;
    }
    T* ptr_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace transmamba
