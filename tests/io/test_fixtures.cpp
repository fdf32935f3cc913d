// Checkpoints written by transformers 5.17 (tests/data/make_fixtures.py, run on a GPU machine with
// torch 2.11): each loads, and its logits match the float64 re-implementation of SPEC.md that the
// script ran at several TransPoint schedules (float 1e-4, double 1e-9 relative to the largest logit)
// and, at TransPoint 0 with n_groups == 1, transformers' own float32 logits. With n_groups > 1
// transformers' torch path normalizes over all of d_inner where SPEC (and mamba_ssm) normalize per
// group, so there its logits are not a reference: the test checks that they do differ.
#include <doctest/doctest.h>

#include <transmamba/io.hpp>

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "reference/reference.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_io_fixtures {

using namespace transmamba;
namespace fs = std::filesystem;

namespace {

const fs::path data_dir = TRANSMAMBA_TEST_DATA_DIR;

template <class T>
std::vector<double> logits_of(const language_model<T, cpu>& model, const std::vector<std::int64_t>& ids, index_t batch,
                              index_t L, const transpoint_schedule& schedule) {
    std::vector<T> logits(static_cast<std::size_t>(batch * L * model.vocab_size()));
    workspace<cpu> ws;
    model.forward(tensor_view<const std::int64_t, 2>(ids.data(), {batch, L}),
                  tensor_view<T, 3>(logits.data(), {batch, L, model.vocab_size()}), schedule, ws);
    return reference::to_double(logits);
}

void check_fixture(const std::string& name, bool tied, index_t ngroups, bool has_schedule) {
    CAPTURE(name);
    const fs::path dir = data_dir / name;
    const auto f = load_checkpoint<float, cpu>(dir);
    const auto d = load_checkpoint<double, cpu>(dir);
    CHECK(f.model.tied() == tied);
    CHECK(f.config.n_groups == ngroups);
    CHECK(std::isinf(f.config.time_step_limit[1]));  // {"__float__": "Infinity"}
    CHECK(f.config.extra.at("transformers_version") == "5.17.0");
    CHECK(f.has_schedule == has_schedule);

    const safetensors_file expected(dir / "expected.safetensors");
    const auto& ids_info = expected.at("input_ids");
    REQUIRE(ids_info.shape.size() == 2);
    const index_t batch = ids_info.shape[0], L = ids_info.shape[1];
    const auto ids = expected.read<std::int64_t>("input_ids");
    const auto schedules = nlohmann::json::parse(expected.metadata().at("schedules"));
    REQUIRE(schedules.size() >= 3);
    for (const auto& [schedule_name, points] : schedules.items()) {
        CAPTURE(schedule_name);
        const auto schedule = transpoint_schedule::per_layer(points.get<std::vector<index_t>>());
        const auto want = expected.read<double>("logits.ref." + schedule_name);
        const double err_f = reference::max_relative_error(logits_of(f.model, ids, batch, L, schedule), want);
        const double err_d = reference::max_relative_error(logits_of(d.model, ids, batch, L, schedule), want);
        MESSAGE(name << ", schedule " << schedule_name << ": float " << err_f << ", double " << err_d);
        CHECK(err_f < 1e-4);
        CHECK(err_d < 1e-9);
    }
    if (has_schedule) {  // the checkpoint's own schedule is the script's "mixed" one
        const auto want = expected.read<double>("logits.ref.mixed");
        CHECK(reference::max_relative_error(logits_of(d.model, ids, batch, L, d.schedule), want) < 1e-9);
    }

    const auto hf = reference::to_double(expected.read<float>("logits.transformers"));
    const double err_hf = reference::max_relative_error(logits_of(f.model, ids, batch, L, transpoint_schedule::fixed(0)), hf);
    MESSAGE(name << ", float at P = 0 against transformers' float32 logits: " << err_hf);
    if (ngroups == 1) CHECK(err_hf < 1e-4);
    else CHECK(err_hf > 1e-2);  // transformers' full-d_inner norm, not SPEC's grouped one
}

}  // namespace

TEST_CASE("fixtures from transformers: n_groups 1, tied embeddings, float32 weights") {
    check_fixture("mamba2_g1_tied", /*tied=*/true, 1, /*has_schedule=*/false);
}

TEST_CASE("fixtures from transformers: n_groups 2, untied, with a transmamba object (per-layer TransPoints 9, 3)") {
    const auto m = load_hf_mamba2(data_dir / "mamba2_g2_untied");
    CHECK(m.schedule == transpoint_schedule::per_layer({9, 3}));
    check_fixture("mamba2_g2_untied", /*tied=*/false, 2, /*has_schedule=*/true);
}

TEST_CASE("fixtures from transformers: n_groups 1, untied, bfloat16 weights") {
    CHECK(safetensors_file(data_dir / "mamba2_g1_untied_bf16" / "model.safetensors").at("lm_head.weight").type == dtype::BF16);
    check_fixture("mamba2_g1_untied_bf16", /*tied=*/false, 1, /*has_schedule=*/false);
}

TEST_CASE("fixtures from transformers: a transformers checkpoint saved by transmamba loads back bit for bit") {
    const auto loaded = load_checkpoint<float, cpu>(data_dir / "mamba2_g1_untied_bf16");
    const fs::path dir = fs::temp_directory_path() / ("transmamba_fixture_resave_" + std::to_string(::getpid()));
    save_options keep;
    keep.extra_config = loaded.config.extra;
    keep.weights_dtype = dtype::BF16;
    save_checkpoint(loaded.model, dir, keep);
    const safetensors_file a(data_dir / "mamba2_g1_untied_bf16" / "model.safetensors"), b(dir / "model.safetensors");
    CHECK(a.tensors().size() == b.tensors().size());
    for (const auto& t : a.tensors()) {
        CAPTURE(t.name);
        const auto x = a.raw(t), y = b.raw(b.at(t.name));
        CHECK(std::equal(x.begin(), x.end(), y.begin(), y.end()));
    }
    CHECK(read_hf_mamba2_config(dir / "config.json").extra.at("pad_token_id") == 1);
    fs::remove_all(dir);
}

TEST_CASE("torch's float16 / bfloat16 conversions agree with transmamba's bit for bit (tests/data/dtypes.safetensors)") {
    const safetensors_file f(data_dir / "dtypes.safetensors");
    const auto values = f.read<float>("f32");
    const auto h = f.read<f16_bits>("f16");
    const auto b = f.read<bf16_bits>("bf16");
    const auto h_back = f.read<float>("f16"), b_back = f.read<float>("bf16");
    const auto h_torch = f.read<float>("f16_as_f32"), b_torch = f.read<float>("bf16_as_f32");
    REQUIRE(values.size() > 2000);
    for (std::size_t i = 0; i < values.size(); ++i) {
        CAPTURE(i);
        CAPTURE(values[i]);
        if (std::isnan(values[i])) {
            CHECK(std::isnan(f16_bits_to_float(h[i].bits)));
            CHECK(std::isnan(h_back[i]));
            CHECK(std::isnan(b_back[i]));
            continue;
        }
        CHECK(float_to_f16_bits(values[i]) == h[i].bits);
        CHECK(float_to_bf16_bits(values[i]) == b[i].bits);
        CHECK(std::bit_cast<std::uint32_t>(h_back[i]) == std::bit_cast<std::uint32_t>(h_torch[i]));
        CHECK(std::bit_cast<std::uint32_t>(b_back[i]) == std::bit_cast<std::uint32_t>(b_torch[i]));
    }
    const auto narrowed = f.read<float>("f64"), torch_narrowed = f.read<float>("f64_as_f32");
    for (std::size_t i = 0; i < narrowed.size(); ++i) CHECK(std::bit_cast<std::uint32_t>(narrowed[i]) == std::bit_cast<std::uint32_t>(torch_narrowed[i]));
    const auto ints = f.read<std::int64_t>("i64");
    CHECK(ints.front() == -5 * (std::int64_t(1) << 40));
}

}  // namespace test_io_fixtures
