// One TransMamba layer with its sequence split across GPUs (docs/context_parallel.md): one process
// per GPU, NCCL between them. Each rank holds tokens [r L / R, (r + 1) L / R), runs
// context_parallel_mixer over an nccl_communicator, checks its rows against the single-GPU layer
// run on the whole sequence on its own GPU, and rank 0 prints the largest relative error and the
// times.
//
//   context_parallel --gpus 2 [--tokens 65536] [--transpoint 16384] [--d-model 2048] [--reps 5] [--no-check]
//       forks one process per GPU (the id file is made and removed for you)
//   context_parallel --rank R --world W --id-file PATH [...]
//       one rank, started by a launcher of your own (srun, mpirun, a shell loop); every rank gets the
//       same PATH on a shared file system, which must not exist yet: rank 0 writes the NCCL id there.
//
// The layer: bf16, d_model 2048 (by default), expand 2, headdim 64, d_state 128, one group, chunk 256,
// random weights in a trained model's ranges. NCCL_NVLS_ENABLE=0 is set unless the environment
// says otherwise. Exit status 0 when every rank's error is within the bf16 bound (2e-2).
#include <cuda_bf16.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include <transmamba/backend/cuda.cuh>
#include <transmamba/parallel.hpp>
#include <transmamba/parallel/cuda/state_scan.cuh>
#include <transmamba/parallel/nccl_communicator.cuh>
#include <transmamba/transmamba.hpp>

namespace {

using namespace transmamba;
using gpu = transmamba::cuda;
using bf16 = __nv_bfloat16;
namespace k = transmamba::kernels::cuda;

struct options {
    index_t gpus = 0;  // fork mode when > 0
    index_t rank = -1, world = 0;
    std::string id_file;
    index_t tokens = 65536, transpoint = -1, d_model = 2048;
    int reps = 5;
    bool check = true;
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "context_parallel: %s\n"
                 "usage: context_parallel --gpus N [options]\n"
                 "       context_parallel --rank R --world W --id-file PATH [options]\n"
                 "options: --tokens L (65536)  --transpoint P (L / 4)  --d-model D (2048)  --reps N (5)  --no-check\n",
                 why);
    std::exit(2);
}

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(("missing value after " + a).c_str());
            return argv[++i];
        };
        if (a == "--gpus") o.gpus = std::stoll(value());
        else if (a == "--rank") o.rank = std::stoll(value());
        else if (a == "--world") o.world = std::stoll(value());
        else if (a == "--id-file") o.id_file = value();
        else if (a == "--tokens") o.tokens = std::stoll(value());
        else if (a == "--transpoint") o.transpoint = std::stoll(value());
        else if (a == "--d-model") o.d_model = std::stoll(value());
        else if (a == "--reps") o.reps = std::stoi(value());
        else if (a == "--no-check") o.check = false;
        else usage(("unknown option " + a).c_str());
    }
    if (o.transpoint < 0) o.transpoint = o.tokens / 4;
    if (o.gpus <= 0 && (o.rank < 0 || o.world <= 0 || o.id_file.empty()))
        usage("give --gpus N, or --rank, --world and --id-file");
    if (o.reps < 1) usage("--reps must be at least 1");
    return o;
}

mixer_config layer_config(index_t d_model) {
    mixer_config c;
    c.d_model = d_model;
    c.expand = 2;
    c.headdim = 64;
    c.d_state = 128;
    c.ngroups = 1;
    c.chunk_size = 256;
    c.validate();
    return c;
}

// u(t, d) = a hash of its index in the whole sequence, uniform in [-1, 1): every rank makes its
// slice and the check the whole sequence, identically, without a host copy of a million rows.
__global__ void fill_inputs(bf16* u, index_t first, index_t n) {
    for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
        unsigned long long x = static_cast<unsigned long long>(first + i) * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
        x ^= x >> 33;
        x *= 0xFF51AFD7ED558CCDull;
        x ^= x >> 33;
        u[i] = __float2bfloat16(static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f);
    }
}

// max |a - b| and max |b| over n values: the pieces of a relative error across ranks.
__global__ void diff_and_scale(const bf16* a, const bf16* b, index_t n, float* out) {
    float d = 0.f, s = 0.f;
    for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
        const float x = __bfloat162float(a[i]), y = __bfloat162float(b[i]);
        d = fmaxf(d, isfinite(x) ? fabsf(x - y) : INFINITY);
        s = fmaxf(s, fabsf(y));
    }
    // Non-negative floats order as their bit patterns.
    atomicMax(reinterpret_cast<unsigned*>(out), __float_as_uint(d));
    atomicMax(reinterpret_cast<unsigned*>(out + 1), __float_as_uint(s));
}

// Milliseconds per call of `body` on `stream`: one warm-up call, then `reps` between two events.
template <class Body>
double time_ms(cudaStream_t stream, int reps, Body&& body) {
    body();
    cudaEvent_t start, stop;
    k::check_cuda(cudaEventCreate(&start), "cudaEventCreate");
    k::check_cuda(cudaEventCreate(&stop), "cudaEventCreate");
    k::check_cuda(cudaEventRecord(start, stream), "cudaEventRecord");
    for (int i = 0; i < reps; ++i) body();
    k::check_cuda(cudaEventRecord(stop, stream), "cudaEventRecord");
    k::check_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    k::check_cuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return ms / reps;
}

int run_rank(const options& o, index_t rank, index_t world, const std::string& id_file) {
    nccl_disable_nvls_unless_set();
    int devices = 0;
    k::check_cuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    require(devices >= 1, "context_parallel: no CUDA device");
    k::check_cuda(cudaSetDevice(static_cast<int>(rank % devices)), "cudaSetDevice");

    nccl_id id;
    if (rank == 0) {
        id = nccl_id::create();
        id.write(id_file);
    } else {
        id = nccl_id::read(id_file);
    }
    const cuda_stream stream;
    const cuda_context ctx = stream.context();
    nccl_communicator comm(id, world, rank, ctx);
    if (rank == 0) std::remove(id_file.c_str());  // every rank has joined: the id is spent

    const mixer_config c = layer_config(o.d_model);
    mixer<bf16, gpu> layer(c);
    randomize(layer.params(), 2026);
    const index_t L = o.tokens, P = std::min(o.transpoint, L), dm = c.d_model;
    const token_slice s = token_slices(L, world).of(rank);
    const auto rows = static_cast<std::size_t>(s.size() * dm);

    // The single-GPU layer on the whole sequence: this rank's rows of it, and its time.
    device_buffer<bf16> want(o.check ? rows : 0);
    double single_ms = 0;
    if (o.check) {
        device_buffer<bf16> u(static_cast<std::size_t>(L * dm)), out(static_cast<std::size_t>(L * dm));
        fill_inputs<<<k::blocks_for(u.size(), 256), 256, 0, ctx.stream>>>(u.data(), 0, index_t(u.size()));
        k::check_launch("fill_inputs");
        workspace<gpu> ws;
        const workspace_span span = ws.reserve(layer.workspace_bytes(1, L));
        single_ms = time_ms(ctx.stream, o.reps, [&] {
            layer.forward({u.data(), {1, L, dm}}, {out.data(), {1, L, dm}}, P, span, {}, ctx);
        });
        backend_traits<gpu>::copy(ctx, out.data() + s.begin * dm, want.data(), rows);
        backend_traits<gpu>::synchronize(ctx);
    }

    // The context-parallel layer: this rank's slice.
    const context_parallel_mixer<bf16, gpu> cp(layer);
    device_buffer<bf16> u(rows), out(rows);
    fill_inputs<<<k::blocks_for(rows, 256), 256, 0, ctx.stream>>>(u.data(), s.begin * dm, index_t(rows));
    k::check_launch("fill_inputs");
    device_buffer<std::byte> ws(cp.workspace_bytes(1, L, P, world));
    context_parallel_rank_io<bf16> io;
    io.u = tensor_view<const bf16, 3>(u.data(), {1, s.size(), dm});
    io.out = tensor_view<bf16, 3>(out.data(), {1, s.size(), dm});
    io.ws = {ws.data(), ws.size()};
    const double cp_ms = time_ms(ctx.stream, o.reps, [&] {
        cp.forward(comm, std::span<const context_parallel_rank_io<bf16>>(&io, 1), L, P);
    });
    comm.check_async();
    const std::size_t bytes_per_call = comm.bytes_received_per_rank() / std::size_t(o.reps + 1);

    // Every rank's (max diff, max scale, time) to every rank, over the communicator itself.
    device_buffer<float> mine(3), all(static_cast<std::size_t>(3 * world));
    backend_traits<gpu>::fill(ctx, mine.data(), 3, 0.0f);
    if (o.check) {
        diff_and_scale<<<k::blocks_for(rows, 256), 256, 0, ctx.stream>>>(out.data(), want.data(), index_t(rows), mine.data());
        k::check_launch("diff_and_scale");
    }
    const float t = static_cast<float>(cp_ms);
    backend_traits<gpu>::copy_from_host(&t, mine.data() + 2, 1, ctx);
    all_gather<float>(comm, std::span<const float* const>(std::vector<const float*>{mine.data()}),
                      std::span<float* const>(std::vector<float*>{all.data()}), 3);
    std::vector<float> host(all.size());
    backend_traits<gpu>::copy_to_host(all.data(), host.data(), host.size(), ctx);
    backend_traits<gpu>::synchronize(ctx);
    comm.check_async();

    float diff = 0, scale = 0, slowest = 0;
    for (index_t q = 0; q < world; ++q) {
        diff = std::max(diff, host[std::size_t(3 * q)]);
        scale = std::max(scale, host[std::size_t(3 * q + 1)]);
        slowest = std::max(slowest, host[std::size_t(3 * q + 2)]);
    }
    const double error = scale > 0 ? double(diff) / double(scale) : double(diff);
    const bool ok = !o.check || (std::isfinite(error) && error < 2e-2);
    if (rank == 0) {
        std::printf("context_parallel: %lld ranks, L = %lld tokens, P = %lld, d_model %lld, bf16\n", (long long)world,
                    (long long)L, (long long)P, (long long)dm);
        if (o.check)
            std::printf("  max relative error against the single-GPU layer: %.3e (bound 2e-2): %s\n", error,
                        ok ? "ok" : "FAILED");
        std::printf("  context-parallel forward: %.3f ms (slowest rank), %.1f MB received per rank\n", double(slowest),
                    double(bytes_per_call) / 1e6);
        if (o.check)
            std::printf("  single-GPU forward (rank 0's GPU, whole sequence): %.3f ms; speedup %.2fx\n", single_ms,
                        single_ms / double(slowest));
    }
    return ok ? 0 : 1;
}

int guarded_rank(const options& o, index_t rank, index_t world, const std::string& id_file) {
    try {
        return run_rank(o, rank, world, id_file);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "context_parallel rank %lld: %s\n", (long long)rank, e.what());
        return 1;
    }
}

}  // namespace

int main(int argc, char** argv) {
    const options o = parse(argc, argv);
    if (o.gpus <= 0) return guarded_rank(o, o.rank, o.world, o.id_file);

    // Fork mode: nothing here touches CUDA or NCCL before the fork (neither survives one).
    const std::string id_file = "/tmp/transmamba_context_parallel_" + std::to_string(::getpid()) + ".id";
    std::remove(id_file.c_str());
    std::vector<pid_t> children;
    for (index_t r = 0; r < o.gpus; ++r) {
        const pid_t pid = ::fork();
        if (pid < 0) {
            std::perror("fork");
            return 1;
        }
        if (pid == 0) {
            const int status = guarded_rank(o, r, o.gpus, id_file);
            std::fflush(nullptr);
            ::_exit(status);
        }
        children.push_back(pid);
    }
    // A rank that fails leaves the others waiting in a collective: end them then.
    int failed = 0;
    for (std::size_t left = children.size(); left > 0; --left) {
        int status = 0;
        const pid_t pid = ::wait(&status);
        if (pid < 0) break;
        std::erase(children, pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            ++failed;
            for (const pid_t other : children) ::kill(other, SIGTERM);
        }
    }
    std::remove(id_file.c_str());
    if (failed) std::fprintf(stderr, "context_parallel: %d of %lld ranks failed\n", failed, (long long)o.gpus);
    return failed ? 1 : 0;
}
