#include <transmamba/transmamba.hpp>

#include <doctest/doctest.h>

TEST_CASE("transmamba: the umbrella header compiles and reports version 0.x") {
    CHECK(transmamba::version_major == 0);
}
