#pragma once
// Outputs are checked before any work: a file the command writes must not be one it reads (the
// input, a file of the model, through any symlink or hard link), must not be a directory or
// another non-regular file, and its directory must exist and be writable. A checkpoint directory
// that `init` would replace needs --force. Each check names the flag and the path.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "transmamba/core/error.hpp"

namespace transmamba::cli {

// A file the command reads, and what it is to the user ("--input", "a file of the --model checkpoint").
struct protected_file {
    std::filesystem::path path;
    std::string role;
};

// The files of a checkpoint directory that exist: config.json, model.safetensors, the shard index
// and the shards it names. An unreadable index is left to the loader to report.
inline std::vector<std::filesystem::path> checkpoint_files(const std::filesystem::path& dir) {
    namespace fs = std::filesystem;
    std::vector<fs::path> files;
    std::error_code ec;
    for (const char* name : {"config.json", "model.safetensors", "model.safetensors.index.json"})
        if (fs::exists(dir / name, ec)) files.push_back(dir / name);
    const fs::path index = dir / "model.safetensors.index.json";
    if (fs::is_regular_file(index, ec)) {
        try {
            std::ifstream in(index);
            const auto j = nlohmann::json::parse(in);
            if (const auto map = j.find("weight_map"); map != j.end() && map->is_object())
                for (const auto& [tensor, shard] : map->items())
                    if (shard.is_string()) {
                        const fs::path file = dir / shard.get<std::string>();
                        if (fs::exists(file, ec)) files.push_back(file);
                    }
        } catch (const nlohmann::json::exception&) {
        }
    }
    return files;
}

namespace cli_detail {

// Whether a and b name the same file: the same inode when both exist (symlinks, hard links, "..");
// else the same normalised path.
inline bool same_file(const std::filesystem::path& a, const std::filesystem::path& b) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::exists(a, ec) && fs::exists(b, ec)) {
        const bool same = fs::equivalent(a, b, ec);
        if (!ec) return same;
    }
    const auto ca = fs::weakly_canonical(a, ec);
    if (ec) return false;
    const auto cb = fs::weakly_canonical(b, ec);
    return !ec && ca == cb;
}

// The directory a new file `path` goes to.
inline std::filesystem::path parent_of(const std::filesystem::path& path) {
    return path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
}

inline void require_writable_directory(std::string_view flag, const std::filesystem::path& path,
                                       const std::filesystem::path& dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto status = fs::status(dir, ec);
    require(fs::exists(status), flag, " '", path.string(), "': the directory '", dir.string(), "' does not exist");
    require(fs::is_directory(status), flag, " '", path.string(), "': '", dir.string(), "' is not a directory");
    require(::access(dir.c_str(), W_OK | X_OK) == 0, flag, " '", path.string(), "': the directory '", dir.string(),
            "' is not writable");
}

}  // namespace cli_detail

// Throws unless `path` (the value of `flag`) can be written as a new or replaced regular file
// without touching any of `reads`.
inline void check_output_file(std::string_view flag, const std::filesystem::path& path, const std::vector<protected_file>& reads) {
    namespace fs = std::filesystem;
    require(!path.empty() && path.has_filename(), flag, " '", path.string(), "' is not a file name");
    for (const auto& r : reads)
        require(!cli_detail::same_file(path, r.path), flag, " '", path.string(), "' is ", r.role, " ('", r.path.string(),
                "'): writing it would destroy what the command reads");
    std::error_code ec;
    const auto status = fs::status(path, ec);  // follows symlinks: what a write would reach
    if (fs::exists(status)) {
        require(!fs::is_directory(status), flag, " '", path.string(), "' is a directory, not a file");
        require(fs::is_regular_file(status), flag, " '", path.string(), "' exists and is not a regular file");
    }
    cli_detail::require_writable_directory(flag, path, cli_detail::parent_of(path));
}

// Throws unless `dir` (the value of `flag`) can receive a new checkpoint: a directory that does not
// exist yet (its nearest existing ancestor writable), or an existing one that holds no checkpoint,
// or one that does when `force` is set.
inline void check_checkpoint_output(std::string_view flag, const std::filesystem::path& dir, bool force) {
    namespace fs = std::filesystem;
    require(!dir.empty(), flag, " is empty");
    std::error_code ec;
    const auto status = fs::status(dir, ec);
    if (fs::exists(status)) {
        require(fs::is_directory(status), flag, " '", dir.string(), "' exists and is not a directory");
        const auto held = checkpoint_files(dir);
        if (!held.empty() && !force) {
            std::string names;
            for (const auto& f : held) names.append(names.empty() ? "" : ", ").append(f.filename().string());
            fail(flag, " '", dir.string(), "' already holds a checkpoint (", names, "): pass --force to replace it");
        }
        for (const char* name : {"config.json", "model.safetensors"}) {
            const auto file = fs::status(dir / name, ec);
            require(!fs::exists(file) || fs::is_regular_file(file), flag, " '", dir.string(), "': '", name,
                    "' exists and is not a regular file");
        }
        cli_detail::require_writable_directory(flag, dir, dir);
        return;
    }
    // create_directories makes the missing levels: the last existing one must take them.
    fs::path existing = fs::absolute(dir, ec);
    while (!existing.empty() && !fs::exists(existing, ec) && existing.has_parent_path() && existing.parent_path() != existing)
        existing = existing.parent_path();
    cli_detail::require_writable_directory(flag, dir, existing);
}

}  // namespace transmamba::cli
