// The context-parallel layer on the GPU (docs/context_parallel.md). Ranks simulated on one GPU
// (simulated_ranks<cuda>: the same combine code as across GPUs, no NCCL) equal the single-GPU
// mixer: outputs, final states and conv windows (float 1e-5, bf16 2e-2 relative to the largest
// value) at P = 0, L/4, L and inside a rank's slice, R = 2 and 4, for the forward pass and for
// decoding's prefill (then decoding on). The attention band (first_query) equals those rows of the
// whole prefix on every kernel path and leaves the other rows alone. With NCCL and >= 2 GPUs, one
// rank per GPU (a thread each, nccl_communicator) equals the single-GPU mixer; otherwise that case
// says why it skipped. Outputs are poisoned with NaN first, so a row nobody wrote never passes.
#include <doctest/doctest.h>

#include <transmamba/backend/cuda.cuh>
#include <transmamba/parallel.hpp>
#include <transmamba/parallel/cuda/state_scan.cuh>
#include <transmamba/transmamba.hpp>
#if defined(TRANSMAMBA_WITH_NCCL)
#include <transmamba/parallel/nccl_communicator.cuh>
#endif

#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "reference/reference.hpp"
#include "support/bridge.hpp"

namespace test_context_parallel_cuda {

using namespace transmamba;
using gpu = transmamba::cuda;
using bf16 = __nv_bfloat16;
using gpu_traits = backend_traits<gpu>;

namespace {

template <class T>
device_buffer<T> upload(const std::vector<T>& host) {
    device_buffer<T> d(host.size());
    gpu_traits::copy_from_host(host.data(), d.data(), host.size(), {});
    return d;
}
template <class T>
std::vector<double> download(const T* d, std::size_t n) {
    std::vector<T> host(n);
    gpu_traits::copy_to_host(d, host.data(), n, {});
    gpu_traits::synchronize({});
    std::vector<double> out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = kernels::cuda::to_float(host[i]);
    return out;
}
template <class T>
std::vector<double> download(const device_buffer<T>& d) {
    return download(d.data(), d.size());
}
template <class T>
void poison(T* d, std::size_t n) {
    gpu_traits::fill({}, d, n, kernels::cuda::from_float<T>(std::numeric_limits<float>::quiet_NaN()));
}
template <class T>
void poison(device_buffer<T>& d) {
    poison(d.data(), d.size());
}
template <class T>
std::vector<T> random_storage(std::size_t n, std::uint64_t seed) {
    const auto v = reference::random_vector(n, seed);
    std::vector<T> out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = kernels::cuda::from_float<T>(static_cast<float>(v[i]));
    return out;
}

template <class T>
constexpr double tolerance() {
    return std::is_same_v<T, float> ? 1e-5 : 2e-2;
}

// d_state 64 takes the Hopper attention kernel for bf16 on an sm_90 device built for 90a, d_state
// 32 the mma.sync kernel; float runs the SIMT kernel. bf16 rows (conv_dim) stay multiples of 8.
mixer_config config_of(index_t d_state, index_t ngroups) { return testing::small_config(64, 16, d_state, ngroups, 32); }

// The TransPoints the issue names at (L, R): 0, L/4, L, and one inside the last rank's slice.
std::set<index_t> transpoints_for(index_t L, index_t R) {
    const token_slice last = token_slices(L, R).of(R - 1);
    return {0, L / 4, L, last.begin + last.size() / 3};
}

// The single-GPU mixer on whole sequences: out and final state.
template <class T>
struct whole_result {
    std::vector<double> out, state;
};
template <class T>
whole_result<T> single_gpu(const mixer<T, gpu>& m, const device_buffer<T>& u, index_t batch, index_t L, index_t P) {
    const auto& c = m.config();
    device_buffer<T> out(u.size());
    device_buffer<float> state(std::size_t(batch * c.nheads() * c.headdim * c.d_state));
    poison(out);
    poison(state);
    workspace<gpu> ws;
    m.forward({u.data(), {batch, L, c.d_model}}, {out.data(), {batch, L, c.d_model}}, P, ws,
              {{}, {state.data(), {batch, c.nheads(), c.headdim, c.d_state}}});
    return {download(out), download(state)};
}

// The conv window after L in float64 from the weights and inputs as stored.
template <class T>
std::vector<double> window_in_double(const mixer<T, gpu>& m, const std::vector<T>& u, index_t batch, index_t L) {
    const auto& c = m.config();
    const index_t H = c.d_conv - 1, dp = c.d_in_proj(), dm = c.d_model;
    const auto W = download(m.params().in_proj);
    std::vector<double> w(std::size_t(batch * H * dp), 0.0);
    for (index_t b = 0; b < batch; ++b)
        for (index_t j = 0; j < H; ++j) {
            const index_t t = L - H + j;
            if (t < 0) continue;
            for (index_t o = 0; o < dp; ++o) {
                double acc = 0;
                for (index_t d = 0; d < dm; ++d)
                    acc += double(kernels::cuda::to_float(u[std::size_t((b * L + t) * dm + d)])) * W[std::size_t(o * dm + d)];
                w[std::size_t((b * H + j) * dp + o)] = acc;
            }
        }
    return w;
}

// One rank's buffers on the device.
template <class T>
struct rank_buffers {
    device_buffer<T> u, out;
    device_buffer<std::byte> ws;
    device_buffer<float> state, window;
};

template <class T>
std::vector<rank_buffers<T>> rank_inputs(const mixer_config& c, const std::vector<T>& u, index_t batch, index_t L,
                                         index_t R, std::size_t ws_bytes) {
    const token_slices slices(L, R);
    const index_t dm = c.d_model;
    std::vector<rank_buffers<T>> ranks(static_cast<std::size_t>(R));
    for (index_t r = 0; r < R; ++r) {
        const token_slice s = slices.of(r);
        std::vector<T> ur;
        for (index_t b = 0; b < batch; ++b)
            ur.insert(ur.end(), u.begin() + (b * L + s.begin) * dm, u.begin() + (b * L + s.end) * dm);
        auto& x = ranks[std::size_t(r)];
        x.u = upload(ur);
        x.out.resize(ur.size());
        poison(x.out);
        x.ws.resize(ws_bytes);
        x.state.resize(std::size_t(batch * c.nheads() * c.headdim * c.d_state));
        x.window.resize(std::size_t(batch * (c.d_conv - 1) * c.d_in_proj()));
        poison(x.state);
        poison(x.window);
    }
    return ranks;
}

template <class T>
context_parallel_rank_io<T> io_of(const mixer_config& c, rank_buffers<T>& x, index_t batch, token_slice s, bool finals) {
    context_parallel_rank_io<T> io;
    io.u = tensor_view<const T, 3>(x.u.data(), {batch, s.size(), c.d_model});
    io.out = tensor_view<T, 3>(x.out.data(), {batch, s.size(), c.d_model});
    io.ws = {x.ws.data(), x.ws.size()};
    if (finals) {
        io.final_state = tensor_view<float, 4>(x.state.data(), {batch, c.nheads(), c.headdim, c.d_state});
        io.final_window = tensor_view<float, 3>(x.window.data(), {batch, c.d_conv - 1, c.d_in_proj()});
    }
    return io;
}

// The ranks' outputs in token order.
template <class T>
std::vector<double> gathered_out(const mixer_config& c, const std::vector<rank_buffers<T>>& ranks, index_t batch,
                                 index_t L) {
    const index_t R = static_cast<index_t>(ranks.size()), dm = c.d_model;
    const token_slices slices(L, R);
    std::vector<double> out(std::size_t(batch * L * dm), std::numeric_limits<double>::quiet_NaN());
    for (index_t r = 0; r < R; ++r) {
        const token_slice s = slices.of(r);
        const auto o = download(ranks[std::size_t(r)].out);
        for (index_t b = 0; b < batch; ++b)
            std::copy_n(o.begin() + b * s.size() * dm, s.size() * dm, out.begin() + (b * L + s.begin) * dm);
    }
    return out;
}

template <class T, class Queries>
void check_forward(const mixer_config& c, index_t batch, index_t L, std::uint64_t seed) {
    mixer<T, gpu> m(c);
    randomize(m.params(), seed);
    const auto u = random_storage<T>(std::size_t(batch * L * c.d_model), seed + 1);
    const auto du = upload(u);
    const auto window = window_in_double(m, u, batch, L);
    const context_parallel_mixer<T, gpu, paper_policies, Queries> cp(m);
    for (index_t R : {2, 4})
        for (const index_t P : transpoints_for(L, R)) {
            CAPTURE(R);
            CAPTURE(P);
            const auto want = single_gpu(m, du, batch, L, P);
            simulated_ranks<gpu> comm(R);
            auto ranks = rank_inputs(c, u, batch, L, R, cp.workspace_bytes(batch, L, P, R));
            const token_slices slices(L, R);
            std::vector<context_parallel_rank_io<T>> io;
            for (index_t r = 0; r < R; ++r) io.push_back(io_of(c, ranks[std::size_t(r)], batch, slices.of(r), true));
            cp.forward(comm, std::span<const context_parallel_rank_io<T>>(io), L, P);
            CHECK(reference::max_relative_error(gathered_out(c, ranks, batch, L), want.out) < tolerance<T>());
            for (index_t r = 0; r < R; ++r) {
                CAPTURE(r);
                CHECK(reference::max_relative_error(download(ranks[std::size_t(r)].state), want.state) < tolerance<T>());
                CHECK(reference::max_relative_error(download(ranks[std::size_t(r)].window), window) < tolerance<T>());
            }
        }
}

template <class T>
void check_prefill(const mixer_config& c, index_t L, std::uint64_t seed) {
    mixer<T, gpu> m(c);
    randomize(m.params(), seed);
    const index_t steps = 3, max_tokens = L + steps, dm = c.d_model;
    const auto u = random_storage<T>(std::size_t((L + steps) * dm), seed + 1);
    const auto du = upload(u);
    const context_parallel_mixer<T, gpu> cp(m);
    for (index_t R : {2, 4}) {
        auto Ps = transpoints_for(L, R);
        Ps.insert(L + 2);  // the prompt stays in the KV cache and decoding goes on below P
        for (const index_t P : Ps) {
            CAPTURE(R);
            CAPTURE(P);
            const index_t cache = std::min(P, max_tokens);
            device_buffer<std::byte> ws1(m.decode_workspace_bytes(L, cache));
            typename mixer<T, gpu>::decode_state st1;
            device_buffer<T> out1(std::size_t(L * dm));
            poison(out1);
            m.prefill({du.data(), {1, L, dm}}, {out1.data(), {1, L, dm}}, P, max_tokens, {ws1.data(), ws1.size()}, st1);

            simulated_ranks<gpu> comm(R);
            const token_slices slices(L, R);
            std::vector<T> prompt(u.begin(), u.begin() + L * dm);
            auto ranks = rank_inputs(c, prompt, 1, L, R, cp.workspace_bytes(1, L, P, R));
            std::vector<typename mixer<T, gpu>::decode_state> sts(static_cast<std::size_t>(R));
            std::vector<typename mixer<T, gpu>::decode_state*> stp;
            std::vector<context_parallel_rank_io<T>> io;
            for (index_t r = 0; r < R; ++r) {
                io.push_back(io_of(c, ranks[std::size_t(r)], 1, slices.of(r), false));
                stp.push_back(&sts[std::size_t(r)]);
            }
            cp.prefill(comm, std::span<const context_parallel_rank_io<T>>(io), L, P, max_tokens,
                       std::span<typename mixer<T, gpu>::decode_state* const>(stp));
            CHECK(reference::max_relative_error(gathered_out(c, ranks, 1, L), download(out1)) < tolerance<T>());
            device_buffer<std::byte> ws(m.decode_workspace_bytes(1, cache));
            for (index_t r = 0; r < R; ++r) {
                CAPTURE(r);
                auto& st = sts[std::size_t(r)];
                CHECK(st.position == L);
                CHECK(st.converted == st1.converted);
                CHECK(reference::max_relative_error(download(st.window), download(st1.window)) < tolerance<T>());
                if (st1.converted) {
                    CHECK(reference::max_relative_error(download(st.state), download(st1.state)) < tolerance<T>());
                } else {
                    CHECK(reference::max_relative_error(download(st.keys.data(), std::size_t(L * c.ngroups * c.d_state)),
                                                        download(st1.keys.data(), std::size_t(L * c.ngroups * c.d_state))) <
                          tolerance<T>());
                    CHECK(reference::max_relative_error(download(st.values.data(), std::size_t(L * c.d_inner())),
                                                        download(st1.values.data(), std::size_t(L * c.d_inner()))) <
                          tolerance<T>());
                    CHECK(reference::max_relative_error(download(st.dts.data(), std::size_t(L * c.nheads())),
                                                        download(st1.dts.data(), std::size_t(L * c.nheads()))) <
                          tolerance<T>());
                }
            }
            // The last rank decodes on; so does a copy of the single-GPU state.
            auto st1_copy = st1;
            auto& st = sts.back();
            device_buffer<T> a(static_cast<std::size_t>(dm)), b(static_cast<std::size_t>(dm));
            for (index_t t = L; t < L + steps; ++t) {
                CAPTURE(t);
                m.step({du.data() + t * dm, {dm}}, {a.data(), {dm}}, {ws.data(), ws.size()}, st);
                m.step({du.data() + t * dm, {dm}}, {b.data(), {dm}}, {ws.data(), ws.size()}, st1_copy);
                CHECK(reference::max_relative_error(download(a), download(b)) < tolerance<T>());
            }
        }
    }
}

// Attention of queries [q0, P) alone equals those rows of the whole prefix; other rows stay NaN.
template <class T>
void check_band(index_t d_state, index_t ngroups, index_t batch, index_t P, std::uint64_t seed) {
    const mixer_config c = testing::small_config(64, 16, d_state, ngroups, 32);
    using kernel = attention_kernel<paper_policies::attention, gpu>;
    const index_t h = c.nheads(), p = c.headdim, cd = c.conv_dim(), L = P;
    const auto xbc = random_storage<T>(std::size_t(batch * L * cd), seed);
    const auto d = upload(xbc);
    std::vector<float> D(std::size_t(h), 0.5f);
    const auto dD = upload(D);
    const ssm_inputs<T> in{
        tensor_view<const T, 4>(d.data(), {batch, L, h, p}, {L * cd, cd, p, 1}),
        tensor_view<const T, 4>(d.data() + c.d_inner(), {batch, L, ngroups, d_state}, {L * cd, cd, d_state, 1}),
        tensor_view<const T, 4>(d.data() + c.d_inner() + ngroups * d_state, {batch, L, ngroups, d_state},
                                {L * cd, cd, d_state, 1}),
        tensor_view<const float, 3>(nullptr, {batch, L, h}),
        nullptr,
        dD.data(),
    };
    device_buffer<std::byte> scratch(kernel::scratch_bytes<T>(c, batch, P));
    device_buffer<float> whole(std::size_t(batch * L * h * p)), band(whole.size());
    poison(whole);
    kernel::run<T>({}, c, in, P, {whole.data(), {batch, L, h, p}}, {scratch.data(), scratch.size()});
    const auto w = download(whole);
    for (index_t q0 : {index_t(1), P / 3, P - 70, P - 1}) {
        CAPTURE(q0);
        poison(band);
        kernel::run<T>({}, c, in, P, {band.data(), {batch, L, h, p}}, {scratch.data(), scratch.size()}, {}, q0);
        const auto got = download(band);
        std::vector<double> rows_got, rows_want;
        bool untouched = true;
        for (index_t b = 0; b < batch; ++b)
            for (index_t t = 0; t < L; ++t)
                for (index_t e = 0; e < h * p; ++e) {
                    const auto i = std::size_t((b * L + t) * h * p + e);
                    if (t >= q0) {
                        rows_got.push_back(got[i]);
                        rows_want.push_back(w[i]);
                    } else {
                        untouched = untouched && std::isnan(got[i]);
                    }
                }
        CHECK(untouched);
        CHECK(reference::max_relative_error(rows_got, rows_want) < 1e-6);
    }
}

#if defined(TRANSMAMBA_WITH_NCCL)
struct nccl_rank_result {
    std::vector<double> out, state;
    std::size_t received = 0;
    std::string error;
};

// Rank r of R on GPU r, in a thread of its own: its communicator, its replica of the layer, its slice.
template <class T>
void nccl_rank(const nccl_id& id, mixer_config c, const std::vector<T>& u, index_t batch, index_t L, index_t P, index_t R,
               index_t r, std::uint64_t seed, nccl_rank_result& res) {
    try {
        kernels::cuda::check_cuda(cudaSetDevice(static_cast<int>(r)), "cudaSetDevice");
        cuda_stream stream;
        nccl_communicator comm(id, R, r, stream.context());
        mixer<T, gpu> m(c);
        randomize(m.params(), seed);
        const context_parallel_mixer<T, gpu> cp(m);
        const token_slice s = token_slices(L, R).of(r);
        std::vector<T> ur;
        for (index_t b = 0; b < batch; ++b)
            ur.insert(ur.end(), u.begin() + (b * L + s.begin) * c.d_model, u.begin() + (b * L + s.end) * c.d_model);
        rank_buffers<T> x;
        x.u = upload(ur);
        x.out.resize(ur.size());
        x.ws.resize(cp.workspace_bytes(batch, L, P, R));
        x.state.resize(static_cast<std::size_t>(batch * c.nheads() * c.headdim * c.d_state));
        x.window.resize(static_cast<std::size_t>(batch * (c.d_conv - 1) * c.d_in_proj()));
        poison(x.out);
        gpu_traits::synchronize({});
        const context_parallel_rank_io<T> io = io_of(c, x, batch, s, true);
        cp.forward(comm, std::span<const context_parallel_rank_io<T>>(&io, 1), L, P);
        stream.synchronize();
        comm.check_async();
        res.out = download(x.out);
        res.state = download(x.state);
        res.received = comm.bytes_received_per_rank();
    } catch (const std::exception& e) {
        res.error = e.what();
    }
}
#endif

}  // namespace

TEST_CASE_TEMPLATE("cuda attention band: queries [q0, P) alone equal those rows of the whole prefix", T, float, bf16) {
    if constexpr (!std::is_same_v<T, float>)
        if (!attention_kernel<paper_policies::attention, gpu>::uses_sm90(64))
            MESSAGE("the sm90 attention kernel is not built or not on this device: d_state 64 runs the mma.sync kernel");
    check_band<T>(32, 2, 2, 203, 1);  // mma.sync (bf16), SIMT (float)
    check_band<T>(64, 1, 1, 333, 2);  // sm90 (bf16 on an sm_90 device built for 90a)
}

TEST_CASE_TEMPLATE("cuda context parallel: simulated ranks on one GPU equal the single-GPU mixer", T, float, bf16) {
    check_forward<T, zigzag_queries>(config_of(64, 1), 2, 203, 10);
    check_forward<T, zigzag_queries>(config_of(32, 2), 1, 160, 20);
    if constexpr (std::is_same_v<T, float>) check_forward<T, contiguous_queries>(config_of(32, 2), 2, 97, 30);
}

TEST_CASE_TEMPLATE("cuda context parallel: decoding's prefill on simulated ranks equals the single-GPU prefill", T, float,
                   bf16) {
    check_prefill<T>(config_of(64, 1), 150, 40);
}

TEST_CASE_TEMPLATE("cuda context parallel: one rank per GPU over NCCL equals the single-GPU mixer", T, float, bf16) {
#if !defined(TRANSMAMBA_WITH_NCCL)
    MESSAGE("built without NCCL (TRANSMAMBA_WITH_NCCL): the multi-GPU case is skipped");
#else
    int devices = 0;
    kernels::cuda::check_cuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    if (devices < 2) {
        MESSAGE("one rank per GPU needs at least 2 GPUs, this machine has ", devices, ": the NCCL case is skipped");
        return;
    }
    const mixer_config c = config_of(64, 1);
    const index_t batch = 2, L = 203;
    const std::uint64_t seed = 50;
    const auto u = random_storage<T>(std::size_t(batch * L * c.d_model), seed + 1);
    for (index_t R : {index_t(2), index_t(4)}) {
        if (R > devices) {
            MESSAGE("R = ", R, " needs ", R, " GPUs, this machine has ", devices, ": skipped");
            continue;
        }
        for (const index_t P : transpoints_for(L, R)) {
            CAPTURE(R);
            CAPTURE(P);
            whole_result<T> want;
            {
                kernels::cuda::check_cuda(cudaSetDevice(0), "cudaSetDevice");
                mixer<T, gpu> m(c);
                randomize(m.params(), seed);
                want = single_gpu(m, upload(u), batch, L, P);
            }
            const nccl_id id = nccl_id::create();
            const token_slices slices(L, R);
            std::vector<nccl_rank_result> results(static_cast<std::size_t>(R));
            std::vector<std::thread> threads;
            for (index_t r = 0; r < R; ++r)
                threads.emplace_back(nccl_rank<T>, std::cref(id), c, std::cref(u), batch, L, P, R, r, seed,
                                     std::ref(results[static_cast<std::size_t>(r)]));
            for (auto& t : threads) t.join();
            for (index_t r = 0; r < R; ++r) {
                CAPTURE(r);
                const auto& got = results[static_cast<std::size_t>(r)];
                CHECK(got.error == "");
                if (!got.error.empty()) continue;
                const token_slice s = slices.of(r);
                std::vector<double> want_rows;
                for (index_t b = 0; b < batch; ++b)
                    want_rows.insert(want_rows.end(), want.out.begin() + (b * L + s.begin) * c.d_model,
                                     want.out.begin() + (b * L + s.end) * c.d_model);
                CHECK(reference::max_relative_error(got.out, want_rows) < tolerance<T>());
                CHECK(reference::max_relative_error(got.state, want.state) < tolerance<T>());
                CHECK(got.received == results[0].received);  // every rank receives the same volume
            }
        }
    }
    kernels::cuda::check_cuda(cudaSetDevice(0), "cudaSetDevice");
#endif
}

}  // namespace test_context_parallel_cuda
