// Decoding (SPEC.md section 5): prefill + step-by-step must give the outputs of one forward pass,
// whatever the TransPoint and wherever it is crossed (during the prefill or during decoding).
#include <doctest/doctest.h>

#include <limits>
#include <vector>

#include "support/bridge.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_block_decode {

using namespace transmamba;

namespace {

template <class T, class Policies = paper_policies>
void check_decode_equals_forward(const mixer_config& cfg, index_t L, index_t prompt, index_t P, std::uint64_t seed) {
    mixer<T, cpu, Policies> m(cfg);
    const auto d = testing::to_dims(cfg, 1, L);
    testing::load_weights(m.params(), reference::random_weights(d, seed));
    const auto u = testing::from_double<T>(reference::random_vector(std::size_t(L * cfg.d_model), seed + 1));
    std::vector<T> whole(u.size()), stepped(u.size(), std::numeric_limits<T>::quiet_NaN());
    workspace<cpu> ws;
    m.forward({u.data(), {1, L, cfg.d_model}}, {whole.data(), {1, L, cfg.d_model}}, P, ws);

    typename mixer<T, cpu, Policies>::decode_state st;
    workspace<cpu> dws;
    const auto span = dws.reserve(m.decode_workspace_bytes(prompt, L));
    m.prefill({u.data(), {1, prompt, cfg.d_model}}, {stepped.data(), {1, prompt, cfg.d_model}}, P, L, span, st);
    for (index_t t = prompt; t < L; ++t)
        m.step({u.data() + t * cfg.d_model, {cfg.d_model}}, {stepped.data() + t * cfg.d_model, {cfg.d_model}}, span, st);
    CAPTURE(P);
    CAPTURE(prompt);
    CHECK(reference::max_relative_error(reference::to_double(stepped), reference::to_double(whole)) <
          testing::tolerance<T>() * 10);
    CHECK(st.position == L);
    if (P < L) CHECK(st.keys.size() == 0);  // the cache is freed once the state has taken over
}

}  // namespace

TEST_CASE_TEMPLATE("decoding step by step equals one forward pass", T, float, double) {
    const auto cfg = testing::small_config(32, 16, 16, 2, 8);
    const index_t L = 29;
    std::uint64_t seed = 300;
    for (index_t prompt : {1, 5, 12, 29})
        for (index_t P : {0, 1, 4, 12, 13, 20, 29, 40}) check_decode_equals_forward<T>(cfg, L, prompt, P, seed++);
}

TEST_CASE("decoding with the RoPE and z-gated attention variants and the sequential scan") {
    const auto cfg = testing::small_config(32, 16, 16, 1, 8);
    check_decode_equals_forward<double, paper_policies::with_attention<rope_attention>>(cfg, 20, 3, 9, 1);
    check_decode_equals_forward<double, paper_policies::with_attention<z_gated_attention>>(cfg, 20, 3, 9, 2);
    check_decode_equals_forward<double, paper_policies::with_scan<sequential_scan>>(cfg, 20, 3, 9, 3);
}

TEST_CASE("decoding rejects a prompt longer than max_tokens and steps past the cache") {
    const auto cfg = testing::small_config(32, 16, 16, 1, 8);
    mixer<double, cpu> m(cfg);
    randomize(m.params(), 4);
    std::vector<double> u(10 * 32, 0.1), out(u.size());
    mixer<double, cpu>::decode_state st;
    workspace<cpu> ws;
    const auto span = ws.reserve(m.decode_workspace_bytes(10, 10));
    CHECK_THROWS_WITH_AS(m.prefill({u.data(), {1, 10, 32}}, {out.data(), {1, 10, 32}}, 4, 8, span, st),
                         doctest::Contains("exceeds max_tokens"), error);
    m.prefill({u.data(), {1, 3, 32}}, {out.data(), {1, 3, 32}}, 100, 4, span, st);
    m.step({u.data(), {32}}, {out.data(), {32}}, span, st);
    // position 4 is past max_tokens = 4 while still below P: the cache is full.
    CHECK_THROWS_WITH_AS(m.step({u.data(), {32}}, {out.data(), {32}}, span, st), doctest::Contains("max_tokens"), error);
}

TEST_CASE_TEMPLATE("a stack decodes step by step as one forward pass over max_tokens", T, float, double) {
    model_config mc;
    mc.mixer = testing::small_config(32, 16, 16, 2, 8);
    mc.d_ff = 48;
    mc.num_layers = 3;
    stack<T, cpu, paper_pattern> model(mc);
    randomize(model, 900);
    const index_t L = 26, d = mc.mixer.d_model;
    const cyclic_transpoints policy{0, 7, 100};  // SSM, a TransPoint crossed while decoding, attention
    const auto u = testing::from_double<T>(reference::random_vector(std::size_t(L * d), 5));
    std::vector<T> whole(u.size()), stepped(u.size());
    workspace<cpu> ws;
    model.forward({u.data(), {1, L, d}}, {whole.data(), {1, L, d}}, policy, ws);
    for (index_t prompt : {1, 4, 10}) {
        typename stack<T, cpu, paper_pattern>::decode_state st;
        workspace<cpu> dws;
        const auto span = dws.reserve(model.decode_workspace_bytes(prompt, L));
        model.prefill({u.data(), {1, prompt, d}}, {stepped.data(), {1, prompt, d}}, policy, L, span, st);
        for (index_t t = prompt; t < L; ++t) {
            std::copy_n(u.data() + t * d, d, stepped.data() + t * d);
            model.step({stepped.data() + t * d, {d}}, span, st);
        }
        CAPTURE(prompt);
        CHECK(reference::max_relative_error(reference::to_double(stepped), reference::to_double(whole)) <
              testing::tolerance<T>() * 10);
    }
}

}  // namespace test_block_decode
