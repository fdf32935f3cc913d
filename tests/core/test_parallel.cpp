// core/parallel.hpp: loops below the work threshold run on the calling thread (no parallel region,
// so no barrier to wait at beside a competing load); above it they fork; threshold 0 forks always.
#include <doctest/doctest.h>

#include <transmamba/core/parallel.hpp>

#include <atomic>
#include <limits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_core_parallel {

using namespace transmamba;

namespace {
bool in_parallel_region() {
#if defined(_OPENMP)
    return omp_in_parallel() != 0;
#else
    return false;
#endif
}

// Restores the program-wide threshold when a case ends.
struct threshold_guard {
    index_t saved = parallel_min_work();
    ~threshold_guard() { set_parallel_min_work(saved); }
};
}  // namespace

TEST_CASE("parallel_for: small work runs every item on the calling thread, outside any parallel region") {
    threshold_guard guard;
    set_parallel_min_work(index_t(1) << 15);
    std::vector<int> seen(8, 0);
    std::atomic<int> forked{0};
    parallel_for(8, 64, [&](index_t i, int thread) {  // 512 in all: far below the threshold
        seen[static_cast<std::size_t>(i)] += 1;
        if (thread != 0 || in_parallel_region()) ++forked;
    });
    CHECK(forked == 0);
    CHECK(seen == std::vector<int>(8, 1));
    CHECK_FALSE(worth_forking(1, index_t(1) << 40));  // one item never forks
    CHECK_FALSE(worth_forking(index_t(1) << 14, 1));
}

TEST_CASE("parallel_for: large work covers every item once, in a parallel region when there are threads") {
    threshold_guard guard;
    set_parallel_min_work(index_t(1) << 15);
    std::vector<std::atomic<int>> seen(64);
    std::atomic<int> inside{0};
    parallel_for(64, index_t(1) << 12, [&](index_t i, int) {
        seen[static_cast<std::size_t>(i)] += 1;
        if (in_parallel_region()) ++inside;
    });
    for (const auto& s : seen) CHECK(s == 1);
    if (max_threads() > 1) {
        CHECK(inside == 64);
        CHECK(worth_forking(2, index_t(1) << 14));
        CHECK(worth_forking(index_t(1) << 15, 1));
        CHECK(worth_forking(4, std::numeric_limits<index_t>::max()));  // no overflow in n * work
    }
}

TEST_CASE("set_parallel_min_work: 0 forks every loop (the behaviour before the threshold); negative is an error") {
    threshold_guard guard;
    set_parallel_min_work(0);
    CHECK(worth_forking(1, 1));
    CHECK(parallel_min_work() == 0);
    CHECK_THROWS_AS(set_parallel_min_work(-1), error);
}

}  // namespace test_core_parallel
