#pragma once
// The CPU backend's only threading primitive. OpenMP when the build has it (the CMake target adds
// it), a plain loop otherwise; this header is the one place that knows which.
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

// Runs body(i, thread) for i in [0, n), dynamically scheduled: the tasks (heads, query tiles)
// differ in cost, e.g. causal attention tiles grow with their position.
template <class Body>
void parallel_for(index_t n, Body&& body) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1)
    for (index_t i = 0; i < n; ++i) body(i, omp_get_thread_num());
#else
    for (index_t i = 0; i < n; ++i) body(i, 0);
#endif
}

}  // namespace transmamba
