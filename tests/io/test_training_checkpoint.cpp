// Training checkpoints (io/training_checkpoint.hpp): a saved run comes back bit for bit (weights,
// both moments, step, data position, config); its model files load with load_checkpoint (the path
// of `transmamba run` / `generate`) to the same weights; a write that fails midway, or a process
// killed midway through one, leaves the previous checkpoint whole; damaged or foreign states are
// refused by name.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "support/error_of.hpp"
#include "transmamba/io/training_checkpoint.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_io_training_checkpoint {

using namespace transmamba;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const char* name) {
    const fs::path dir = fs::temp_directory_path() / ("transmamba_train_ckpt_" + std::to_string(::getpid())) / name;
    fs::remove_all(dir);
    fs::create_directories(dir.parent_path());
    return dir;
}

training_config small_config() {
    training_config c;
    c.model.vocab_size = 40;
    c.model.tie_word_embeddings = false;
    c.model.backbone.num_layers = 2;
    auto& m = c.model.backbone.mixer;
    m.d_model = 16;
    m.headdim = 8;
    m.d_state = 8;
    m.chunk_size = 8;
    c.schedule = transpoint_schedule::per_layer({0, 5});
    c.task = mqar_task{40, 32, 4, 3};
    c.steps = 50;
    c.batch = 3;
    c.seed = 77;
    c.lr = {2e-3, 2e-4, 5, 50};
    c.adamw.weight_decay = 0.05;
    c.clip_norm = 0.5;
    return c;
}

// A state in the middle of a run: random moments, moved weights, step 7.
training_state<float> midway() {
    auto s = training_state<float>::fresh(small_config());
    std::mt19937_64 rng(5);
    std::normal_distribution<float> normal;
    for (auto& slot : s.optimizer.slots()) {
        for (auto& x : slot.exp_avg.span()) x = normal(rng);
        for (auto& x : slot.exp_avg_sq.span()) x = std::fabs(normal(rng));
    }
    for (auto& p : named_parameters(s.model))
        for (auto& x : p.values) x += 1e-3f * normal(rng);
    s.step = 7;
    s.optimizer.set_steps(7);
    s.batches_drawn = 7;
    return s;
}

template <class T>
bool same_bits(std::span<const T> a, std::span<const T> b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

void require_equal(const training_state<float>& a, const training_state<float>& b) {
    const auto pa = named_parameters(a.model), pb = named_parameters(b.model);
    REQUIRE(pa.size() == pb.size());
    for (std::size_t i = 0; i < pa.size(); ++i) {
        CHECK(pa[i].name == pb[i].name);
        CHECK_MESSAGE(same_bits<float>(pa[i].values, pb[i].values), pa[i].name);
    }
    REQUIRE(a.optimizer.slots().size() == b.optimizer.slots().size());
    for (std::size_t i = 0; i < a.optimizer.slots().size(); ++i) {
        const auto &sa = a.optimizer.slots()[i], &sb = b.optimizer.slots()[i];
        CHECK(sa.name == sb.name);
        CHECK(sa.decayed == sb.decayed);
        CHECK(same_bits<float>(sa.exp_avg.span(), sb.exp_avg.span()));
        CHECK(same_bits<float>(sa.exp_avg_sq.span(), sb.exp_avg_sq.span()));
    }
    CHECK(a.step == b.step);
    CHECK(a.optimizer.steps() == b.optimizer.steps());
    CHECK(a.batches_drawn == b.batches_drawn);
    CHECK(io_detail::training_config_to_json(a.config) == io_detail::training_config_to_json(b.config));
    CHECK(io_detail::model_config_text<mamba2_pattern>(a.config) == io_detail::model_config_text<mamba2_pattern>(b.config));
}

}  // namespace

TEST_CASE("training checkpoint: save and load give the same run, bit for bit") {
    const fs::path dir = scratch("roundtrip");
    const auto saved = midway();
    save_training_checkpoint(saved, dir);
    const auto back = load_training_checkpoint<float>(dir);
    require_equal(saved, back);
    CHECK(back.config.schedule.transpoints == std::vector<index_t>{0, 5});
    CHECK(std::get<mqar_task>(back.config.task).queries == 3);
    CHECK(back.config.lr.warmup_steps == 5);
    CHECK(back.config.clip_norm == 0.5);

    // The model files are the ones `run` and `generate` load: same weights, same schedule.
    const auto loaded = load_checkpoint<float, cpu, mamba2_pattern>(dir);
    CHECK(loaded.schedule.transpoints == std::vector<index_t>{0, 5});
    const auto pa = named_parameters(saved.model);
    const auto pl = named_parameters(loaded.model);
    REQUIRE(pa.size() == pl.size());
    for (std::size_t i = 0; i < pa.size(); ++i) CHECK(same_bits<float>(pa[i].values, pl[i].values));
}

TEST_CASE("training checkpoint: a write that fails midway keeps the old checkpoint whole") {
    const fs::path dir = scratch("failing");
    const auto old_state = midway();
    save_training_checkpoint(old_state, dir);
    const auto size = fs::file_size(dir / training_state_file);

    auto next = midway();
    next.step = 8;
    next.optimizer.set_steps(8);
    for (auto& x : next.optimizer.slots()[0].exp_avg.span()) x += 1.0f;
    // The file system refuses to let any file grow past half the state's size: write() fails in the
    // middle of the tensors (EFBIG), as on a full disk.
    struct rlimit old_limit {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old_limit;
    small.rlim_cur = static_cast<rlim_t>(size / 2);
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    const std::string message = testing::error_of([&] { save_training_checkpoint(next, dir); });
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    ::signal(SIGXFSZ, old_handler);
    CHECK(testing::has(message, "training_state.safetensors"));

    const auto back = load_training_checkpoint<float>(dir);
    require_equal(old_state, back);
    for (const auto& e : fs::directory_iterator(dir))  // no temporary file is left behind
        CHECK_MESSAGE(e.path().filename().string().find(".tmp-") == std::string::npos, e.path().string());
}

TEST_CASE("training checkpoint: a process killed in the middle of a save loses nothing") {
    const fs::path dir = scratch("killed");
    const auto old_state = midway();
    save_training_checkpoint(old_state, dir);
    const auto size = fs::file_size(dir / training_state_file);
    auto next = midway();
    next.step = 9;
    next.optimizer.set_steps(9);

    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // SIGXFSZ's default action kills the process the moment a write crosses the limit: a kill
        // in the middle of writing the new state.
        ::signal(SIGXFSZ, SIG_DFL);
        struct rlimit small {};
        ::getrlimit(RLIMIT_FSIZE, &small);
        small.rlim_cur = static_cast<rlim_t>(size / 3);
        ::setrlimit(RLIMIT_FSIZE, &small);
        try {
            save_training_checkpoint(next, dir);
        } catch (...) {
        }
        ::_exit(0);  // not reached when the kill works
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGXFSZ);
    require_equal(old_state, load_training_checkpoint<float>(dir));
    CHECK(load_checkpoint<float, cpu, mamba2_pattern>(dir).model.vocab_size() == 40);
}

TEST_CASE("training checkpoint: refusals name what is wrong") {
    const fs::path dir = scratch("refusals");
    fs::create_directories(dir);
    CHECK(testing::has(testing::error_of([&] { (void)load_training_checkpoint<float>(dir); }), "holds no training run"));
    // A model checkpoint alone is not a run.
    save_checkpoint(midway().model, transpoint_schedule::fixed(0), dir);
    CHECK(testing::has(testing::error_of([&] { (void)load_training_checkpoint<float>(dir); }), "optimizer's state"));
    // A state saved as float is not read as double.
    save_training_checkpoint(midway(), dir);
    CHECK(testing::has(testing::error_of([&] { (void)load_training_checkpoint<double>(dir); }), "dtype F32, expected F64"));
    // A text file that changed under a bytes run.
    const fs::path text = dir / "text.txt";
    std::ofstream(text) << std::string(200, 'x');
    auto c = small_config();
    c.task = byte_lm_task::open(text, 16);
    c.model.vocab_size = 256;
    save_training_checkpoint(training_state<float>::fresh(c), dir);
    CHECK(std::get<byte_lm_task>(load_training_checkpoint<float>(dir).config.task).size() == 200);
    std::ofstream(text) << std::string(201, 'x');
    CHECK(testing::has(testing::error_of([&] { (void)load_training_checkpoint<float>(dir); }), "has changed"));
}

}  // namespace test_io_training_checkpoint
