// The CUDA backend works on the caller's stream and nowhere else, allocates nothing to check its
// inputs, and decodes long RoPE sequences exactly as its forward pass computes them.
//
// The stream test holds the legacy default stream shut with a kernel that waits for the host: any
// work the library put there instead of on the caller's non-blocking stream runs only when the
// test opens the gate, after the prefill, and then corrupts the decoding state the steps read.
#include <doctest/doctest.h>

#include <transmamba/backend/cuda.cuh>
#include <transmamba/transmamba.hpp>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "reference/reference.hpp"
#include "support/bridge.hpp"

using namespace transmamba;

namespace {

using traits = backend_traits<transmamba::cuda>;

template <class T>
device_buffer<T> upload(const std::vector<T>& host, const cuda_context& ctx = {}) {
    device_buffer<T> d(host.size());
    traits::copy_from_host(host.data(), d.data(), host.size(), ctx);
    traits::synchronize(ctx);
    return d;
}
template <class T>
std::vector<double> download(const device_buffer<T>& d, const cuda_context& ctx = {}) {
    std::vector<T> host(d.size());
    traits::copy_to_host(d.data(), host.data(), d.size(), ctx);
    traits::synchronize(ctx);
    return reference::to_double(host);
}

// Spins until the host writes a non-zero *open, or about max_cycles clock cycles pass (so that a
// regression cannot hang the suite: it fails the comparison instead).
__global__ void wait_for_host(const volatile int* open, long long max_cycles) {
    const long long start = clock64();
    while (*open == 0 && clock64() - start < max_cycles) {
    }
}

// A gate on the legacy default stream: shut while it lives or until open() is called.
class legacy_stream_gate {
public:
    legacy_stream_gate() {
        kernels::cuda::check_cuda(cudaHostAlloc(&flag_, sizeof(int), cudaHostAllocMapped), "cudaHostAlloc");
        *flag_ = 0;
        int* device_flag = nullptr;
        kernels::cuda::check_cuda(cudaHostGetDevicePointer(&device_flag, flag_, 0), "cudaHostGetDevicePointer");
        wait_for_host<<<1, 1, 0, cudaStreamLegacy>>>(device_flag, 4'000'000'000LL);
        kernels::cuda::check_launch("wait_for_host");
    }
    legacy_stream_gate(const legacy_stream_gate&) = delete;
    legacy_stream_gate& operator=(const legacy_stream_gate&) = delete;
    // Opens the gate and waits until everything queued behind it has run.
    void open() {
        if (opened_) return;
        opened_ = true;
        *reinterpret_cast<volatile int*>(flag_) = 1;
        kernels::cuda::check_cuda(cudaStreamSynchronize(cudaStreamLegacy), "cudaStreamSynchronize (legacy)");
    }
    ~legacy_stream_gate() {
        open();
        cudaFreeHost(flag_);
    }

private:
    int* flag_ = nullptr;
    bool opened_ = false;
};

}  // namespace

TEST_CASE("cuda first_non_finite finds the first NaN or infinity on the caller's stream, from several threads") {
    const std::size_t n = 3'000'001;
    cuda_stream stream;
    const auto ctx = stream.context();
    std::vector<float> host(n, 1.0f);
    auto clean = upload(host, ctx);
    CHECK(traits::first_non_finite(ctx, clean.data(), n) == -1);
    host[n - 1] = std::numeric_limits<float>::infinity();
    host[123457] = std::numeric_limits<float>::quiet_NaN();
    host[2'000'000] = -std::numeric_limits<float>::infinity();
    auto dirty = upload(host, ctx);
    CHECK(traits::first_non_finite(ctx, dirty.data(), n) == 123457);
    CHECK(traits::first_non_finite(ctx, dirty.data() + 123458, n - 123458) == 2'000'000 - 123458);
    CHECK(traits::first_non_finite(ctx, dirty.data(), 123457) == -1);

    // Each thread has its own answer word: concurrent checks never see each other's result.
    std::vector<index_t> found(4, -2);
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < found.size(); ++i)
        threads.emplace_back([&, i] {
            cuda_stream own;
            for (int repeat = 0; repeat < 20 && found[i] != -3; ++repeat) {
                const index_t got = i % 2 ? traits::first_non_finite(own.context(), clean.data(), n)
                                          : traits::first_non_finite(own.context(), dirty.data(), n);
                found[i] = got == (i % 2 ? -1 : 123457) ? got : -3;
            }
        });
    for (auto& t : threads) t.join();
    CHECK(found == std::vector<index_t>{123457, -1, 123457, -1});
}

TEST_CASE("cuda decoding on a non-blocking stream uses that stream only") {
    using policies = paper_policies::with_input_check<trusted_inputs>;
    const auto cfg = testing::small_config(64, 16, 32, 2, 16);
    mixer<float, transmamba::cuda, policies> m(cfg);
    randomize(m.params(), 31);
    const index_t L = 24, d = cfg.d_model, prompt = 9;
    cuda_stream stream;
    const auto ctx = stream.context();
    const auto u = upload(testing::from_double<float>(reference::random_vector(std::size_t(L * d), 32)), ctx);
    device_buffer<float> whole(u.size()), stepped(u.size());
    workspace<transmamba::cuda> ws, dws;
    for (index_t P : {index_t(0), index_t(16), index_t(40)}) {  // none converts inside the prefill: a cudaFree there would wait for the gate
        CAPTURE(P);
        m.forward({u.data(), {1, L, d}}, {whole.data(), {1, L, d}}, P, ws, {}, ctx);
        const auto span = dws.reserve(m.decode_workspace_bytes(prompt, L));
        mixer<float, transmamba::cuda, policies>::decode_state st;
        {
            legacy_stream_gate gate;
            m.prefill({u.data(), {1, prompt, d}}, {stepped.data(), {1, prompt, d}}, P, L, span, st, ctx);
            stream.synchronize();
            gate.open();  // whatever went to the legacy stream runs now, between prefill and steps
        }
        for (index_t t = prompt; t < L; ++t)
            m.step({u.data() + t * d, {d}}, {stepped.data() + t * d, {d}}, span, st, ctx);
        CHECK(reference::max_relative_error(download(stepped, ctx), download(whole, ctx)) < 5e-5);
    }
}

TEST_CASE("cuda decoding with RoPE at positions past 16k equals the forward pass") {
    // All attention (P > L): the last tokens are decoded by the decoding attention kernel, which
    // must rotate queries and keys at positions ~16k by the same angles as the prefill kernel.
    using policies = paper_policies::with_attention<rope_attention>;
    const auto cfg = testing::small_config(32, 16, 32, 1, 64);
    mixer<float, transmamba::cuda, policies> m(cfg);
    randomize(m.params(), 41);
    const index_t L = 16400, d = cfg.d_model, prompt = L - 6, P = L + 1;
    const auto u = upload(testing::from_double<float>(reference::random_vector(std::size_t(L * d), 42)));
    device_buffer<float> whole(u.size()), stepped(u.size());
    workspace<transmamba::cuda> ws, dws;
    m.forward({u.data(), {1, L, d}}, {whole.data(), {1, L, d}}, P, ws);
    const auto span = dws.reserve(m.decode_workspace_bytes(prompt, L));
    mixer<float, transmamba::cuda, policies>::decode_state st;
    m.prefill({u.data(), {1, prompt, d}}, {stepped.data(), {1, prompt, d}}, P, L, span, st);
    for (index_t t = prompt; t < L; ++t) m.step({u.data() + t * d, {d}}, {stepped.data() + t * d, {d}}, span, st);
    const auto got = download(stepped), want = download(whole);
    const std::vector<double> got_tail(got.end() - (L - prompt) * d, got.end()), want_tail(want.end() - (L - prompt) * d, want.end());
    // float32 rounding only. (Random mixer weights give near-uniform softmax rows, which barely
    // feel a small angle error: the sensitive check of the decoding kernel's rotation at long
    // positions is in test_attention_cuda.cu.)
    CHECK(reference::max_relative_error(got_tail, want_tail) < 1e-5);
}
