#pragma once
// One rank of the context-parallel layer per GPU, on NCCL (docs/context_parallel.md): the
// `communicator` the layer runs on across GPUs, as simulated_ranks is the one for ranks in one
// process. A rank is one process (examples/context_parallel.cu) or one thread of a process that
// drives several GPUs (the multi-GPU test); either way the calling thread's current device is the
// rank's GPU when the communicator is made and whenever the layer runs on it.
//
// Collectives go on the rank's stream (context_of), so they are ordered after the layer's kernels
// already issued there and before those issued after, with no host synchronisation: exactly what
// the layer asks of a communicator (parallel/communicator.hpp). Every NCCL call is checked, and a
// failure becomes a transmamba::error naming the call, NCCL's reason and its last error message.
//
// NVLink multicast (NVLS) is switched off unless the environment says otherwise: the GPUs this was
// written for share their host with other jobs, and NVLS reserves multicast memory on every GPU of
// the node. Include from CUDA translation units of a build with NCCL (TRANSMAMBA_WITH_NCCL, target
// transmamba::nccl).
#include <cuda_runtime.h>
#include <nccl.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <span>
#include <string>
#include <thread>

#include "transmamba/backend/cuda/check.cuh"
#include "transmamba/backend/cuda/context.cuh"
#include "transmamba/backend/cuda/types.cuh"
#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"  // index_t

namespace transmamba {

namespace kernels::cuda {

inline void check_nccl(ncclResult_t status, const char* call, ncclComm_t comm = nullptr) {
    if (status == ncclSuccess) return;
    const char* last = ncclGetLastError(comm);
    fail("NCCL call ", call, " failed: ", ncclGetErrorString(status), (last && *last ? ": " : ""), (last ? last : ""));
}

}  // namespace kernels::cuda

// NCCL_NVLS_ENABLE=0 unless the variable is already set (then the user's choice stands). Called
// before NCCL reads its environment, i.e. before the first NCCL call of the process; call it
// before starting threads that use NCCL (setenv is not safe beside concurrent getenv).
inline void nccl_disable_nvls_unless_set() {
    if (std::getenv("NCCL_NVLS_ENABLE") == nullptr) ::setenv("NCCL_NVLS_ENABLE", "0", 0);
}

// The id that ties the R ranks of one communicator together: made by one rank, handed to the
// others (through a file here; any channel will do: it is sizeof(ncclUniqueId) plain bytes).
struct nccl_id {
    ncclUniqueId value{};

    static nccl_id create() {
        nccl_disable_nvls_unless_set();
        nccl_id id;
        kernels::cuda::check_nccl(ncclGetUniqueId(&id.value), "ncclGetUniqueId");
        return id;
    }

    // Written to a temporary file and renamed, so a reader never sees half an id.
    void write(const std::string& path) const {
        const std::string tmp = path + ".tmp" + std::to_string(::getpid());
        {
            std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
            require(f.good(), "nccl_id: cannot write ", tmp);
            f.write(reinterpret_cast<const char*>(&value), sizeof(value));
            require(f.good(), "nccl_id: writing ", tmp, " failed");
        }
        require(std::rename(tmp.c_str(), path.c_str()) == 0, "nccl_id: cannot rename ", tmp, " to ", path);
    }

    // Waits up to `timeout` for the file that rank 0 writes.
    static nccl_id read(const std::string& path, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
        const auto until = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            std::ifstream f(path, std::ios::binary);
            if (f.good()) {
                nccl_id id;
                f.read(reinterpret_cast<char*>(&id.value), sizeof(id.value));
                require(f.gcount() == static_cast<std::streamsize>(sizeof(id.value)), "nccl_id: ", path, " holds ",
                        f.gcount(), " bytes, an NCCL unique id has ", sizeof(id.value));
                return id;
            }
            require(std::chrono::steady_clock::now() < until, "nccl_id: no id file ", path, " after ",
                    timeout.count(), " ms (has rank 0 started?)");
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
};

class nccl_communicator {
public:
    using backend = cuda;
    using context = cuda_context;

    // Rank `rank` of `world`, on the current device, its collectives on ctx's stream. Blocks until
    // all `world` ranks have joined (ncclCommInitRank).
    nccl_communicator(const nccl_id& id, index_t world, index_t rank, context ctx = {}) : world_(world), rank_(rank), ctx_(ctx) {
        require(world >= 1, "nccl_communicator: the world must hold at least one rank, got ", world);
        require(rank >= 0 && rank < world, "nccl_communicator: rank ", rank, " out of range [0, ", world, ")");
        nccl_disable_nvls_unless_set();
        kernels::cuda::check_cuda(cudaGetDevice(&device_), "cudaGetDevice");
        kernels::cuda::check_nccl(ncclCommInitRank(&comm_, static_cast<int>(world), id.value, static_cast<int>(rank)),
                                  "ncclCommInitRank");
    }
    nccl_communicator(const nccl_communicator&) = delete;
    nccl_communicator& operator=(const nccl_communicator&) = delete;
    ~nccl_communicator() {
        if (comm_ != nullptr) ncclCommDestroy(comm_);
    }

    index_t size() const { return world_; }
    index_t local_count() const { return 1; }
    index_t rank(index_t) const { return rank_; }
    const context& context_of(index_t) const { return ctx_; }
    int device() const { return device_; }
    ncclComm_t get() const { return comm_; }

    void all_gather_bytes(std::span<const std::byte* const> send, std::span<std::byte* const> recv, std::size_t bytes) {
        require(send.size() == 1 && recv.size() == 1, "nccl_communicator::all_gather: one rank per process, but ",
                send.size(), " send and ", recv.size(), " receive buffers");
        if (bytes == 0) return;
        kernels::cuda::check_nccl(ncclAllGather(send[0], recv[0], bytes, ncclUint8, comm_, ctx_.stream), "ncclAllGather",
                                  comm_);
        received_ += static_cast<std::size_t>(world_ - 1) * bytes;
        ++collectives_;
    }

    // An error of a collective already issued (a peer gone, a network fault), which NCCL reports
    // asynchronously; call after synchronising the stream.
    void check_async() const {
        ncclResult_t async = ncclSuccess;
        kernels::cuda::check_nccl(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError", comm_);
        kernels::cuda::check_nccl(async, "a collective (ncclCommGetAsyncError)", comm_);
    }

    // The same counters as simulated_ranks: bytes this rank received, collectives issued.
    std::size_t bytes_received_per_rank() const { return received_; }
    std::size_t collectives() const { return collectives_; }
    void reset_counters() { received_ = 0, collectives_ = 0; }

private:
    index_t world_, rank_;
    context ctx_;
    int device_ = 0;
    ncclComm_t comm_ = nullptr;
    std::size_t received_ = 0, collectives_ = 0;
};

}  // namespace transmamba
