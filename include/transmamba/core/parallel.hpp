#pragma once
// The CPU backend's only threading primitive. OpenMP when the build has it (the CMake target adds
// it), a plain loop otherwise; this header is the one place that knows which.
//
// Why a call states its work: entering an OpenMP region wakes the pool's threads and ends at a
// barrier that waits for the slowest of them. On an idle machine that costs a few microseconds;
// on a loaded one (another OpenMP program, or just more busy threads than cores) a thread of the
// team may not be running, and the barrier waits for the scheduler to give it a core: milliseconds
// per region. A decoding step of a small model is a dozen such regions around a few microseconds of
// work each, so it fell from thousands to tens of tokens/s beside a competing load. Work below
// parallel_min_work() therefore runs on the calling thread and never meets a barrier; docs/design.md
// ("Threads") says what the wait policy adds, which a library cannot set (libgomp reads
// OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it is loaded).
#include <algorithm>
#include <atomic>
#include <cstddef>

#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace transmamba {

inline int max_threads() {
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Caps the threads the CPU backend uses from here on (n >= 1); a program's --threads sets it.
inline void set_max_threads(int n) {
    require(n >= 1, "set_max_threads: the thread count must be at least 1, got ", n);
#if defined(_OPENMP)
    omp_set_num_threads(n);
#endif
}

inline int thread_index() {
#if defined(_OPENMP)
    return omp_get_thread_num();
#else
    return 0;
#endif
}

namespace parallel_detail {
// The decode scan's measurement on the 2-core development machine: its state update gains from a
// second thread from 2^15 state elements on (4 heads of 64 x 128); below that the fork and the
// barrier cost more than they save even on an idle machine. docs/PERF.md ("CPU: threads
// under contention") shows what the threshold does beside a competing load.
inline constexpr index_t default_min_work = index_t(1) << 15;
inline std::atomic<index_t>& min_work() {
    static std::atomic<index_t> value{default_min_work};
    return value;
}
}  // namespace parallel_detail

// The work (in the unit parallel_for's work_per_item uses) below which a loop runs on the calling
// thread.
inline index_t parallel_min_work() { return parallel_detail::min_work().load(std::memory_order_relaxed); }
// Sets it for the whole program (>= 0). 0 makes every loop fork, as the library did before it had
// a threshold: benchmarks use it to show the difference.
inline void set_parallel_min_work(index_t work) {
    require(work >= 0, "set_parallel_min_work: the work threshold must be non-negative, got ", work);
    parallel_detail::min_work().store(work, std::memory_order_relaxed);
}

// Whether a loop of n items of work_per_item each is worth a parallel region.
inline bool worth_forking(index_t n, index_t work_per_item) {
    const index_t threshold = parallel_min_work();
    if (threshold == 0) return true;
    if (n <= 1 || max_threads() <= 1) return false;
    // n * work_per_item >= threshold, without the product's overflow.
    return work_per_item >= threshold || n >= (threshold + work_per_item - 1) / std::max<index_t>(work_per_item, 1);
}

// Runs body(i, thread) for i in [0, n), dynamically scheduled: the tasks (heads, query tiles)
// differ in cost, e.g. causal attention tiles grow with their position. `work_per_item` is about
// how many elements one item reads or writes, a transcendental function (exp, log, sin) counting
// ten: the loop forks only when n * work_per_item reaches parallel_min_work().
template <class Body>
void parallel_for(index_t n, index_t work_per_item, Body&& body) {
#if defined(_OPENMP)
    if (worth_forking(n, work_per_item)) {
#pragma omp parallel for schedule(dynamic, 1)
        for (index_t i = 0; i < n; ++i) body(i, omp_get_thread_num());
        return;
    }
#else
    (void)work_per_item;
#endif
    for (index_t i = 0; i < n; ++i) body(i, 0);
}

}  // namespace transmamba
