// The program's output checks (tools/transmamba/output_paths.hpp), made before any work: an
// output is never a file the command reads (also through a symlink or a hard link), never a
// directory or special file, its directory exists; init replaces a checkpoint only with --force.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "transmamba/output_paths.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_cli_output_paths {

using namespace transmamba;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const char* name) {
    const fs::path dir = fs::temp_directory_path() / ("transmamba_cli_paths_" + std::to_string(::getpid())) / name;
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
}

void touch(const fs::path& p) { std::ofstream(p) << "x"; }

}  // namespace

TEST_CASE("cli outputs: never a file the command reads") {
    const fs::path dir = scratch("reads");
    touch(dir / "in.safetensors");
    fs::create_directories(dir / "model");
    touch(dir / "model" / "config.json");
    touch(dir / "model" / "model.safetensors");
    const std::vector<cli::protected_file> reads{{dir / "in.safetensors", "the --input file"},
                                                 {dir / "model" / "config.json", "a file of the --model checkpoint"},
                                                 {dir / "model" / "model.safetensors", "a file of the --model checkpoint"}};
    CHECK_NOTHROW(cli::check_output_file("--output", dir / "out.safetensors", reads));
    CHECK_THROWS_WITH_AS(cli::check_output_file("--output", dir / "in.safetensors", reads),
                         doctest::Contains(("--output '" + (dir / "in.safetensors").string() + "' is the --input file").c_str()), error);
    CHECK_THROWS_WITH_AS(cli::check_output_file("--output", dir / "model" / ".." / "in.safetensors", reads),
                         doctest::Contains("is the --input file"), error);
    fs::create_symlink(dir / "in.safetensors", dir / "link.safetensors");
    CHECK_THROWS_WITH_AS(cli::check_output_file("--output", dir / "link.safetensors", reads),
                         doctest::Contains("is the --input file"), error);
    fs::create_hard_link(dir / "in.safetensors", dir / "hard.safetensors");
    CHECK_THROWS_WITH_AS(cli::check_output_file("--output", dir / "hard.safetensors", reads),
                         doctest::Contains("is the --input file"), error);
    CHECK_THROWS_WITH_AS(cli::check_output_file("--output", dir / "model" / "model.safetensors", reads),
                         doctest::Contains("is a file of the --model checkpoint"), error);
    CHECK_THROWS_WITH_AS(cli::check_output_file("--output", dir / "model" / "config.json", reads),
                         doctest::Contains("is a file of the --model checkpoint"), error);
}

TEST_CASE("cli outputs: a directory, a special file or a missing directory fail before any work") {
    const fs::path dir = scratch("kinds");
    CHECK_THROWS_WITH_AS(cli::check_output_file("--output", dir, {}), doctest::Contains("is a directory"), error);
    ::mkfifo((dir / "fifo").c_str(), 0600);
    CHECK_THROWS_WITH_AS(cli::check_output_file("--output", dir / "fifo", {}), doctest::Contains("is not a regular file"), error);
    CHECK_THROWS_WITH_AS(cli::check_output_file("--output", dir / "none" / "out.safetensors", {}),
                         doctest::Contains(("the directory '" + (dir / "none").string() + "' does not exist").c_str()), error);
    touch(dir / "file");
    CHECK_THROWS_WITH_AS(cli::check_output_file("--output", dir / "file" / "out.safetensors", {}),
                         doctest::Contains("is not a directory"), error);
    touch(dir / "old.safetensors");
    CHECK_NOTHROW(cli::check_output_file("--output", dir / "old.safetensors", {}));  // an old output is replaced
    if (::geteuid() != 0) {  // root may write anywhere
        fs::create_directories(dir / "locked");
        fs::permissions(dir / "locked", fs::perms::owner_read | fs::perms::owner_exec);
        CHECK_THROWS_WITH_AS(cli::check_output_file("--output", dir / "locked" / "out.safetensors", {}),
                             doctest::Contains("is not writable"), error);
        fs::permissions(dir / "locked", fs::perms::owner_all);
    }
}

TEST_CASE("cli outputs: init replaces a checkpoint only with --force") {
    const fs::path dir = scratch("init");
    CHECK_NOTHROW(cli::check_checkpoint_output("--out", dir / "new" / "deeper", false));
    CHECK_NOTHROW(cli::check_checkpoint_output("--out", dir, false));  // an empty directory
    touch(dir / "config.json");
    CHECK_THROWS_WITH_AS(cli::check_checkpoint_output("--out", dir, false),
                         doctest::Contains("already holds a checkpoint (config.json): pass --force to replace it"), error);
    CHECK_NOTHROW(cli::check_checkpoint_output("--out", dir, true));
    fs::remove(dir / "config.json");
    touch(dir / "model.safetensors.index.json");
    CHECK_THROWS_WITH_AS(cli::check_checkpoint_output("--out", dir, false), doctest::Contains("already holds a checkpoint"), error);
    touch(dir / "plain");
    CHECK_THROWS_WITH_AS(cli::check_checkpoint_output("--out", dir / "plain", true), doctest::Contains("is not a directory"), error);
    CHECK_THROWS_WITH_AS(cli::check_checkpoint_output("--out", dir / "plain" / "sub", false), doctest::Contains("is not a directory"),
                         error);
}

TEST_CASE("cli outputs: the files of a checkpoint, shards included") {
    const fs::path dir = scratch("files");
    touch(dir / "config.json");
    std::ofstream(dir / "model.safetensors.index.json")
        << R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})";
    touch(dir / "model-00001-of-00002.safetensors");
    touch(dir / "model-00002-of-00002.safetensors");
    touch(dir / "README.md");
    const auto files = cli::checkpoint_files(dir);
    CHECK(files.size() == 4);
    CHECK(std::find(files.begin(), files.end(), dir / "model-00002-of-00002.safetensors") != files.end());
    CHECK(std::find(files.begin(), files.end(), dir / "README.md") == files.end());
}

}  // namespace test_cli_output_paths
