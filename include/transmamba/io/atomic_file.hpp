#pragma once
// Writes a file so that readers see either the old file or the complete new one, never a part:
// the bytes go to a temporary file in the same directory, which is flushed to disk (fsync) and then
// renamed over the target (rename is atomic within a file system); the directory is synced so that
// the rename itself survives a crash. On any error the temporary file is removed and the target is
// untouched.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "transmamba/core/error.hpp"

namespace transmamba {

// Sink handed to the producer: write(data, bytes) appends to the temporary file.
class file_sink {
public:
    file_sink(int fd, const std::filesystem::path& target) : fd_(fd), target_(target) {}
    void write(const void* data, std::size_t bytes) {
        const auto* p = static_cast<const char*>(data);
        while (bytes > 0) {
            const ::ssize_t n = ::write(fd_, p, bytes);
            if (n < 0) {
                if (errno == EINTR) continue;
                fail("cannot write '", target_.string(), "': ", std::strerror(errno));
            }
            p += n;
            bytes -= static_cast<std::size_t>(n);
            written_ += static_cast<std::size_t>(n);
        }
    }
    std::size_t written() const { return written_; }

private:
    int fd_;
    const std::filesystem::path& target_;
    std::size_t written_ = 0;
};

// Calls produce(sink) to fill the new contents of `path`, then publishes them atomically.
template <class Produce>
void write_file_atomically(const std::filesystem::path& path, Produce&& produce) {
    namespace fs = std::filesystem;
    const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
    require(!path.filename().empty(), "cannot write '", path.string(), "': not a file name");
    static std::atomic<unsigned> counter{0};

    // A name no other writer uses: pid and a per-process counter; O_EXCL makes a clash an error
    // rather than a shared file.
    fs::path tmp;
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
        std::string name = path.filename().string();  // built by appending: GCC 12 warns falsely on "." + string
        name.insert(name.begin(), '.');
        name.append(".tmp-").append(std::to_string(::getpid())).append("-").append(std::to_string(counter.fetch_add(1)));
        tmp = dir / name;
        fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST && errno != EINTR) break;
    }
    if (fd < 0) fail("cannot create a temporary file in '", dir.string(), "' to write '", path.string(), "': ",
                     std::strerror(errno));

    struct cleanup {
        int& fd;
        const fs::path& tmp;
        bool published = false;
        ~cleanup() {
            if (fd >= 0) ::close(fd);
            if (!published) ::unlink(tmp.c_str());
        }
    } guard{fd, tmp};

    file_sink sink(fd, path);
    produce(sink);
    if (::fsync(fd) != 0) fail("cannot flush '", path.string(), "' to disk: ", std::strerror(errno));
    const int closed = ::close(fd);
    fd = -1;
    if (closed != 0) fail("cannot close '", path.string(), "': ", std::strerror(errno));
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
        fail("cannot rename the temporary file over '", path.string(), "': ", std::strerror(errno));
    guard.published = true;
    // Make the rename durable. Some file systems cannot sync a directory; the data is safe anyway.
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)::fsync(dfd);
        ::close(dfd);
    }
}

}  // namespace transmamba
