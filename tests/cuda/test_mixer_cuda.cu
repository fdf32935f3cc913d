// The whole mixer, block and stack on the GPU against the float64 oracle and against the CPU
// backend, with the SPEC identities. Outputs are poisoned with NaN first, so an element the GPU
// forgot to write can never pass.
#include <doctest/doctest.h>

#include <transmamba/backend/cuda.cuh>
#include <transmamba/transmamba.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "reference/reference.hpp"
#include "support/bridge.hpp"

using namespace transmamba;
using bf16 = __nv_bfloat16;

namespace {

template <class T>
std::vector<T> to_storage(const std::vector<double>& v) {
    std::vector<T> out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) out[i] = kernels::cuda::from_float<T>(static_cast<float>(v[i]));
    return out;
}
template <class T>
std::vector<double> to_double_host(const std::vector<T>& v) {
    std::vector<double> out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) out[i] = kernels::cuda::to_float(v[i]);
    return out;
}
template <class T>
device_buffer<T> upload(const std::vector<T>& host) {
    device_buffer<T> d(host.size());
    backend_traits<transmamba::cuda>::copy_from_host(host.data(), d.data(), host.size(), {});
    return d;
}
template <class T>
std::vector<T> download(const device_buffer<T>& d) {
    std::vector<T> host(d.size());
    backend_traits<transmamba::cuda>::copy_to_host(d.data(), host.data(), d.size(), {});
    backend_traits<transmamba::cuda>::synchronize({});
    return host;
}
template <class T>
void poison(device_buffer<T>& d) {
    std::vector<T> nan(d.size(), kernels::cuda::from_float<T>(std::numeric_limits<float>::quiet_NaN()));
    backend_traits<transmamba::cuda>::copy_from_host(nan.data(), d.data(), nan.size(), {});
}

// The oracle's weights rounded to the storage type, on the device; the oracle then gets the same
// rounded weights so the comparison measures the kernels, not the rounding of the weights.
template <class T>
void load_rounded(mixer_params<T, transmamba::cuda>& p, reference::mixer_weights& w) {
    testing::for_each_weight(p, w, [](auto& buf, std::vector<double>& src) {
        REQUIRE(buf.size() == src.size());
        const auto rounded = to_storage<T>(src);
        src = to_double_host(rounded);
        backend_traits<transmamba::cuda>::copy_from_host(rounded.data(), buf.data(), rounded.size(), {});
    });
}

// float32 kernels: 2e-5 of the largest output; bf16 storage rounds every stored activation
// (xBC, the normalised output, out) to 8 bits of mantissa: 2e-2.
template <class T>
constexpr double gpu_tolerance() {
    return std::is_same_v<T, float> ? 2e-5 : 2e-2;
}

struct mixer_case {
    index_t d_model, headdim, d_state, ngroups, chunk, batch, L;
};

template <class T, class Policies = paper_policies>
void check_mixer_against_oracle(const mixer_case& mc, index_t P, std::uint64_t seed) {
    auto cfg = testing::small_config(mc.d_model, mc.headdim, mc.d_state, mc.ngroups, mc.chunk);
    auto d = testing::to_dims(cfg, mc.batch, mc.L);
    auto w = reference::random_weights(d, seed);
    mixer<T, transmamba::cuda, Policies> m(cfg);
    load_rounded(m.params(), w);
    auto u_host = to_storage<T>(reference::random_vector(std::size_t(mc.batch * mc.L * cfg.d_model), seed + 1));
    const auto u_ref = to_double_host(u_host);
    auto du = upload(u_host);
    device_buffer<T> out(u_host.size());
    device_buffer<float> state(std::size_t(mc.batch * cfg.nheads() * cfg.headdim * cfg.d_state));
    poison(out);
    poison(state);
    workspace<transmamba::cuda> ws;
    m.forward({du.data(), {mc.batch, mc.L, cfg.d_model}}, {out.data(), {mc.batch, mc.L, cfg.d_model}}, P, ws,
              {{}, {state.data(), {mc.batch, cfg.nheads(), cfg.headdim, cfg.d_state}}});
    const auto want = reference::mixer_forward(d, {}, w, u_ref, P);
    CAPTURE(P);
    CAPTURE(mc.ngroups);
    CAPTURE(mc.L);
    CHECK(reference::max_relative_error(to_double_host(download(out)), want.out) < gpu_tolerance<T>());
    CHECK(reference::max_relative_error(to_double_host(download(state)), want.final_state) < gpu_tolerance<T>());
}

}  // namespace

TEST_CASE_TEMPLATE("cuda mixer equals the float64 oracle across TransPoints and groups", T, float, bf16) {
    const mixer_case shapes[] = {{64, 16, 16, 1, 32, 2, 97}, {64, 32, 64, 2, 64, 1, 200}, {64, 16, 32, 8, 32, 2, 70}};
    std::uint64_t seed = 100;
    for (const auto& mc : shapes)
        for (index_t P : {index_t(0), index_t(1), mc.chunk, mc.chunk + 5, mc.L - 1, mc.L, mc.L + 3})
            check_mixer_against_oracle<T>(mc, P, seed++);
}

TEST_CASE("cuda mixer: the sequential scan policy and the z-gated attention variant") {
    const mixer_case mc{64, 16, 32, 2, 32, 2, 90};
    check_mixer_against_oracle<float, paper_policies::with_scan<sequential_scan>>(mc, 40, 7);
    check_mixer_against_oracle<float, paper_policies::with_scan<sequential_scan>>(mc, 0, 8);
}

TEST_CASE("cuda mixer equals the CPU mixer (float32) and keeps the SPEC identities") {
    auto cfg = testing::small_config(128, 64, 64, 2, 64);
    const index_t batch = 2, L = 333;
    mixer<float, transmamba::cuda> gpu(cfg);
    mixer<float, cpu> host(cfg);
    randomize(gpu.params(), 11);
    randomize(host.params(), 11);
    const auto u = testing::from_double<float>(reference::random_vector(std::size_t(batch * L * cfg.d_model), 12));
    auto du = upload(u);
    device_buffer<float> out(u.size());
    workspace<transmamba::cuda> gws;
    workspace<cpu> cws;
    std::vector<float> cpu_out(u.size());
    std::vector<std::vector<float>> gpu_runs;
    for (index_t P : {index_t(0), index_t(100), L}) {
        poison(out);
        gpu.forward({du.data(), {batch, L, cfg.d_model}}, {out.data(), {batch, L, cfg.d_model}}, P, gws);
        host.forward({u.data(), {batch, L, cfg.d_model}}, {cpu_out.data(), {batch, L, cfg.d_model}}, P, cws);
        gpu_runs.push_back(download(out));
        CAPTURE(P);
        CHECK(reference::max_relative_error(reference::to_double(gpu_runs.back()), reference::to_double(cpu_out)) < 2e-5);
    }
    // Tokens >= P of the P = 100 run equal the pure-SSM run's; tokens < P do not.
    const auto& ssm = gpu_runs[0];
    const auto& hybrid = gpu_runs[1];
    double after = 0, before = 0, scale = 0;
    for (std::size_t i = 0; i < ssm.size(); ++i) {
        const index_t t = index_t(i / std::size_t(cfg.d_model)) % L;
        (t >= 100 ? after : before) = std::fmax(t >= 100 ? after : before, std::fabs(hybrid[i] - ssm[i]));
        scale = std::fmax(scale, std::fabs(ssm[i]));
    }
    CHECK(after / scale < 2e-5);
    CHECK(before / scale > 1e-2);
}

TEST_CASE("cuda mixer rejects bad input before writing anything") {
    auto cfg = testing::small_config(64, 16, 16, 1, 32);
    mixer<float, transmamba::cuda> m(cfg);
    randomize(m.params(), 3);
    const index_t batch = 1, L = 16;
    auto u = testing::from_double<float>(reference::random_vector(std::size_t(batch * L * cfg.d_model), 4));
    u[5] = std::numeric_limits<float>::quiet_NaN();
    auto du = upload(u);
    device_buffer<float> out(u.size());
    const std::vector<float> sentinel(u.size(), 42.0f);
    backend_traits<transmamba::cuda>::copy_from_host(sentinel.data(), out.data(), sentinel.size(), {});
    workspace<transmamba::cuda> ws;
    CHECK_THROWS_WITH_AS(m.forward({du.data(), {batch, L, cfg.d_model}}, {out.data(), {batch, L, cfg.d_model}}, 3, ws),
                         doctest::Contains("tensor 'u' holds a non-finite value at flat index 5"), error);
    CHECK_THROWS_WITH_AS(m.forward({du.data(), {batch, L, cfg.d_model}}, {out.data(), {batch, L, cfg.d_model}}, -1, ws),
                         doctest::Contains("negative"), error);
    CHECK(download(out) == sentinel);
}

TEST_CASE("cuda stack (paper pattern) equals the CPU stack") {
    model_config mc;
    mc.mixer = testing::small_config(64, 16, 32, 2, 32);
    mc.d_ff = 96;
    mc.num_layers = 2;
    stack<float, transmamba::cuda, paper_pattern> gpu(mc);
    stack<float, cpu, paper_pattern> host(mc);
    randomize(gpu, 50);  // the same draws in the same order: identical parameters on both
    randomize(host, 50);
    const index_t batch = 2, L = 77;
    const auto u = testing::from_double<float>(reference::random_vector(std::size_t(batch * L * mc.mixer.d_model), 9));
    auto du = upload(u);
    device_buffer<float> out(u.size());
    std::vector<float> want(u.size());
    workspace<transmamba::cuda> gws;
    workspace<cpu> cws;
    const cyclic_transpoints policy{0, 40, 1000};
    poison(out);
    gpu.forward({du.data(), {batch, L, mc.mixer.d_model}}, {out.data(), {batch, L, mc.mixer.d_model}}, policy, gws);
    host.forward({u.data(), {batch, L, mc.mixer.d_model}}, {want.data(), {batch, L, mc.mixer.d_model}}, policy, cws);
    CHECK(reference::max_relative_error(reference::to_double(download(out)), reference::to_double(want)) < 1e-4);
}

TEST_CASE("cuda decoding step by step equals the forward pass, a TransPoint crossed while decoding") {
    auto cfg = testing::small_config(64, 16, 32, 2, 16);
    mixer<float, transmamba::cuda> m(cfg);
    randomize(m.params(), 21);
    const index_t L = 40, d = cfg.d_model;
    const auto u = testing::from_double<float>(reference::random_vector(std::size_t(L * d), 22));
    auto du = upload(u);
    device_buffer<float> whole(u.size()), stepped(u.size());
    workspace<transmamba::cuda> ws;
    for (index_t P : {index_t(0), index_t(3), index_t(9), index_t(25), index_t(100)}) {  // 3: crossed in the prefill
        m.forward({du.data(), {1, L, d}}, {whole.data(), {1, L, d}}, P, ws);
        poison(stepped);
        mixer<float, transmamba::cuda>::decode_state st;
        workspace<transmamba::cuda> dws;
        const index_t prompt = 7;
        const auto span = dws.reserve(m.decode_workspace_bytes(prompt, L));
        m.prefill({du.data(), {1, prompt, d}}, {stepped.data(), {1, prompt, d}}, P, L, span, st);
        for (index_t t = prompt; t < L; ++t)
            m.step({du.data() + t * d, {d}}, {stepped.data() + t * d, {d}}, span, st);
        CAPTURE(P);
        CHECK(reference::max_relative_error(reference::to_double(download(stepped)), reference::to_double(download(whole))) <
              5e-5);
    }
}
