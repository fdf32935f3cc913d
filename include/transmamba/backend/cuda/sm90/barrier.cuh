#pragma once
// Shared-memory mbarriers of the sm90 kernels, through CCCL's cuda::ptx: a barrier counts arrivals
// and (for the bulk tensor copy) bytes; each completed phase flips its parity, which waiters name.
#include <cuda/ptx>

#include <cstdint>

namespace transmamba::kernels::cuda::sm90 {

struct barrier {
    std::uint64_t word;

    // One thread, before any use; fence_initialised() then makes it visible to the copy engine.
    __device__ void init(std::uint32_t arrivals) { ::cuda::ptx::mbarrier_init(&word, arrivals); }
    __device__ static void fence_initialised() {
        ::cuda::ptx::fence_mbarrier_init(::cuda::ptx::sem_release, ::cuda::ptx::scope_cluster);
    }
    __device__ void arrive() { (void)::cuda::ptx::mbarrier_arrive(&word); }
    // The producer's arrival that also announces `bytes` of copies completing on this barrier.
    __device__ void arrive_expect_bytes(std::uint32_t bytes) {
        (void)::cuda::ptx::mbarrier_arrive_expect_tx(::cuda::ptx::sem_release, ::cuda::ptx::scope_cta,
                                                     ::cuda::ptx::space_shared, &word, bytes);
    }
    // Until the phase of parity `parity` has completed.
    __device__ void wait(std::uint32_t parity) {
        while (!::cuda::ptx::mbarrier_try_wait_parity(&word, parity)) {
        }
    }
};

}  // namespace transmamba::kernels::cuda::sm90
