#pragma once
// R ranks in one process (docs/context_parallel.md): the communicator the CPU tests and the
// single-GPU tests run the context-parallel layer on. A collective is a set of copies in the
// backend's memory on one context, so the layer's combine code, written once against `communicator`,
// is checked here without NCCL. It also counts the bytes each rank receives, the figure the
// communication bound in the docs is computed from.
#include <cstddef>
#include <span>

#include "transmamba/backend/traits.hpp"
#include "transmamba/core/error.hpp"
#include "transmamba/core/numeric.hpp"
#include "transmamba/core/tensor_view.hpp"  // index_t

namespace transmamba {

template <class Backend>
class simulated_ranks {
public:
    using backend = Backend;
    using context = typename backend_traits<Backend>::context;

    explicit simulated_ranks(index_t ranks, context ctx = {}) : ranks_(ranks), ctx_(ctx) {
        require(ranks >= 1, "simulated_ranks: the number of ranks must be at least 1, got ", ranks);
    }

    index_t size() const { return ranks_; }
    index_t local_count() const { return ranks_; }
    index_t rank(index_t i) const { return i; }
    const context& context_of(index_t) const { return ctx_; }

    void all_gather_bytes(std::span<const std::byte* const> send, std::span<std::byte* const> recv, std::size_t bytes) {
        require(static_cast<index_t>(send.size()) == ranks_ && static_cast<index_t>(recv.size()) == ranks_,
                "simulated_ranks::all_gather: ", ranks_, " ranks but ", send.size(), " send and ", recv.size(),
                " receive buffers");
        if (bytes == 0) return;
        for (index_t i = 0; i < ranks_; ++i)
            for (index_t q = 0; q < ranks_; ++q)
                backend_traits<Backend>::copy(ctx_, send[std::size_t(q)], recv[std::size_t(i)] + std::size_t(q) * bytes,
                                              bytes);
        received_ += static_cast<std::size_t>(ranks_ - 1) * bytes;  // a rank's own slot does not travel
        ++collectives_;
    }

    // Bytes one rank received from the others since construction (or reset_counters), and the
    // number of collectives.
    std::size_t bytes_received_per_rank() const { return received_; }
    std::size_t collectives() const { return collectives_; }
    void reset_counters() { received_ = 0, collectives_ = 0; }

private:
    index_t ranks_;
    context ctx_;
    std::size_t received_ = 0, collectives_ = 0;
};

}  // namespace transmamba
