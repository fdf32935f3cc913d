// The training loop (train/trainer.hpp) on the CPU: a seed gives the same run bit for bit; a run
// saved after step k and resumed from the checkpoint takes exactly the steps of the uninterrupted
// run (same losses, same final weights and moments); a step updates every parameter.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "transmamba/io/training_checkpoint.hpp"
#include "transmamba/train/trainer.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_train_trainer {

using namespace transmamba;
namespace fs = std::filesystem;

namespace {

training_config tiny_mqar(index_t steps) {
    training_config c;
    c.model.vocab_size = 24;
    c.model.backbone.num_layers = 2;
    auto& m = c.model.backbone.mixer;
    m.d_model = 16;
    m.headdim = 8;
    m.d_state = 8;
    m.chunk_size = 8;
    c.schedule = transpoint_schedule::per_layer({0, 7});  // one SSM layer, one switching inside the sequence
    c.task = mqar_task{24, 20, 3, 3};
    c.steps = steps;
    c.batch = 4;
    c.seed = 3;
    c.lr = {3e-3, 3e-4, 3, steps};
    c.clip_norm = 0.5;  // small enough to clip some steps
    return c;
}

std::vector<std::vector<float>> weights_of(const training_state<float>& s) {
    std::vector<std::vector<float>> out;
    for (const auto& p : named_parameters(s.model)) out.emplace_back(p.values.begin(), p.values.end());
    return out;
}

bool same_bits(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i].size() != b[i].size() || std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0) return false;
    return true;
}

}  // namespace

TEST_CASE("trainer: the same seed gives the same run, bit for bit") {
    const auto c = tiny_mqar(8);
    trainer<float> a(training_state<float>::fresh(c)), b(training_state<float>::fresh(c));
    const auto initial = weights_of(a.state());
    std::vector<double> la, lb;
    while (!a.done()) la.push_back(a.step().loss);
    while (!b.done()) lb.push_back(b.step().loss);
    CHECK(la == lb);
    CHECK(same_bits(weights_of(a.state()), weights_of(b.state())));
    // Every parameter moved (each one gets a gradient), and the run is not a no-op.
    const auto final_weights = weights_of(a.state());
    const auto names = named_parameters(a.state().model);
    for (std::size_t i = 0; i < initial.size(); ++i) CHECK_MESSAGE(initial[i] != final_weights[i], names[i].name);
    // Another seed is another run.
    auto other = c;
    other.seed = 4;
    trainer<float> d(training_state<float>::fresh(other));
    CHECK(d.step().loss != la[0]);
}

TEST_CASE("trainer: resuming from a checkpoint gives exactly the uninterrupted run's losses") {
    const fs::path dir = fs::temp_directory_path() / ("transmamba_trainer_resume_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    const auto c = tiny_mqar(10);
    trainer<float> whole(training_state<float>::fresh(c));
    std::vector<double> uninterrupted;
    while (!whole.done()) uninterrupted.push_back(whole.step().loss);

    trainer<float> first(training_state<float>::fresh(c));
    std::vector<double> resumed;
    for (int i = 0; i < 4; ++i) resumed.push_back(first.step().loss);
    save_training_checkpoint(first.state(), dir);
    trainer<float> second(load_training_checkpoint<float>(dir));
    CHECK(second.state().step == 4);
    while (!second.done()) resumed.push_back(second.step().loss);
    CHECK(resumed == uninterrupted);
    CHECK(same_bits(weights_of(second.state()), weights_of(whole.state())));
    for (std::size_t i = 0; i < whole.state().optimizer.slots().size(); ++i) {
        const auto &x = whole.state().optimizer.slots()[i], &y = second.state().optimizer.slots()[i];
        CHECK(std::memcmp(x.exp_avg.data(), y.exp_avg.data(), x.exp_avg.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(x.exp_avg_sq.data(), y.exp_avg_sq.data(), x.exp_avg_sq.size() * sizeof(float)) == 0);
    }
    CHECK_THROWS_WITH_AS(second.step(), doctest::Contains("complete"), error);
    fs::remove_all(dir);
}

}  // namespace test_train_trainer
