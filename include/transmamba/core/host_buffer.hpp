#pragma once
// Owning, aligned host array: the CPU backend's buffer. No value-initialisation on resize beyond
// what the caller asks, since weights and activations are always written before they are read.
#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>
#include <span>

#include "transmamba/core/checked_size.hpp"

namespace transmamba {

template <class T>
class host_buffer {
public:
    static constexpr std::size_t alignment = 64;

    host_buffer() = default;
    explicit host_buffer(std::size_t n) { resize(n); }
    host_buffer(const host_buffer& other) : host_buffer(other.size_) { std::copy_n(other.data(), size_, data()); }
    host_buffer& operator=(const host_buffer& other) {
        if (this != &other) {
            host_buffer copy(other);
            *this = std::move(copy);
        }
        return *this;
    }
    host_buffer(host_buffer&&) noexcept = default;
    host_buffer& operator=(host_buffer&&) noexcept = default;

    // Discards the contents when the size changes. A size whose bytes overflow is an error, not a
    // wrapped (small) allocation.
    void resize(std::size_t n) {
        if (n == size_) return;
        const std::size_t bytes = checked_bytes<T>(n, "host_buffer::resize(", n, ")");
        ptr_.reset();  // the old block goes first: a large buffer is not held twice while growing
        size_ = 0;
        ptr_.reset(n ? static_cast<T*>(::operator new(bytes, std::align_val_t{alignment})) : nullptr);
        size_ = n;
    }
    void fill(const T& v) { std::fill_n(data(), size_, v); }

    T* data() { return ptr_.get(); }
    const T* data() const { return ptr_.get(); }
    std::size_t size() const { return size_; }
    std::span<T> span() { return {data(), size_}; }
    std::span<const T> span() const { return {data(), size_}; }

private:
    struct deleter {
        void operator()(T* p) const { ::operator delete(p, std::align_val_t{alignment}); }
    };
    std::unique_ptr<T, deleter> ptr_;
    std::size_t size_ = 0;
};

}  // namespace transmamba
