// Two threads running forward() on one const model at once (issue 15): the first call of each
// checks the weights and sets a "checked" flag that both the language model and every mixer keep;
// as a plain bool that flag was a data race (ThreadSanitizer reports it). The results must equal a
// serial run. docs/design.md ("Threads") says how this case was run under -fsanitize=thread.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include <cstdint>
#include <thread>
#include <vector>

#include "support/bridge.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_model_concurrent_forward {

using namespace transmamba;

TEST_CASE("two threads share one model: concurrent forward passes equal a serial run") {
    language_model_config cfg;
    cfg.backbone.mixer = testing::small_config(/*d_model=*/32, /*headdim=*/8, /*d_state=*/16, /*ngroups=*/2, /*chunk=*/8);
    cfg.backbone.num_layers = 2;
    cfg.vocab_size = 40;
    language_model<float, cpu> model(cfg);
    randomize(model, 7);
    const index_t L = 12, V = cfg.vocab_size;
    const fixed_transpoint policy{5};
    std::vector<std::int64_t> ids(static_cast<std::size_t>(2 * L));
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = std::int64_t((i * 11 + 3) % 40);
    const std::int64_t* id[2] = {ids.data(), ids.data() + L};

    const auto run = [&](const language_model<float, cpu>& m, const std::int64_t* tokens) {
        std::vector<float> logits(static_cast<std::size_t>(L * V));
        workspace<cpu> ws;
        m.forward({tokens, {1, L}}, {logits.data(), {1, L, V}}, policy, ws);
        return logits;
    };
    const std::vector<float> serial[2] = {run(model, id[0]), run(model, id[1])};

    for (int round = 0; round < 4; ++round) {
        // A mutable walk marks every weight for a check again, so both threads race to do it.
        model.for_each_parameter([](const std::string&, auto&, const std::vector<index_t>&) {});
        const auto& shared = model;
        std::vector<float> got[2];
        std::thread a([&] { got[0] = run(shared, id[0]); });
        std::thread b([&] { got[1] = run(shared, id[1]); });
        a.join();
        b.join();
        CAPTURE(round);
        CHECK(got[0] == serial[0]);
        CHECK(got[1] == serial[1]);
    }
}

}  // namespace test_model_concurrent_forward
