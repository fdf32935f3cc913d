#include <transmamba/transmamba.hpp>

#include <doctest/doctest.h>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_core_smoke {

TEST_CASE("transmamba: the umbrella header compiles and reports version 0.x") {
    CHECK(transmamba::version_major == 0);
}

}  // namespace test_core_smoke
