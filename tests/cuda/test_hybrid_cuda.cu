// Layer-level hybrid models have no CUDA kernels yet (docs/checkpoints.md, "Backends"): building
// one on the CUDA backend is an error that says so, never a model that computes on host code
// with device pointers. Needs no GPU work: the refusal comes before any allocation.
#include <doctest/doctest.h>

#include <transmamba/backend/cuda.cuh>
#include <transmamba/model/language_model.hpp>

#include <string>

#include "support/error_of.hpp"

using namespace transmamba;

TEST_CASE("hybrid models are refused on the CUDA backend with a clear error") {
    language_model_config c;
    c.vocab_size = 16;
    c.backbone.mixer.d_model = 16;
    c.backbone.mixer.headdim = 8;
    c.backbone.mixer.d_state = 8;
    c.backbone.mixer.chunk_size = 8;
    c.backbone.num_layers = 2;
    c.backbone.d_ff = 16;
    c.backbone.hybrid.layers = {{hybrid_mixer::mamba2, hybrid_mlp::swiglu}, {hybrid_mixer::attention, hybrid_mlp::swiglu}};
    c.backbone.hybrid.attention = {2, 1, 8, 0, 10000.0, 0.0};
    const std::string why = testing::error_of([&] { language_model<float, transmamba::cuda, hybrid_pattern> model(c); });
    CHECK(testing::has(why, "run on the CPU backend only"));
    CHECK(testing::has(why, "CUDA backend has no kernels"));
}
