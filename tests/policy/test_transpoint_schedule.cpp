// policy/transpoint_schedule.hpp: the run-time schedule gives the P of each kind, validates against
// the number of layers, and runs a stack like the compile-time policies it mirrors.
#include <doctest/doctest.h>

#include <transmamba/policy/transpoint_schedule.hpp>

#include <functional>
#include <string>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_policy_transpoint_schedule {

using namespace transmamba;

namespace {
std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const error& e) {
        return e.what();
    }
    return "(no error)";
}
}  // namespace

TEST_CASE("transpoint_schedule: fixed, per_layer and cyclic give the documented P") {
    const auto fixed = transpoint_schedule::fixed(64);
    const auto per_layer = transpoint_schedule::per_layer({0, 5, 9});
    const auto cyclic = transpoint_schedule::cyclic({1, 2});
    for (index_t layer = 0; layer < 3; ++layer) {
        CAPTURE(layer);
        CHECK(fixed(layer, 100) == 64);
        CHECK(per_layer(layer, 100) == std::vector<index_t>{0, 5, 9}[std::size_t(layer)]);
        CHECK(cyclic(layer, 100) == (layer % 2 == 0 ? 1 : 2));
    }
    CHECK(cyclic(7, 10) == 2);
    CHECK(transpoint_schedule{}(3, 10) == 0);  // default: fixed 0, a Mamba2 model
    // Same answers as the compile-time policies.
    const auto v9 = paper_schedule("V9");
    const auto from_v9 = transpoint_schedule::from(v9);
    for (index_t layer = 0; layer < 20; ++layer) CHECK(from_v9(layer, 8192) == v9(layer, 8192));
    CHECK(transpoint_schedule::from(fixed_transpoint{3}) == transpoint_schedule::fixed(3));
    CHECK(transpoint_schedule::from(per_layer_transpoints{4, 5}) == transpoint_schedule::per_layer({4, 5}));
    // P > L reads as L through resolve_transpoint, as for every policy.
    CHECK(resolve_transpoint(fixed, 0, 10) == 10);
    CHECK(schedule_kind_name(schedule_kind::per_layer) == "per_layer");
    CHECK(parse_schedule_kind("cyclic") == schedule_kind::cyclic);
    CHECK(!parse_schedule_kind("Cyclic"));
}

TEST_CASE("transpoint_schedule: validation and errors") {
    CHECK_NOTHROW(transpoint_schedule::per_layer({1, 2, 3}).validate(3));
    CHECK(error_of([] { transpoint_schedule::per_layer({1, 2}).validate(3); }).find("needs 3 entries (one per TransMamba layer), got 2") !=
          std::string::npos);
    CHECK(error_of([] { transpoint_schedule::cyclic({}).validate(3); }).find("at least one entry") != std::string::npos);
    CHECK(error_of([] { transpoint_schedule{schedule_kind::fixed, {1, 2}}.validate(3); }).find("exactly one entry") != std::string::npos);
    CHECK(error_of([] { transpoint_schedule::cyclic({4, -1}).validate(3); }).find("entry 1 is -1") != std::string::npos);
    CHECK(error_of([] { (void)transpoint_schedule::per_layer({1, 2})(2, 10); }).find("has 2 entries, layer 2 was asked for") !=
          std::string::npos);
    CHECK(error_of([] { (void)transpoint_schedule::cyclic({})(0, 10); }).find("empty") != std::string::npos);
}

}  // namespace test_policy_transpoint_schedule
