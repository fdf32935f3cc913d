// policy/transpoint.hpp: every TransPoint policy gives the P it documents (SPEC.md section 6), and
// resolve_transpoint reads P > L as L and rejects negative P naming the layer.
#include <doctest/doctest.h>

#include <transmamba/policy/transpoint.hpp>

#include <string>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_policy_transpoint {

using namespace transmamba;

static_assert(transpoint_policy<fixed_transpoint>);
static_assert(transpoint_policy<all_attention>);
static_assert(transpoint_policy<all_ssm>);
static_assert(transpoint_policy<fraction_of_length>);
static_assert(transpoint_policy<per_layer_transpoints>);
static_assert(transpoint_policy<cyclic_transpoints>);
static_assert(!transpoint_policy<int>);
// compile-time use of the constexpr policies
static_assert(fixed_transpoint{37}(5, 100) == 37);
static_assert(all_attention{}(3, 4096) == 4096);
static_assert(all_ssm{}(3, 4096) == 0);

TEST_CASE("fixed_transpoint, all_attention, all_ssm") {
    for (index_t layer : {0, 1, 7, 63})
        for (index_t L : {1, 100, 8192}) {
            CAPTURE(layer);
            CAPTURE(L);
            CHECK(fixed_transpoint{128}(layer, L) == 128);
            CHECK(fixed_transpoint{}(layer, L) == 0);
            CHECK(all_attention{}(layer, L) == L);
            CHECK(all_ssm{}(layer, L) == 0);
        }
}

TEST_CASE("fraction_of_length: floor(L * num / den)") {
    CHECK(fraction_of_length{1, 4}(0, 8192) == 2048);
    CHECK(fraction_of_length{3, 4}(5, 8192) == 6144);
    CHECK(fraction_of_length{}(0, 8192) == 4096);  // default one half
    CHECK(fraction_of_length{}(0, 7) == 3);       // floors
    CHECK(fraction_of_length{1, 3}(0, 100) == 33);
    CHECK(fraction_of_length{2, 3}(0, 100) == 66);
    CHECK(fraction_of_length{1, 4}(0, 3) == 0);
    CHECK(fraction_of_length{0, 5}(0, 1000) == 0);
    CHECK(fraction_of_length{5, 4}(0, 100) == 125);  // > L: read as L by resolve_transpoint
    CHECK(resolve_transpoint(fraction_of_length{5, 4}, 0, 100) == 100);
    // the same in every layer
    CHECK(fraction_of_length{1, 8}(0, 8192) == fraction_of_length{1, 8}(31, 8192));
    CHECK_THROWS_WITH_AS(fraction_of_length({1, 0})(0, 10), doctest::Contains("fraction_of_length 1/0"), error);
    CHECK_THROWS_WITH_AS(fraction_of_length({-1, 4})(0, 10), doctest::Contains("fraction_of_length -1/4"), error);
}

TEST_CASE("per_layer_transpoints: layer i takes values[i], past the end is an error") {
    const per_layer_transpoints p{0, 64, 4096, 7};
    CHECK(p(0, 8192) == 0);
    CHECK(p(1, 8192) == 64);
    CHECK(p(2, 8192) == 4096);
    CHECK(p(3, 10) == 7);
    CHECK_THROWS_WITH_AS(p(4, 8192), doctest::Contains("per_layer_transpoints has 4 entries, layer 4"), error);
    CHECK_THROWS_WITH_AS(p(-1, 8192), doctest::Contains("layer -1"), error);
    const per_layer_transpoints from_vector(std::vector<index_t>{9, 8});
    CHECK(from_vector(1, 100) == 8);
    CHECK_THROWS_AS(per_layer_transpoints{}(0, 100), error);
}

TEST_CASE("cyclic_transpoints: layer i takes table[i mod len]") {
    const cyclic_transpoints c{10, 20, 30};
    const std::vector<index_t> want = {10, 20, 30, 10, 20, 30, 10};
    for (index_t i = 0; i < index_t(want.size()); ++i) {
        CAPTURE(i);
        CHECK(c(i, 8192) == want[std::size_t(i)]);
    }
    CHECK(c(3000, 8192) == 10);
    CHECK(c(3001, 8192) == 20);
    CHECK(cyclic_transpoints{5}(17, 100) == 5);
    CHECK_THROWS_WITH_AS(cyclic_transpoints{}(0, 10), doctest::Contains("cyclic_transpoints: the table is empty"), error);
    CHECK_THROWS_WITH_AS(c(-2, 10), doctest::Contains("negative layer index -2"), error);
}

TEST_CASE("paper_schedule V1..V9: the tables of SPEC.md section 6") {
    const std::vector<std::pair<std::string, std::vector<index_t>>> tables = {
        {"V1", {2048}},
        {"V2", {4096}},
        {"V3", {6144}},
        {"V4", {3072, 4096, 5120}},
        {"V5", {2048, 3072, 4096}},
        {"V6", {512, 1024, 2048}},
        {"V7", {2048, 4096, 6144}},
        {"V8", {0, 1024, 2048, 6144, 8192}},
        {"V9", {0, 128, 256, 512, 1024, 2048, 4096, 8192}},
    };
    for (const auto& [name, table] : tables) {
        CAPTURE(name);
        const cyclic_transpoints s = paper_schedule(name);
        CHECK(s.table == table);
        // and it cycles over the layers, e.g. 24 layers of the 400M model
        for (index_t layer = 0; layer < 24; ++layer)
            CHECK(resolve_transpoint(s, layer, 8192) == table[std::size_t(layer) % table.size()]);
    }
    // V9 at inference length 2048: layers whose P exceeds L run all-attention
    const auto v9 = paper_schedule("V9");
    CHECK(resolve_transpoint(v9, 6, 2048) == 2048);
    CHECK(resolve_transpoint(v9, 7, 2048) == 2048);
    CHECK(resolve_transpoint(v9, 5, 2048) == 2048);
    CHECK(resolve_transpoint(v9, 4, 2048) == 1024);
    CHECK(resolve_transpoint(v9, 8, 2048) == 0);
}

TEST_CASE("paper_schedule: an unknown name is an error naming it") {
    for (const char* bad : {"V0", "V10", "v9", "", "V9 "}) {
        CAPTURE(bad);
        const std::string want = "unknown paper schedule '" + std::string(bad) + "'";
        CHECK_THROWS_WITH_AS(paper_schedule(bad), doctest::Contains(want.c_str()), error);
    }
}

TEST_CASE("resolve_transpoint: P > L means L, negative P names the layer") {
    CHECK(resolve_transpoint(fixed_transpoint{100}, 0, 50) == 50);
    CHECK(resolve_transpoint(fixed_transpoint{50}, 0, 50) == 50);
    CHECK(resolve_transpoint(fixed_transpoint{49}, 0, 50) == 49);
    CHECK(resolve_transpoint(fixed_transpoint{0}, 0, 50) == 0);
    CHECK(resolve_transpoint(all_attention{}, 3, 1) == 1);
    CHECK(resolve_transpoint(cyclic_transpoints{8192}, 0, 1000) == 1000);

    CHECK_THROWS_WITH_AS(resolve_transpoint(fixed_transpoint{-1}, 7, 50), doctest::Contains("for layer 7"), error);
    CHECK_THROWS_WITH_AS(resolve_transpoint(fixed_transpoint{-1}, 7, 50), doctest::Contains("P = -1"), error);
    CHECK_THROWS_WITH_AS(resolve_transpoint(per_layer_transpoints{4, -30}, 1, 50),
                         doctest::Contains("P = -30 for layer 1"), error);
    // an error inside the policy itself propagates
    CHECK_THROWS_WITH_AS(resolve_transpoint(per_layer_transpoints{4}, 1, 50), doctest::Contains("layer 1"), error);
    // a user-defined policy: anything callable as (layer, L) -> integer
    auto quarter_then_half = [](index_t layer, index_t L) { return layer == 0 ? L / 4 : L / 2; };
    static_assert(transpoint_policy<decltype(quarter_then_half)>);
    CHECK(resolve_transpoint(quarter_then_half, 0, 100) == 25);
    CHECK(resolve_transpoint(quarter_then_half, 1, 100) == 50);
}

}  // namespace test_policy_transpoint
