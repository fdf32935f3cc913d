#pragma once
// Opening a file for reading without ever blocking: the one way every reader of this library
// (safetensors files and shards, config.json, the shard index, the CLI's --input) opens a file.
//
// open(2) of a FIFO waits for a writer, and reading a socket or a terminal waits for data, so a
// FIFO in place of model.safetensors would hang the loader. The path is checked with stat(2) first
// (following symbolic links, as open does) and anything but a regular file is an error that says
// what it is. The file is then opened with O_NONBLOCK, so that a FIFO swapped in after the check
// cannot block the open either, and checked again with fstat on the open descriptor (the file that
// will be read); O_NONBLOCK is cleared before reading, since it means nothing for a regular file.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include "transmamba/core/error.hpp"
#include "transmamba/io/printable.hpp"

namespace transmamba {

// "a FIFO", "a directory", ... for a stat mode; messages say what a path is instead of a file.
inline std::string_view file_kind_name(mode_t mode) {
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISLNK(mode)) return "a symbolic link";
    return "not a file of any known kind";
}

// What stat(2) says of a path, following symbolic links: its mode, or the error (ENOENT for a
// path that is not there, ELOOP for a symbolic link loop, ...). Unlike std::filesystem's queries
// it never throws, and it keeps the cause for the message.
struct path_status {
    int error = 0;  // errno of stat, 0 when it succeeded
    mode_t mode = 0;

    bool missing() const { return error == ENOENT; }
    bool is_directory() const { return error == 0 && S_ISDIR(mode); }
    // "a FIFO (named pipe)", ..., or why stat failed.
    std::string describe() const { return error ? std::string(std::strerror(error)) : std::string(file_kind_name(mode)); }
};
inline path_status status_of(const std::filesystem::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return {errno, 0};
    return {0, st.st_mode};
}

// A file descriptor open for reading a regular file, closed on destruction.
class regular_file {
public:
    regular_file() = default;

    // Opens `path` (a regular file, or a symbolic link to one) or throws naming it and why not.
    explicit regular_file(const std::filesystem::path& path) : path_(path) {
        const std::string shown = printable(path.string(), 4096);
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) fail("cannot open '", shown, "': ", std::strerror(errno));
        require_regular(shown, st.st_mode);
        do {
            fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        } while (fd_ < 0 && errno == EINTR);
        if (fd_ < 0) fail("cannot open '", shown, "': ", std::strerror(errno));
        struct close_on_throw {  // the destructor does not run when the constructor throws
            int& fd;
            bool keep = false;
            ~close_on_throw() {
                if (!keep) ::close(std::exchange(fd, -1));
            }
        } guard{fd_};
        if (::fstat(fd_, &st) != 0) fail("cannot stat '", shown, "': ", std::strerror(errno));
        require_regular(shown, st.st_mode);  // replaced between stat and open
        const int flags = ::fcntl(fd_, F_GETFL);
        if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK) != 0)
            fail("cannot open '", shown, "': ", std::strerror(errno));
        size_ = static_cast<std::uint64_t>(st.st_size);
        guard.keep = true;
    }

    regular_file(const regular_file&) = delete;
    regular_file& operator=(const regular_file&) = delete;
    regular_file(regular_file&& other) noexcept
        : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)), size_(std::exchange(other.size_, 0)) {}
    regular_file& operator=(regular_file&& other) noexcept {
        if (this != &other) {
            close();
            path_ = std::move(other.path_);
            fd_ = std::exchange(other.fd_, -1);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }
    ~regular_file() { close(); }

    int fd() const { return fd_; }
    // The size when it was opened.
    std::uint64_t size() const { return size_; }
    const std::filesystem::path& path() const { return path_; }

    // The whole file, refused before reading when it is larger than `limit` bytes; `what` says
    // what the file is for the message ("a config", "an index").
    std::string read_all(std::uint64_t limit, std::string_view what) const {
        const std::string shown = printable(path_.string(), 4096);
        require(size_ <= limit, "'", shown, "' is ", size_, " bytes, more than the ", limit, " ", what, " may have");
        std::string text(static_cast<std::size_t>(size_), '\0');
        std::size_t done = 0;
        while (done < text.size()) {
            const ::ssize_t n = ::read(fd_, text.data() + done, text.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) fail("cannot read '", shown, "': ", std::strerror(errno));
            if (n == 0) break;  // truncated since it was opened: what is there is all there is
            done += static_cast<std::size_t>(n);
        }
        text.resize(done);
        return text;
    }

private:
    static void require_regular(const std::string& shown, mode_t mode) {
        if (!S_ISREG(mode)) fail("'", shown, "' is not a regular file (it is ", file_kind_name(mode), ")");
    }
    void close() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

    std::filesystem::path path_;
    int fd_ = -1;
    std::uint64_t size_ = 0;
};

// The text of a small file (config.json, an index), at most `limit` bytes.
inline std::string read_text_file(const std::filesystem::path& path, std::uint64_t limit = 64u << 20,
                                  std::string_view what = "a config") {
    return regular_file(path).read_all(limit, what);
}

}  // namespace transmamba
