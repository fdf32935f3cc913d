// io/regular_file.hpp and the loader's edges: a FIFO, a socket or a device in place of any file the
// loader reads is an error naming the file and what it is, promptly (never a wait for a writer);
// symbolic link loops and other std::filesystem failures are transmamba::errors naming the path
// and the cause, never a bare "filesystem error".
#include <doctest/doctest.h>

#include <transmamba/io.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_io_regular_file {

using namespace transmamba;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
    const fs::path dir = fs::temp_directory_path() / ("transmamba_rf_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
}

// A saved two-layer model: the checkpoint in which each test replaces one file.
fs::path saved(const std::string& name) {
    const fs::path dir = fresh_dir(name);
    language_model_config c;
    c.backbone.mixer.d_model = 16;
    c.backbone.mixer.expand = 2;
    c.backbone.mixer.headdim = 8;
    c.backbone.mixer.d_state = 8;
    c.backbone.mixer.ngroups = 1;
    c.backbone.mixer.d_conv = 4;
    c.backbone.mixer.chunk_size = 8;
    c.backbone.num_layers = 2;
    c.vocab_size = 24;
    language_model<float, cpu> m(c);
    randomize(m, 7);
    save_checkpoint(m, transpoint_schedule::fixed(0), dir);
    return dir;
}

// Runs `call` on a thread of its own and returns the message of the transmamba::error it throws
// ("(no error)" when it returns). A call that blocks fails the test after a time limit instead of
// hanging the suite: the thread is left behind (it owns everything it uses), and a reader blocked
// in open() on `fifo` is released by opening its writing end, after the failure is recorded.
std::string error_in_time(std::function<void()> call, const fs::path& fifo = {}) {
    auto result = std::make_shared<std::promise<std::string>>();
    std::future<std::string> done = result->get_future();
    std::thread([call = std::move(call), result] {
        try {
            call();
            result->set_value("(no error)");
        } catch (const error& e) {
            result->set_value(e.what());
        } catch (const std::exception& e) {
            result->set_value(std::string("(not a transmamba::error) ") + e.what());
        }
    }).detach();
    if (done.wait_for(std::chrono::seconds(10)) == std::future_status::ready) return done.get();
    FAIL_CHECK("the call was still blocked after 10 s");
    if (!fifo.empty()) {
        const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
        if (fd >= 0) ::close(fd);
    }
    return "(blocked)";
}

void check_message(const std::string& msg, std::initializer_list<std::string_view> parts) {
    INFO(msg);
    for (auto p : parts) CHECK(msg.find(p) != std::string::npos);
}

void make_fifo(const fs::path& p) { REQUIRE(::mkfifo(p.c_str(), 0600) == 0); }

// A listening UNIX socket bound to `p`; the descriptor is closed by the caller.
int make_socket(const fs::path& p) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(p.string().size() < sizeof(addr.sun_path));
    std::strcpy(addr.sun_path, p.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0);
    return fd;
}

void replace_with_fifo(const fs::path& p) {
    fs::remove(p);
    make_fifo(p);
}

}  // namespace

TEST_CASE("regular_file: a FIFO, a socket, a device or a directory is refused by name, at once") {
    const fs::path dir = fresh_dir("kinds");
    const fs::path fifo = dir / "input.safetensors", sock = dir / "sock.safetensors", null_link = dir / "null.safetensors";
    make_fifo(fifo);
    const int sock_fd = make_socket(sock);
    fs::create_symlink("/dev/null", null_link);

    // The CLI's `run --input` reads through safetensors_file.
    check_message(error_in_time([=] { safetensors_file{fifo}; }, fifo),
                  {"'" + fifo.string() + "' is not a regular file (it is a FIFO (named pipe))"});
    check_message(error_in_time([=] { safetensors_file{sock}; }), {"'" + sock.string() + "'", "(it is a socket)"});
    check_message(error_in_time([=] { safetensors_file{null_link}; }), {"'" + null_link.string() + "'", "(it is a character device)"});
    check_message(error_in_time([=] { safetensors_file{dir}; }), {"(it is a directory)"});
    check_message(error_in_time([=] { (void)read_hf_mamba2_config(fifo); }, fifo), {"is not a regular file (it is a FIFO"});
    check_message(error_in_time([=] { (void)read_text_file(sock); }), {"(it is a socket)"});
    CHECK(status_of(fifo).describe() == "a FIFO (named pipe)");
    CHECK(status_of(dir / "absent").missing());

    // A regular file reads whole; one over the limit is refused before reading.
    std::ofstream(dir / "small.json") << "{\"a\": 1}";
    CHECK(read_text_file(dir / "small.json") == "{\"a\": 1}");
    check_message(error_in_time([=] { (void)read_text_file(dir / "small.json", 4, "a config"); }),
                  {"is 8 bytes, more than the 4 a config may have"});
    ::close(sock_fd);
    fs::remove_all(dir);
}

TEST_CASE("checkpoint: a FIFO, socket or device in place of a file fails promptly, naming it") {
    const fs::path dir = saved("fifo");
    const auto load = [dir] { (void)load_checkpoint<float, cpu>(dir); };
    const fs::path weights = dir / "model.safetensors", config = dir / "config.json";
    const fs::path weights_copy = dir / "weights.bak", config_copy = dir / "config.bak";
    fs::copy_file(weights, weights_copy);
    fs::copy_file(config, config_copy);
    const auto restore = [&] {
        fs::remove(weights);
        fs::remove(config);
        fs::copy_file(weights_copy, weights);
        fs::copy_file(config_copy, config);
    };
    REQUIRE(error_in_time(load) == "(no error)");

    replace_with_fifo(weights);
    check_message(error_in_time(load, weights), {"'" + weights.string() + "' is not a regular file (it is a FIFO"});
    restore();
    replace_with_fifo(config);
    check_message(error_in_time(load, config), {"'" + config.string() + "' is not a regular file (it is a FIFO"});
    restore();

    fs::remove(weights);
    const int sock_fd = make_socket(weights);
    check_message(error_in_time(load), {"'" + weights.string() + "'", "(it is a socket)"});
    ::close(sock_fd);
    restore();

    fs::remove(weights);
    fs::create_symlink("/dev/zero", weights);
    check_message(error_in_time(load), {"'" + weights.string() + "'", "(it is a character device)"});
    restore();
    fs::remove(config);
    fs::create_symlink("/dev/null", config);
    check_message(error_in_time(load), {"'" + config.string() + "'", "(it is a character device)"});
    restore();

    // Sharded: the index and a shard.
    fs::rename(weights, dir / "model-00001-of-00001.safetensors");
    const fs::path index = dir / "model.safetensors.index.json", shard = dir / "model-00001-of-00001.safetensors";
    nlohmann::json map = nlohmann::json::object();
    const safetensors_file weights_file(shard);
    for (const auto& t : weights_file.tensors()) map[t.name] = shard.filename().string();
    std::ofstream(index) << nlohmann::json{{"weight_map", map}}.dump();
    REQUIRE(error_in_time(load) == "(no error)");
    replace_with_fifo(shard);
    check_message(error_in_time(load, shard), {"'" + shard.string() + "' is not a regular file (it is a FIFO"});
    fs::remove(shard);
    fs::copy_file(weights_copy, shard);
    fs::rename(index, dir / "index.bak");
    make_fifo(index);
    check_message(error_in_time(load, index), {"'" + index.string() + "' is not a regular file (it is a FIFO"});
    fs::remove_all(dir);
}

TEST_CASE("checkpoint: symbolic link loops are errors naming the path and the cause") {
    const fs::path dir = saved("loop");
    const auto load = [dir] { (void)load_checkpoint<float, cpu>(dir); };
    const std::string loop_cause = std::strerror(ELOOP);  // "Too many levels of symbolic links"
    const auto make_loop = [](const fs::path& a, const fs::path& b) {
        fs::remove(a);
        fs::create_symlink(b.filename(), a);
        fs::create_symlink(a.filename(), b);
    };

    const fs::path weights = dir / "model.safetensors";
    fs::rename(weights, dir / "weights.bak");
    make_loop(weights, dir / "loop_b");
    check_message(error_in_time(load), {"cannot open '" + weights.string() + "': " + loop_cause});
    fs::remove(weights);
    fs::remove(dir / "loop_b");
    fs::rename(dir / "weights.bak", weights);

    const fs::path config = dir / "config.json";
    fs::rename(config, dir / "config.bak");
    make_loop(config, dir / "loop_c");
    check_message(error_in_time(load), {"cannot open '" + config.string() + "': " + loop_cause});

    // The checkpoint directory itself, for loading and for saving.
    const fs::path parent = fresh_dir("loop_dir");
    const fs::path looped = parent / "ckpt";
    make_loop(looped, parent / "other");
    check_message(error_in_time([looped] { (void)load_checkpoint<float, cpu>(looped); }),
                  {"checkpoint directory '" + looped.string() + "': " + loop_cause});
    check_message(error_in_time([looped] {
                      language_model_config c;
                      c.backbone.mixer.d_model = 16;
                      c.backbone.mixer.headdim = 8;
                      c.backbone.mixer.d_state = 8;
                      c.backbone.mixer.ngroups = 1;
                      c.backbone.mixer.chunk_size = 8;
                      c.backbone.num_layers = 1;
                      c.vocab_size = 8;
                      const language_model<float, cpu> m(c);
                      save_checkpoint(m, looped);
                  }),
                  {"save_checkpoint", "'" + looped.string() + "'", loop_cause});
    fs::remove_all(parent);
    fs::remove_all(dir);
}

}  // namespace test_io_regular_file
