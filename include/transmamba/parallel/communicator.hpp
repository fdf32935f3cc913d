#pragma once
// What the context-parallel layer asks of a communicator (docs/context_parallel.md). One process
// holds one or more of the R ranks ("local" ranks): simulated_ranks holds all R in one process (CPU,
// or one GPU), nccl_communicator one rank per process and GPU. The layer is written as phases of
// local work separated by collectives, each collective called once with one buffer per local rank,
// so the same code runs every rank in one process or each rank in its own.
//
// all_gather_bytes(send, recv, bytes): for each local rank i, recv[i] receives size() * bytes bytes,
// slot q holding rank q's send buffer. It is ordered after the work already issued on each local
// rank's context (stream order on CUDA) and before the work issued after it. Send and receive
// buffers never overlap.
#include <concepts>
#include <cstddef>
#include <span>
#include <vector>

#include "transmamba/backend/traits.hpp"
#include "transmamba/core/checked_size.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/tensor_view.hpp"  // index_t

namespace transmamba {

template <class C>
concept communicator = requires(C& comm, const C& ccomm, index_t i, std::span<const std::byte* const> send,
                                std::span<std::byte* const> recv, std::size_t bytes) {
    typename C::backend;
    { ccomm.size() } -> std::convertible_to<index_t>;         // R, all ranks
    { ccomm.local_count() } -> std::convertible_to<index_t>;  // ranks this process holds
    { ccomm.rank(i) } -> std::convertible_to<index_t>;        // the global rank of local rank i
    { ccomm.context_of(i) } -> std::convertible_to<const typename backend_traits<typename C::backend>::context&>;
    comm.all_gather_bytes(send, recv, bytes);
};

// The typed face of all_gather_bytes: count elements of T from each rank.
template <class T, communicator Comm>
void all_gather(Comm& comm, std::span<const T* const> send, std::span<T* const> recv, std::size_t count) {
    std::vector<const std::byte*> s(send.size());
    std::vector<std::byte*> r(recv.size());
    for (std::size_t i = 0; i < send.size(); ++i) s[i] = reinterpret_cast<const std::byte*>(send[i]);
    for (std::size_t i = 0; i < recv.size(); ++i) r[i] = reinterpret_cast<std::byte*>(recv[i]);
    comm.all_gather_bytes(std::span<const std::byte* const>(s), std::span<std::byte* const>(r),
                          checked_bytes<T>(count, "all-gather of ", count, " elements"));
}

}  // namespace transmamba
