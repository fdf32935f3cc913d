// One TransMamba layer with its sequence split across R GPUs (context_parallel_mixer,
// docs/context_parallel.md) against the same layer on one GPU. The layer of bench/cuda/layer.cu:
// bf16, d_model 2048, expand 2, headdim 64 (64 heads), d_state 128, g 1, d_conv 4, chunk 256,
// paper_policies (every call checks u: a stream synchronisation inside each timing), batch 1.
//
//   context_parallel/single_gpu/bf16/L:<L>/P:<P>    mixer::forward on the whole sequence
//   context_parallel/ranks_1/bf16/L:<L>/P:<P>       the context-parallel path with one rank
//                                                    (simulated_ranks: its collectives are copies):
//                                                    the price of the path itself against single_gpu
//   context_parallel/ranks_<R>/bf16/L:<L>/P:<P>     R = 2, 4, 8, one rank per GPU, each in a thread
//                                                    of its own with an nccl_communicator (NVLS off);
//                                                    registered only when NCCL is built in and the
//                                                    machine has R GPUs
//   L in {262144, 1048576}, P in {0, L/4}
//
// Timing: single_gpu and ranks_1, CUDA events around each call (bench/support/cuda_bench.cuh);
// ranks_<R>, the host's clock from releasing all ranks to the last one's stream synchronisation
// (what a training step waits for), one warm-up call. The median is the figure.
// Counters (besides cuda_bench's): ranks; received_MB_per_rank, the bytes the collectives bring to
// one rank per call (nccl_communicator / simulated_ranks count them); comm_ms_at_450GBps, those
// bytes at 450 GB/s, one direction of an H100 / H200's NVLink: the time below which communication
// alone cannot go, to read beside median_ms (the layer does not overlap its collectives with work).
// TFLOP_per_s counts the whole layer's work as bench/cuda/layer.cu does, whatever R.
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <transmamba/backend/cuda.cuh>
#include <transmamba/block/mixer.hpp>
#include <transmamba/parallel.hpp>
#include <transmamba/parallel/cuda/state_scan.cuh>
#if defined(TRANSMAMBA_WITH_NCCL)
#include <transmamba/parallel/nccl_communicator.cuh>
#endif

#include "../support/cuda_bench.cuh"

namespace {

using namespace transmamba;
using gpu = transmamba::cuda;
using bf16 = __nv_bfloat16;

constexpr double link_GB_per_s = 450.0;

mixer_config layer_config() {
    mixer_config c;
    c.d_model = 2048;
    c.expand = 2;
    c.headdim = 64;
    c.d_state = 128;
    c.ngroups = 1;
    c.chunk_size = 256;
    c.validate();
    return c;
}

// SPEC section 4 for one sequence of L tokens at P (as bench/cuda/layer.cu counts).
double layer_flops(index_t L_, index_t P_) {
    const auto c = layer_config();
    const double L = double(L_), P = double(P_), h = double(c.nheads()), p = double(c.headdim),
                 n = double(c.d_state), g = double(c.ngroups);
    return 2.0 * L * double(c.d_model) * double(c.d_in_proj()) + 2.0 * L * double(c.d_inner()) * double(c.d_model) +
           P * P * (g * n + h * p) + (P > 0 ? 2.0 * h * P * n * p : 0.0) +
           h * (L - P) * (2.0 * double(c.chunk_size) * (n + p) + 4.0 * n * p);
}

// ms of one call on R GPUs, for the iteration count: GEMMs ~500, attention ~300, scan ~125 TFLOP/s.
double estimate_ms(index_t L, index_t P, index_t R) {
    const auto c = layer_config();
    const double proj = 2.0 * double(L) * double(c.d_model) * double(c.d_in_proj() + c.d_inner());
    const double attn = double(P) * double(P) * double(c.ngroups * c.d_state + c.nheads() * c.headdim);
    const double scan = layer_flops(L, P) - proj - attn;
    return (proj / 500e12 + attn / 300e12 + scan / 125e12) * 1e3 / double(R) + 2.0;
}

// The layer, drawn once (random weights take about a second on the host).
mixer<bf16, gpu>& the_layer() {
    static std::unique_ptr<mixer<bf16, gpu>> layer;
    if (!layer) {
        layer = std::make_unique<mixer<bf16, gpu>>(layer_config());
        randomize(layer->params(), 2026);
    }
    return *layer;
}

void set_layer_counters(benchmark::State& st, const std::vector<double>& times, index_t L, index_t P, index_t R,
                        std::size_t received_per_call) {
    bench::work_counts w;
    w.tokens = double(L);
    w.flops = layer_flops(L, P);
    w.bytes = 2.0 * double(L) * double(layer_config().d_model) * sizeof(bf16);  // u read, out written
    w.ceiling = bench::ceiling_TFLOP_per_s("bf16") * double(R);
    bench::set_counters(st, times, w);
    st.counters["ranks"] = double(R);
    st.counters["received_MB_per_rank"] = double(received_per_call) / 1e6;
    st.counters["comm_ms_at_450GBps"] = double(received_per_call) / (link_GB_per_s * 1e9) * 1e3;
}

void bm_single(benchmark::State& st, index_t L, index_t P) {
    auto& layer = the_layer();
    const index_t dm = layer.config().d_model;
    device_buffer<bf16> u(static_cast<std::size_t>(L * dm)), out(u.size());
    bench::fill_uniform(u, 7, -1.0f, 1.0f);
    device_buffer<std::byte> ws(layer.workspace_bytes(1, L));
    const cuda_context ctx{};
    const auto times = bench::time_iterations(st, ctx.stream, 1, [&] {
        layer.forward({u.data(), {1, L, dm}}, {out.data(), {1, L, dm}}, P, {ws.data(), ws.size()}, {}, ctx);
    });
    set_layer_counters(st, times, L, P, 1, 0);
}

void bm_one_rank(benchmark::State& st, index_t L, index_t P) {
    auto& layer = the_layer();
    const index_t dm = layer.config().d_model;
    const context_parallel_mixer<bf16, gpu> cp(layer);
    device_buffer<bf16> u(static_cast<std::size_t>(L * dm)), out(u.size());
    bench::fill_uniform(u, 7, -1.0f, 1.0f);
    device_buffer<std::byte> ws(cp.workspace_bytes(1, L, P, 1));
    context_parallel_rank_io<bf16> io;
    io.u = tensor_view<const bf16, 3>(u.data(), {1, L, dm});
    io.out = tensor_view<bf16, 3>(out.data(), {1, L, dm});
    io.ws = {ws.data(), ws.size()};
    simulated_ranks<gpu> comm(1);
    const auto times = bench::time_iterations(st, nullptr, 1, [&] {
        cp.forward(comm, std::span<const context_parallel_rank_io<bf16>>(&io, 1), L, P);
    });
    set_layer_counters(st, times, L, P, 1, 0);  // one rank receives nothing from others
}

#if defined(TRANSMAMBA_WITH_NCCL)
// R ranks, one thread and GPU each, kept for the benchmark's iterations: all meet at a barrier,
// run one forward pass each, synchronise their streams and meet again.
class rank_pool {
public:
    rank_pool(index_t R, index_t L, index_t P) : R_(R), L_(L), P_(P), errors_(static_cast<std::size_t>(R)), meet_(R + 1) {
        const nccl_id id = nccl_id::create();
        for (index_t r = 0; r < R; ++r) threads_.emplace_back([this, r, id] { body(r, id); });
        meet_.arrive_and_wait();  // every rank set up (or failed)
        for (const auto& e : errors_)
            if (!e.empty()) {
                stop_ = true;
                meet_.arrive_and_wait();
                for (auto& t : threads_) t.join();
                threads_.clear();
                fail("context_parallel bench: ", e);
            }
    }
    rank_pool(const rank_pool&) = delete;
    rank_pool& operator=(const rank_pool&) = delete;
    ~rank_pool() {
        if (threads_.empty()) return;
        stop_ = true;
        meet_.arrive_and_wait();
        for (auto& t : threads_) t.join();
    }

    // Host ms from releasing the ranks to the last stream synchronisation.
    double run_once() {
        const auto t0 = std::chrono::steady_clock::now();
        meet_.arrive_and_wait();
        meet_.arrive_and_wait();
        const auto t1 = std::chrono::steady_clock::now();
        for (const auto& e : errors_)
            if (!e.empty()) fail("context_parallel bench: ", e);
        return std::chrono::duration<double, std::milli>(t1 - t0).count();
    }
    std::size_t received_per_call() const { return received_.load() / std::max<std::size_t>(calls_.load(), 1); }

private:
    void body(index_t r, nccl_id id) {
        std::unique_ptr<cuda_stream> stream;
        std::unique_ptr<nccl_communicator> comm;
        std::unique_ptr<mixer<bf16, gpu>> layer;
        device_buffer<bf16> u, out;
        device_buffer<std::byte> ws;
        context_parallel_rank_io<bf16> io;
        try {
            kernels::cuda::check_cuda(cudaSetDevice(static_cast<int>(r)), "cudaSetDevice");
            stream = std::make_unique<cuda_stream>();
            comm = std::make_unique<nccl_communicator>(id, R_, r, stream->context());
            layer = std::make_unique<mixer<bf16, gpu>>(layer_config());
            randomize(layer->params(), 2026);
            const index_t dm = layer->config().d_model;
            const token_slice s = token_slices(L_, R_).of(r);
            u.resize(static_cast<std::size_t>(s.size() * dm));
            out.resize(u.size());
            bench::fill_uniform(u, 7 + static_cast<std::uint64_t>(r), -1.0f, 1.0f);
            const context_parallel_mixer<bf16, gpu> cp(*layer);
            ws.resize(cp.workspace_bytes(1, L_, P_, R_));
            io.u = tensor_view<const bf16, 3>(u.data(), {1, s.size(), dm});
            io.out = tensor_view<bf16, 3>(out.data(), {1, s.size(), dm});
            io.ws = {ws.data(), ws.size()};
            kernels::cuda::check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
        } catch (const std::exception& e) {
            errors_[std::size_t(r)] = "rank " + std::to_string(r) + ": " + e.what();
        }
        meet_.arrive_and_wait();  // set up
        for (;;) {
            meet_.arrive_and_wait();  // released
            if (stop_) return;
            if (errors_[std::size_t(r)].empty()) {
                try {
                    const context_parallel_mixer<bf16, gpu> cp(*layer);
                    comm->reset_counters();
                    cp.forward(*comm, std::span<const context_parallel_rank_io<bf16>>(&io, 1), L_, P_);
                    stream->synchronize();
                    comm->check_async();
                    if (r == 0) {
                        received_ += comm->bytes_received_per_rank();
                        ++calls_;
                    }
                } catch (const std::exception& e) {
                    errors_[std::size_t(r)] = "rank " + std::to_string(r) + ": " + e.what();
                }
            }
            meet_.arrive_and_wait();  // done
        }
    }

    index_t R_, L_, P_;
    std::vector<std::string> errors_;
    std::barrier<> meet_;
    std::atomic<bool> stop_{false};
    std::atomic<std::size_t> received_{0}, calls_{0};
    std::vector<std::thread> threads_;
};

void bm_ranks(benchmark::State& st, index_t R, index_t L, index_t P) {
    rank_pool pool(R, L, P);
    (void)pool.run_once();  // warm-up: cuBLAS handles, NCCL's first collectives
    std::vector<double> times;
    for (auto _ : st) {
        const double ms = pool.run_once();
        times.push_back(ms);
        st.SetIterationTime(ms * 1e-3);
    }
    set_layer_counters(st, times, L, P, R, pool.received_per_call());
}
#endif

void add_all(int devices) {
    for (index_t L : {index_t(262144), index_t(1048576)})
        for (index_t P : {index_t(0), L / 4}) {
            const auto name = [&](const std::string& impl) {
                return bench::bench_name("context_parallel", impl, "bf16", {{"L", L}, {"P", P}});
            };
            const int iters = bench::iterations_for(estimate_ms(L, P, 1), 3000.0, 3, 10);
            bench::add(name("single_gpu"), iters, [L, P](benchmark::State& st) { bm_single(st, L, P); });
            bench::add(name("ranks_1"), iters, [L, P](benchmark::State& st) { bm_one_rank(st, L, P); });
#if defined(TRANSMAMBA_WITH_NCCL)
            for (index_t R : {index_t(2), index_t(4), index_t(8)})
                if (R <= devices)
                    bench::add(name("ranks_" + std::to_string(R)), bench::iterations_for(estimate_ms(L, P, R), 3000.0, 3, 10),
                               [R, L, P](benchmark::State& st) { bm_ranks(st, R, L, P); });
#endif
        }
    (void)devices;
}

}  // namespace

int main(int argc, char** argv) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;  // listing on a machine without a GPU
#if defined(TRANSMAMBA_WITH_NCCL)
    nccl_disable_nvls_unless_set();  // before any thread starts
#endif
    add_all(devices);
    return transmamba::bench::run_main(argc, argv);
}
