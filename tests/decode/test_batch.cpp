// Batched decoding (decode/batch.hpp): every sequence's logits, token by token, equal those of an
// inference_session decoding it alone (which tests/decode/test_session.cpp checks against one
// forward pass), with sequences joining and leaving at different steps, listed in different orders,
// each at its own TransPoint stage; KV pages follow the tokens cached and are reused; bad calls are
// errors that change nothing.
#include <doctest/doctest.h>

#include <transmamba/decode/batch.hpp>
#include <transmamba/decode/session.hpp>
#include <transmamba/model/language_model.hpp>

#include <algorithm>
#include <map>
#include <vector>

#include "support/bridge.hpp"
#include "support/error_of.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_decode_batch {

using namespace transmamba;
using namespace transmamba::testing;

namespace {

using model_type = language_model<double, cpu, paper_pattern>;

model_type make_model(std::uint64_t seed) {
    language_model_config cfg;
    cfg.backbone.mixer = small_config(32, 16, 16, 2, 8);
    cfg.backbone.d_ff = 40;
    cfg.backbone.num_layers = 3;
    cfg.vocab_size = 50;
    cfg.tie_word_embeddings = false;
    model_type m(cfg);
    randomize(m, seed);
    return m;
}

std::int64_t token_of(index_t sequence, index_t position) { return (sequence * 17 + position * 7 + 3) % 50; }

std::vector<std::int64_t> prompt_of(index_t sequence, index_t length) {
    std::vector<std::int64_t> ids;
    for (index_t t = 0; t < length; ++t) ids.push_back(token_of(sequence, t));
    return ids;
}

// One sequence of a schedule: joins before step `join`, with a prompt of `prompt` tokens, is fed
// `steps` tokens, then leaves.
struct planned {
    index_t join, prompt, steps, max_tokens;
};

// Logits of the sequence decoded alone: the prompt's last, then one row per step.
std::vector<std::vector<double>> alone(const model_type& model, const cyclic_transpoints& policy, index_t s,
                                       const planned& p) {
    inference_session<model_type> session(model, policy, p.max_tokens);
    std::vector<std::vector<double>> rows;
    const auto prompt = prompt_of(s, p.prompt);
    auto l = session.prefill(prompt);
    rows.emplace_back(l.begin(), l.end());
    for (index_t i = 0; i < p.steps; ++i) {
        l = session.step(token_of(s, p.prompt + i));
        rows.emplace_back(l.begin(), l.end());
    }
    return rows;
}

double run_schedule(const model_type& model, const cyclic_transpoints& policy, const std::vector<planned>& plan,
                    batch_options options, bool reverse_order) {
    inference_batch<model_type> batch(model, policy, options);
    std::vector<std::vector<std::vector<double>>> want;
    for (index_t s = 0; s < index_t(plan.size()); ++s) want.push_back(alone(model, policy, s, plan[std::size_t(s)]));
    std::map<index_t, index_t> id_of;  // plan index -> batch id
    std::map<index_t, index_t> fed;    // plan index -> steps fed so far
    double worst = 0;
    const index_t V = model.vocab_size();
    for (index_t step = 0;; ++step) {
        for (index_t s = 0; s < index_t(plan.size()); ++s)
            if (plan[std::size_t(s)].join == step) {
                id_of[s] = batch.join(prompt_of(s, plan[std::size_t(s)].prompt), plan[std::size_t(s)].max_tokens);
                fed[s] = 0;
                const auto l = batch.logits(id_of[s]);
                worst = std::max(worst, reference::max_relative_error(std::vector<double>(l.begin(), l.end()),
                                                                       want[std::size_t(s)][0]));
            }
        std::vector<index_t> order, ids;
        std::vector<std::int64_t> tokens;
        for (const auto& [s, id] : id_of) order.push_back(s);
        if (reverse_order) std::reverse(order.begin(), order.end());
        for (index_t s : order) {
            ids.push_back(id_of[s]);
            tokens.push_back(token_of(s, plan[std::size_t(s)].prompt + fed[s]));
        }
        if (ids.empty()) {
            if (step > 40) break;
            continue;
        }
        const auto rows = batch.step(ids, tokens);
        REQUIRE(rows.size() == ids.size() * std::size_t(V));
        for (std::size_t r = 0; r < order.size(); ++r) {
            const index_t s = order[r];
            const std::vector<double> got(rows.begin() + index_t(r) * V, rows.begin() + index_t(r + 1) * V);
            worst = std::max(worst, reference::max_relative_error(got, want[std::size_t(s)][std::size_t(++fed[s])]));
            const auto kept = batch.logits(id_of[s]);
            CHECK(std::equal(kept.begin(), kept.end(), got.begin()));
            CHECK(batch.position(id_of[s]) == plan[std::size_t(s)].prompt + fed[s]);
        }
        for (std::size_t r = 0; r < order.size(); ++r) {
            const index_t s = order[r];
            if (fed[s] == plan[std::size_t(s)].steps) {
                batch.leave(id_of[s]);
                CHECK_FALSE(batch.contains(id_of[s]));
                id_of.erase(s);
            }
        }
    }
    CHECK(batch.size() == 0);
    CHECK(batch.pool().pages_in_use() == 0);  // every page given back
    return worst;
}

}  // namespace

TEST_CASE("batched decoding equals decoding each sequence alone, with sequences joining and leaving") {
    const auto model = make_model(1);
    // Layers at P = 0 (SSM throughout), 6 (crossed while decoding, or inside the prompt) and 100
    // (attention for the whole sequence), and a second schedule crossing P = 1 and 13.
    const std::vector<planned> plan{
        {0, 1, 14, 20},   // prompt of 1: crosses P = 6 while decoding
        {0, 9, 6, 40},    // prompt past P = 6
        {2, 3, 12, 16},   // joins later; steps up to max_tokens - 1
        {3, 13, 2, 30},   // prompt on a page boundary (page_tokens 4 and 13: not), leaves early
        {5, 4, 8, 12},    // prompt fills exactly one page of 4
        {9, 2, 20, 22},   // joins after others left
    };
    for (const auto& policy : {cyclic_transpoints{0, 6, 100}, cyclic_transpoints{13, 1}}) {
        for (index_t page : {4, 16}) {
            CAPTURE(page);
            CAPTURE(policy.table[0]);
            CHECK(run_schedule(model, policy, plan, {page, 0}, false) < 1e-10);
            CHECK(run_schedule(model, policy, plan, {page, 0}, true) < 1e-10);
        }
    }
}

TEST_CASE("batched decoding: KV pages follow the cached tokens, are given back at the TransPoint and on leave, and are reused") {
    const auto model = make_model(2);
    // One layer of three attends throughout, one converts at 10, one is an SSM layer.
    inference_batch<model_type> batch(model, cyclic_transpoints{100, 10, 0}, {4, 0});
    const auto a = batch.join(prompt_of(0, 3), 64);
    // Layer P=100 and layer P=10 each hold one page for 3 tokens.
    CHECK(batch.pool().pages_in_use() == 2);
    std::vector<index_t> ids{a};
    for (index_t t = 3; t < 10; ++t) batch.step(ids, std::vector<std::int64_t>{token_of(0, t)});
    CHECK(batch.position(a) == 10);
    CHECK(batch.pool().pages_in_use() == 3 + 3);  // 10 tokens: 3 pages of 4 in each caching layer
    batch.step(ids, std::vector<std::int64_t>{token_of(0, 10)});  // position 10 = P: layer 2 converts
    CHECK(batch.pool().pages_in_use() == 3);                       // 11 tokens, only layer 1 caches
    const index_t peak = batch.pool().pages_allocated();
    CHECK(peak == 6);
    batch.leave(a);
    CHECK(batch.pool().pages_in_use() == 0);
    CHECK(batch.pool().pages_allocated() == peak);  // kept for reuse
    // Two new sequences of 8 tokens need 2 pages in each of 2 caching layers each: 8 <= peak, no growth.
    const auto b = batch.join(prompt_of(1, 8), 64), c = batch.join(prompt_of(2, 5), 64);
    CHECK(batch.pool().pages_in_use() == 4 + 4);
    CHECK(batch.pool().pages_allocated() == 8);  // 6 reused, 2 new
    batch.leave(b);
    batch.leave(c);
    CHECK(batch.pool().pages_in_use() == 0);
    CHECK(batch.state_bytes() == 0);
}

TEST_CASE("batched decoding: bad calls are errors naming what is wrong, and change nothing") {
    const auto model = make_model(3);
    inference_batch<model_type> batch(model, cyclic_transpoints{5, 0}, {4, 6});  // layers at P = 5, 0, 5
    const auto a = batch.join(prompt_of(0, 2), 3);
    const std::vector<std::int64_t> one{1}, two{1, 2};
    CHECK(has(error_of([&] { batch.step(std::vector<index_t>{a + 7}, one); }), "unknown sequence id 7"));
    CHECK(has(error_of([&] { batch.leave(a + 7); }), "unknown sequence id"));
    CHECK(has(error_of([&] { batch.step(std::vector<index_t>{a, a}, two); }), "listed twice"));
    CHECK(has(error_of([&] { batch.step(std::vector<index_t>{a}, two); }), "1 sequence ids and 2 tokens"));
    CHECK(has(error_of([&] { batch.step(std::vector<index_t>{a}, std::vector<std::int64_t>{50}); }), "out of range"));
    CHECK(has(error_of([&] { (void)batch.join(prompt_of(1, 4), 3); }), "exceeds max_tokens"));
    CHECK(batch.position(a) == 2);
    batch.step(std::vector<index_t>{a}, one);  // position 2 -> 3 = max_tokens
    CHECK(has(error_of([&] { batch.step(std::vector<index_t>{a}, one); }), "exceeds its max_tokens = 3"));
    CHECK(batch.position(a) == 3);
    // The pool allows 6 pages: a holds 2 (one in each caching layer), b and c 2 each.
    const auto b = batch.join(prompt_of(1, 4), 8);
    const auto c = batch.join(prompt_of(2, 4), 8);
    CHECK(batch.pool().pages_in_use() == 6);
    CHECK(has(error_of([&] { (void)batch.join(prompt_of(3, 1), 8); }), "KV page pool exhausted"));
    CHECK(has(error_of([&] { batch.step(std::vector<index_t>{b}, one); }), "KV page pool exhausted"));  // position 4 needs 2 pages
    CHECK(batch.position(b) == 4);
    batch.leave(c);
    batch.step(std::vector<index_t>{b}, one);
    CHECK(batch.position(b) == 5);
}

}  // namespace test_decode_batch
