// Decoding a language model on the GPU: a session's prefill and steps equal one forward pass, with
// TransPoints crossed during the prefill (P = 3 < prompt) and while decoding (P = 9), a pure SSM layer
// and an all-attention one, in float32 and bfloat16.
#include <doctest/doctest.h>

#include <transmamba/backend/cuda.cuh>
#include <transmamba/decode/session.hpp>
#include <transmamba/model/language_model.hpp>

#include <vector>

#include "reference/reference.hpp"
#include "support/bridge.hpp"

using namespace transmamba;

TEST_CASE_TEMPLATE("cuda session: prefill and steps equal the forward pass", T, float, __nv_bfloat16) {
    using model_type = language_model<T, transmamba::cuda, mamba2_pattern>;
    language_model_config cfg;
    cfg.backbone.mixer = testing::small_config(64, 16, 32, 2, 16);
    cfg.backbone.num_layers = 4;
    cfg.vocab_size = 60;
    model_type model(cfg);
    randomize(model, 8);
    const index_t L = 30, V = 60;
    std::vector<std::int64_t> ids(static_cast<std::size_t>(L));
    for (index_t i = 0; i < L; ++i) ids[std::size_t(i)] = (i * 11 + 3) % V;
    const cyclic_transpoints policy{0, 3, 9, 100};
    device_buffer<float> whole(static_cast<std::size_t>(L * V));
    workspace<transmamba::cuda> ws;
    model.forward({ids.data(), {1, L}}, {whole.data(), {1, L, V}}, policy, ws);
    std::vector<float> want(whole.size());
    backend_traits<transmamba::cuda>::copy_to_host(whole.data(), want.data(), want.size(), {});
    backend_traits<transmamba::cuda>::synchronize({});

    inference_session<model_type> s(model, policy, L);
    std::vector<float> got;
    const index_t prompt = 5;
    s.prefill(std::span(ids.data(), std::size_t(prompt)), &got);
    for (index_t t = prompt; t < L; ++t) {
        const auto row = s.step(ids[std::size_t(t)]);
        got.insert(got.end(), row.begin(), row.end());
    }
    // float32: rounding only; bf16: the forward pass and the steps round different intermediates.
    const double bound = std::is_same_v<T, float> ? 1e-4 : 3e-2;
    CHECK(reference::max_relative_error(reference::to_double(got), reference::to_double(want)) < bound);
}
