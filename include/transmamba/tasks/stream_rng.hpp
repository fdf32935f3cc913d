#pragma once
// The random numbers of a task, counter-based: batch k of the stream with seed s is drawn from
// std::mt19937_64 seeded with mix(s, k), so a batch is a function of (seed, k) alone. The state of
// a data stream is then two integers (io/training_checkpoint.hpp saves them), a resumed run draws
// exactly the batches the uninterrupted one would, and no batch depends on how many were drawn
// before it. Integers below n come from our own rejection sampling over the engine's output (the
// engine's sequence is fixed by the C++ standard; std::uniform_int_distribution's mapping is not),
// so a seed gives the same data with every standard library.
#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "transmamba/core/error.hpp"

namespace transmamba {

// SplitMix64's finaliser: a bijection of 64-bit words that spreads nearby inputs.
constexpr std::uint64_t mix64(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

class stream_rng {
public:
    stream_rng(std::uint64_t seed, std::uint64_t index) : engine_(mix64(mix64(seed) ^ index)) {}

    std::uint64_t next() { return engine_(); }

    // Uniform in [0, n), n >= 1: rejection of the top partial range, so no value is favoured.
    std::uint64_t below(std::uint64_t n) {
        require(n >= 1, "stream_rng::below: empty range");
        const std::uint64_t limit = ~std::uint64_t(0) - (~std::uint64_t(0) % n + 1) % n;  // largest multiple of n, minus 1
        std::uint64_t x;
        do x = engine_();
        while (x > limit);
        return x % n;
    }

    // `count` distinct values of [0, n), in random order (a partial Fisher-Yates shuffle).
    std::vector<std::int64_t> distinct(std::int64_t n, std::int64_t count) {
        require(count >= 0 && count <= n, "stream_rng::distinct: ", count, " distinct values of [0, ", n, ") do not exist");
        std::vector<std::int64_t> pool(static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < n; ++i) pool[std::size_t(i)] = i;
        for (std::int64_t i = 0; i < count; ++i)
            std::swap(pool[std::size_t(i)], pool[std::size_t(i + std::int64_t(below(std::uint64_t(n - i))))]);
        pool.resize(static_cast<std::size_t>(count));
        return pool;
    }

private:
    std::mt19937_64 engine_;
};

}  // namespace transmamba
