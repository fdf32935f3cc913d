// core/checked_size.hpp and its users: a size whose product overflows is an error naming it, never a
// wrapped (small) allocation that the next write overruns.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include <cstddef>
#include <limits>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_core_checked_size {

using namespace transmamba;

namespace {
constexpr index_t most = std::numeric_limits<index_t>::max();
// 2^61 + 1 doubles are 2^64 + 8 bytes: 8 bytes once wrapped.
constexpr std::size_t wraps_to_8_bytes = (std::size_t(1) << 61) + 1;
}  // namespace

TEST_CASE("checked_mul and checked_add: exact up to the index type's limit, an error naming the size past it") {
    CHECK(checked_mul(index_t(1) << 31, index_t(1) << 31, "x") == index_t(1) << 62);
    CHECK(checked_mul(0, most, "x") == 0);
    CHECK(checked_mul(most, 1, "x") == most);
    CHECK_THROWS_WITH_AS(checked_mul(index_t(1) << 62, 4, "embedding elements"),
                         doctest::Contains("embedding elements = 4611686018427387904 * 4 overflows"), error);
    CHECK_THROWS_WITH_AS(checked_mul(-1, 4, "rows"), doctest::Contains("negative"), error);
    CHECK(checked_add(most - 1, 1, "x") == most);
    CHECK_THROWS_WITH_AS(checked_add(most, 1, "parameter count"), doctest::Contains("parameter count"), error);
    CHECK(checked_bytes<double>(4, "x") == 32);
    CHECK_THROWS_WITH_AS(checked_bytes<double>(wraps_to_8_bytes, "buffer"), doctest::Contains("overflow"), error);
}

TEST_CASE("host_buffer::resize: a size whose bytes overflow throws and leaves an empty buffer") {
    host_buffer<double> b(16);
    CHECK_THROWS_WITH_AS(b.resize(wraps_to_8_bytes), doctest::Contains("host_buffer::resize"), error);
    CHECK(b.size() <= 16);  // never the wrapped size over an 8-byte block
    CHECK_THROWS_AS(host_buffer<float>(std::numeric_limits<std::size_t>::max()), error);
    b.resize(4);
    b.fill(1.0);
    CHECK(b.data()[3] == 1.0);
}

TEST_CASE("workspace_arena: a piece or a total that overflows is an error, in measuring mode too") {
    workspace_arena measure;
    CHECK_THROWS_WITH_AS(measure.take<double>(wraps_to_8_bytes), doctest::Contains("workspace piece"), error);
    workspace_arena total;
    total.take<std::byte>(static_cast<std::size_t>(most) - 1000);
    CHECK_THROWS_WITH_AS(total.take<std::byte>(2000), doctest::Contains("workspace size"), error);
}

}  // namespace test_core_checked_size
