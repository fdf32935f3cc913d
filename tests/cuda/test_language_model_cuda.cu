// The language model on the GPU (embedding_kernel<cuda>, the stack, the LM head on cuBLAS) against
// the CPU backend with the same weights, loaded from one checkpoint into float and bfloat16 storage.
#include <doctest/doctest.h>

#include <transmamba/backend/cuda.cuh>
#include <transmamba/backend/cuda/embedding.cuh>
#include <transmamba/io.hpp>
#include <transmamba/io/cuda_elements.cuh>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "reference/reference.hpp"

using namespace transmamba;
using gpu = transmamba::cuda;  // plain `cuda` is ambiguous with libcu++'s namespace

namespace {

template <class T>
std::vector<float> gpu_logits(const language_model<T, gpu>& model, const std::vector<std::int64_t>& ids, index_t batch,
                              index_t L, const transpoint_schedule& schedule) {
    const index_t V = model.vocab_size();
    device_buffer<float> logits(static_cast<std::size_t>(batch * L * V));
    workspace<gpu> ws;
    model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}), tensor_view<float, 3>(logits.data(), {batch, L, V}),
                  schedule, ws);
    std::vector<float> host(logits.size());
    backend_traits<gpu>::copy_to_host(logits.data(), host.data(), host.size(), {});
    backend_traits<gpu>::synchronize({});
    return host;
}

}  // namespace

TEST_CASE("language_model<cuda> matches the CPU backend, float and bfloat16 weights from one checkpoint") {
    language_model_config cfg;
    cfg.backbone.mixer.d_model = 64;
    cfg.backbone.mixer.headdim = 16;
    cfg.backbone.mixer.d_state = 16;
    cfg.backbone.mixer.ngroups = 2;
    cfg.backbone.mixer.chunk_size = 16;
    cfg.backbone.num_layers = 2;
    cfg.vocab_size = 96;
    cfg.tie_word_embeddings = false;

    language_model<float, cpu> host(cfg);
    randomize(host, 31);
    const auto dir = std::filesystem::temp_directory_path() / ("transmamba_lm_cuda_" + std::to_string(::getpid()));
    const auto schedule = transpoint_schedule::per_layer({9, 20});
    save_checkpoint(host, schedule, dir);
    const auto gpu_f = load_checkpoint<float, gpu>(dir);
    const auto gpu_b = load_checkpoint<__nv_bfloat16, gpu>(dir);
    std::filesystem::remove_all(dir);

    const index_t batch = 2, L = 37;
    std::vector<std::int64_t> ids(static_cast<std::size_t>(batch * L));
    std::mt19937 rng(4);
    for (auto& id : ids) id = static_cast<std::int64_t>(rng() % 96);
    std::vector<float> want(static_cast<std::size_t>(batch * L * cfg.vocab_size));
    workspace<cpu> ws;
    host.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}),
                 tensor_view<float, 3>(want.data(), {batch, L, cfg.vocab_size}), schedule, ws);

    const auto f = gpu_logits(gpu_f.model, ids, batch, L, gpu_f.schedule);
    const auto b = gpu_logits(gpu_b.model, ids, batch, L, gpu_b.schedule);
    CHECK(reference::max_relative_error(reference::to_double(f), reference::to_double(want)) < 1e-4);
    CHECK(reference::max_relative_error(reference::to_double(b), reference::to_double(want)) < 5e-2);

    // Token ids are checked on the host before anything runs.
    ids[5] = 96;
    CHECK_THROWS_WITH_AS(gpu_logits(gpu_f.model, ids, batch, L, gpu_f.schedule),
                         doctest::Contains("token id 96 at position (batch 0, token 5)"), error);
}
