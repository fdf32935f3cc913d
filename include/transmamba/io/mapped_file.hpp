#pragma once
// A read-only memory map of a whole file (POSIX mmap), owned RAII-style: the mapping lives exactly
// as long as the object. Checkpoint loaders read tensors straight from it, so a 10 GB checkpoint is
// not read into memory before it is converted.
//
// The file must not be truncated while it is mapped: reading a page past the new end raises SIGBUS,
// which no check can turn into an error. Writers in this library replace files by rename (see
// io/atomic_file.hpp), which leaves an existing mapping of the old file intact.
#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <utility>

#include "transmamba/core/error.hpp"
#include "transmamba/io/printable.hpp"
#include "transmamba/io/regular_file.hpp"

namespace transmamba {

class mapped_file {
public:
    mapped_file() = default;

    // The file must be a regular file (io/regular_file.hpp: a FIFO or a device is refused, never
    // waited on).
    explicit mapped_file(const std::filesystem::path& path) : path_(path) {
        const regular_file file(path);  // closed at the end: the mapping keeps the file alive on its own
        size_ = static_cast<std::size_t>(file.size());
        if (size_ == 0) return;  // mmap cannot map nothing; an empty span describes it
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, file.fd(), 0);
        if (p == MAP_FAILED)
            fail("cannot map '", printable(path.string(), 4096), "' (", size_, " bytes): ", std::strerror(errno));
        data_ = static_cast<const std::byte*>(p);
    }

    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;
    mapped_file(mapped_file&& other) noexcept
        : path_(std::move(other.path_)), data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    mapped_file& operator=(mapped_file&& other) noexcept {
        if (this != &other) {
            unmap();
            path_ = std::move(other.path_);
            data_ = std::exchange(other.data_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }
    ~mapped_file() { unmap(); }

    std::span<const std::byte> bytes() const { return {data_, size_}; }
    std::size_t size() const { return size_; }
    const std::filesystem::path& path() const { return path_; }

private:
    void unmap() noexcept {
        if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
        data_ = nullptr;
        size_ = 0;
    }

    std::filesystem::path path_;
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace transmamba
