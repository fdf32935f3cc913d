// Inference sessions over a language model: prefill + steps give the logits of one forward pass,
// for any schedule, with TransPoints crossed during the prefill and during decoding; sessions of
// different lengths share a model; memory stops growing after the last TransPoint.
#include <doctest/doctest.h>

#include <transmamba/decode/sampling.hpp>
#include <transmamba/decode/session.hpp>
#include <transmamba/model/language_model.hpp>
#include <transmamba/policy/transpoint_schedule.hpp>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "support/bridge.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_decode_session {

using namespace transmamba;

namespace {

using model_type = language_model<double, cpu, mamba2_pattern>;

model_type make_model(std::uint64_t seed) {
    language_model_config cfg;
    cfg.backbone.mixer = testing::small_config(32, 16, 16, 2, 8);
    cfg.backbone.num_layers = 3;
    cfg.vocab_size = 50;
    cfg.tie_word_embeddings = false;
    model_type m(cfg);
    randomize(m, seed);
    return m;
}

std::vector<std::int64_t> tokens(index_t n, std::uint64_t seed) {
    std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) ids[std::size_t(i)] = std::int64_t((i * 7 + std::int64_t(seed) * 13) % 50);
    return ids;
}

}  // namespace

TEST_CASE("a session's prefill and steps give the logits of one forward pass") {
    const auto model = make_model(1);
    const index_t L = 24, V = 50;
    const auto ids = tokens(L, 3);
    for (const cyclic_transpoints& policy : {cyclic_transpoints{0}, cyclic_transpoints{5, 100, 0}, cyclic_transpoints{30},
                                             cyclic_transpoints{12, 1}}) {
        std::vector<double> whole(std::size_t(L * V));
        workspace<cpu> ws;
        model.forward({ids.data(), {1, L}}, {whole.data(), {1, L, V}}, policy, ws);
        for (index_t prompt : {1, 8, 16}) {
            inference_session<model_type> s(model, policy, L);
            std::vector<double> got;
            std::vector<double> all;
            auto last = s.prefill(std::span(ids.data(), std::size_t(prompt)), &all);
            got.insert(got.end(), all.begin(), all.end());
            CHECK(std::equal(last.begin(), last.end(), all.end() - V));
            for (index_t t = prompt; t < L; ++t) {
                auto logits = s.step(ids[std::size_t(t)]);
                got.insert(got.end(), logits.begin(), logits.end());
            }
            CAPTURE(prompt);
            CAPTURE(policy.table[0]);
            CHECK(reference::max_relative_error(got, whole) < 1e-10);
        }
    }
}

TEST_CASE("sessions of different lengths share one model; memory is constant after the last TransPoint") {
    const auto model = make_model(2);
    const cyclic_transpoints policy{6};
    inference_session<model_type> a(model, policy, 40), b(model, policy, 40);
    const auto ids = tokens(40, 5);
    a.prefill(std::span(ids.data(), 3));
    b.prefill(std::span(ids.data(), 11));
    const std::size_t before = a.state_bytes();
    for (index_t t = 3; t <= 6; ++t) a.step(ids[std::size_t(t)]);  // the step at position P = 6 frees the cache
    for (index_t t = 11; t < 20; ++t) b.step(ids[std::size_t(t)]);
    const std::size_t at_p = a.state_bytes();
    for (index_t t = 7; t < 30; ++t) a.step(ids[std::size_t(t)]);
    CHECK(a.state_bytes() == b.state_bytes());  // both past P: window + state only
    CHECK(a.state_bytes() < before);            // the KV cache was freed at P
    CHECK(a.state_bytes() == at_p);
    CHECK(a.position() == 30);
    CHECK(b.position() == 20);
}

TEST_CASE("a session rejects bad token ids, an empty prompt and a step before the prefill") {
    const auto model = make_model(3);
    inference_session<model_type> s(model, all_ssm{}, 8);
    CHECK_THROWS_WITH_AS(s.step(1), doctest::Contains("before prefill"), error);
    const std::vector<std::int64_t> bad{1, 50};
    CHECK_THROWS_WITH_AS(s.prefill(bad), doctest::Contains("token id 50"), error);
    CHECK_THROWS_AS(s.prefill(std::span<const std::int64_t>()), error);
    const std::vector<std::int64_t> too_long(9, 1);
    CHECK_THROWS_WITH_AS(s.prefill(too_long), doctest::Contains("exceeds max_tokens"), error);
}

TEST_CASE("a TransPoint above max_tokens is attention for the whole session; a step past max_tokens is an error") {
    // Layer 1's P = 100 > max_tokens = 24: before, the session read it as 24 and the step at position
    // 24 silently switched that layer to the SSM (|session - forward| ~ 15).
    const auto model = make_model(4);
    const index_t L = 24, V = 50;
    const auto ids = tokens(L + 1, 6);
    const cyclic_transpoints policy{5, 100, 0};
    std::vector<double> whole(std::size_t(L * V));
    workspace<cpu> ws;
    model.forward({ids.data(), {1, L}}, {whole.data(), {1, L, V}}, policy, ws);

    inference_session<model_type> s(model, policy, L);
    CHECK(s.transpoints() == std::vector<index_t>{5, L, 0});
    std::vector<double> got;
    s.prefill(std::span(ids.data(), 7), &got);
    for (index_t t = 7; t < L; ++t) {
        const auto logits = s.step(ids[std::size_t(t)]);
        got.insert(got.end(), logits.begin(), logits.end());
    }
    CHECK(reference::max_relative_error(got, whole) < 1e-10);
    CHECK(s.position() == L);
    CHECK_THROWS_WITH_AS(s.step(ids[std::size_t(L)]), doctest::Contains("position 24 exceeds max_tokens = 24"), error);
    CHECK(s.position() == L);  // nothing was consumed
}

TEST_CASE("the stack refuses a decoding step past the max_tokens its TransPoints were resolved for") {
    const auto model = make_model(5);
    const auto& stack = model.backbone();
    const index_t d = model.d_model();
    model_type::stack_type::decode_state st;
    std::vector<double> u(std::size_t(2 * d), 0.25), out(std::size_t(2 * d));
    workspace<cpu> ws;
    const auto span = ws.reserve(stack.decode_workspace_bytes(2, 3));
    stack.prefill({u.data(), {1, 2, d}}, {out.data(), {1, 2, d}}, all_attention{}, 3, span, st);
    std::vector<double> h(std::size_t(d), 0.5);
    CHECK_NOTHROW(stack.step({h.data(), {d}}, span, st));  // position 2 of 3
    CHECK_THROWS_WITH_AS(stack.step({h.data(), {d}}, span, st), doctest::Contains("exceed max_tokens = 3"), error);
}

TEST_CASE("a pure-SSM session of 3e9 tokens holds only its states and a one-token workspace") {
    // Before, the decode scratch was sized for max_tokens tokens of attention: bad_alloc at 3e9.
    const auto model = make_model(6);
    const index_t max_tokens = 3'000'000'000;
    inference_session<model_type> s(model, all_ssm{}, max_tokens);
    CHECK(s.cache_tokens() == 0);
    const auto ids = tokens(12, 8);
    std::vector<double> got;
    s.prefill(std::span(ids.data(), 8), &got);
    for (index_t t = 8; t < 12; ++t) {
        const auto logits = s.step(ids[std::size_t(t)]);
        got.insert(got.end(), logits.begin(), logits.end());
    }
    // 3 layers of (window 3 x d_in_proj + state 4 x 16 x 16) doubles: ~30 KB; the workspace is that
    // of an 8-token forward pass.
    CHECK(s.state_bytes() < 64 * 1024);
    CHECK(s.workspace_bytes() < 256 * 1024);
    std::vector<double> whole(std::size_t(12 * 50));
    workspace<cpu> ws;
    model.forward({ids.data(), {1, 12}}, {whole.data(), {1, 12, 50}}, all_ssm{}, ws);
    CHECK(reference::max_relative_error(got, whole) < 1e-10);

    // With one layer below its TransPoint, memory follows min(P, max_tokens), not max_tokens.
    inference_session<model_type> hybrid(model, cyclic_transpoints{0, 16, 0}, max_tokens);
    CHECK(hybrid.cache_tokens() == 16);
    hybrid.prefill(std::span(ids.data(), 8));
    CHECK(hybrid.workspace_bytes() < 256 * 1024);
}

TEST_CASE("a language_model<double> session's logits go straight into the sampler") {
    const auto model = make_model(4);
    const auto prompt = tokens(6, 2);
    inference_session session(model, transpoint_schedule::fixed(3), 16);
    static_assert(std::is_same_v<decltype(session.prefill(prompt)), std::span<const double>>);
    auto logits = session.prefill(prompt);
    sampler greedy({}), sampled({0.8, 10, 0.95, 3});
    for (int i = 0; i < 4; ++i) {
        const std::vector<double> row(logits.begin(), logits.end());
        const auto want = index_t(std::max_element(row.begin(), row.end()) - row.begin());
        const auto next = greedy.next(logits);
        CHECK(next == want);
        CHECK(sampled.next(logits) < model.vocab_size());
        logits = session.step(next);
    }
}

}  // namespace test_decode_session
