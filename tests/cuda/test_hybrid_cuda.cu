// Layer-level hybrid models on the CUDA backend (docs/checkpoints.md, "Backends"). Their Mamba2
// layers (with each gated-norm placement), relu^2 and SwiGLU MLPs, residual multiplier, embedding
// multiplier and logits divisor run on the GPU: a random hybrid of such layers, its weights copied
// from a CPU model, gives the CPU's logits, and decoding on the GPU equals the GPU forward pass.
// Self-attention layers of their own have no CUDA kernel yet: a model holding one is refused
// before anything is allocated.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>
#include <transmamba/backend/cuda.cuh>
#include <transmamba/decode/session.hpp>
#include <transmamba/model/language_model.hpp>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "reference/reference.hpp"
#include "support/error_of.hpp"

using namespace transmamba;
using gpu = transmamba::cuda;  // plain `cuda` is ambiguous with libcu++'s namespace

namespace {

// Every hybrid piece that runs on CUDA, at sizes the CUDA scan and attention take (16, 16).
language_model_config mamba_mlp_hybrid() {
    language_model_config c;
    c.vocab_size = 48;
    c.tie_word_embeddings = false;
    c.embedding_multiplier = 1.7;
    c.logits_divisor = 3.0;
    c.backbone.mixer.d_model = 32;
    c.backbone.mixer.headdim = 16;
    c.backbone.mixer.d_state = 16;
    c.backbone.mixer.ngroups = 2;
    c.backbone.mixer.chunk_size = 8;
    c.backbone.num_layers = 4;
    c.backbone.d_ff = 48;
    c.backbone.hybrid.layers = {{hybrid_mixer::mamba2, hybrid_mlp::none},
                                {hybrid_mixer::none, hybrid_mlp::relu2},
                                {hybrid_mixer::mamba2, hybrid_mlp::swiglu},
                                {hybrid_mixer::mamba2, hybrid_mlp::relu2}};
    c.backbone.hybrid.residual_multiplier = 0.6;
    return c;
}

// The GPU model's parameters = the CPU model's (float), by name.
template <class T>
void copy_weights(language_model<float, cpu, hybrid_pattern>& from, language_model<T, gpu, hybrid_pattern>& to) {
    std::map<std::string, std::vector<T>> host;
    from.for_each_parameter([&](const std::string& name, auto& buf, const std::vector<index_t>&) {
        host[name] = std::vector<T>(buf.data(), buf.data() + buf.size());
    });
    to.for_each_parameter([&](const std::string& name, auto& buf, const std::vector<index_t>&) {
        const auto& h = host.at(name);
        REQUIRE(h.size() == buf.size());
        backend_traits<gpu>::copy_from_host(h.data(), buf.data(), h.size(), {});
    });
    backend_traits<gpu>::synchronize({});
}

template <class T>
std::vector<float> gpu_logits(const language_model<T, gpu, hybrid_pattern>& model, const std::vector<std::int64_t>& ids,
                              index_t batch, index_t L, index_t P) {
    const index_t V = model.vocab_size();
    device_buffer<float> logits(static_cast<std::size_t>(batch * L * V));
    workspace<gpu> ws;
    model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}), tensor_view<float, 3>(logits.data(), {batch, L, V}),
                  fixed_transpoint{P}, ws);
    std::vector<float> host(logits.size());
    backend_traits<gpu>::copy_to_host(logits.data(), host.data(), host.size(), {});
    backend_traits<gpu>::synchronize({});
    return host;
}

std::vector<float> cpu_logits(const language_model<float, cpu, hybrid_pattern>& model, const std::vector<std::int64_t>& ids,
                              index_t batch, index_t L, index_t P) {
    std::vector<float> out(static_cast<std::size_t>(batch * L * model.vocab_size()));
    workspace<cpu> ws;
    model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}),
                  tensor_view<float, 3>(out.data(), {batch, L, model.vocab_size()}), fixed_transpoint{P}, ws);
    return out;
}

}  // namespace

TEST_CASE_TEMPLATE("cuda hybrid: Mamba2 and MLP layers, norms and multipliers match the CPU backend", T, float,
                   __nv_bfloat16) {
    const bool is_float = std::is_same_v<T, float>;
    for (const gated_norm placement : {gated_norm::after_gate, gated_norm::before_gate, gated_norm::none}) {
        CAPTURE(static_cast<int>(placement));
        auto cfg = mamba_mlp_hybrid();
        cfg.backbone.mixer.norm_placement = placement;
        language_model<float, cpu, hybrid_pattern> host(cfg);
        randomize(host, 12);
        language_model<T, gpu, hybrid_pattern> dev(cfg);
        copy_weights(host, dev);

        const index_t batch = 2, L = 21;
        std::vector<std::int64_t> ids(static_cast<std::size_t>(batch * L));
        std::mt19937 rng(5);
        for (auto& id : ids) id = static_cast<std::int64_t>(rng() % 48);
        for (const index_t P : {index_t(0), index_t(9)}) {
            CAPTURE(P);
            const auto want = cpu_logits(host, ids, batch, L, P);
            const auto got = gpu_logits(dev, ids, batch, L, P);
            const double err = reference::max_relative_error(reference::to_double(got), reference::to_double(want));
            MESSAGE("hybrid logits, CUDA vs CPU: ", err);
            CHECK(err < (is_float ? 1e-4 : 2e-2));
        }

        // Decoding on the GPU: prefill of 6 tokens, then steps, each row = the GPU forward pass.
        const index_t P = 9, prompt = 6;
        const std::vector<std::int64_t> seq(ids.begin(), ids.begin() + L);
        const auto whole = gpu_logits(dev, seq, 1, L, P);
        inference_session<language_model<T, gpu, hybrid_pattern>> s(dev, fixed_transpoint{P}, L);
        std::vector<float> rows;
        const auto first = s.prefill(std::span<const std::int64_t>(seq.data(), std::size_t(prompt)));
        rows.insert(rows.end(), first.begin(), first.end());
        for (index_t t = prompt; t < L; ++t) {
            const auto r = s.step(seq[std::size_t(t)]);
            rows.insert(rows.end(), r.begin(), r.end());
        }
        const std::vector<float> tail(whole.begin() + (prompt - 1) * cfg.vocab_size, whole.end());
        const double derr = reference::max_relative_error(reference::to_double(rows), reference::to_double(tail));
        MESSAGE("hybrid decoding vs forward on CUDA: ", derr);
        CHECK(derr < (is_float ? 5e-5 : 2e-2));
    }
}

TEST_CASE("cuda hybrid: a self-attention layer is refused with a clear error") {
    language_model_config c = mamba_mlp_hybrid();
    c.backbone.hybrid.layers[1] = {hybrid_mixer::attention, hybrid_mlp::swiglu};
    c.backbone.hybrid.attention = {2, 1, 8, 0, 10000.0, 0.0};
    const std::string why = testing::error_of([&] { language_model<float, transmamba::cuda, hybrid_pattern> model(c); });
    CHECK(testing::has(why, "hybrid layer 1"));
    CHECK(testing::has(why, "run on the CPU backend only"));
    CHECK(testing::has(why, "no kernel for them yet"));
}
