// core/tensor_view.hpp: shapes, strides, offsets, the const conversion and the shape checks' messages.
#include <doctest/doctest.h>

#include <transmamba/core/tensor_view.hpp>

#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_core_tensor_view {

using transmamba::error;
using transmamba::extents;
using transmamba::index_t;
using transmamba::tensor_view;

static_assert(transmamba::row_major_strides<3>({2, 3, 4}) == extents<3>{12, 4, 1});
static_assert(std::is_convertible_v<tensor_view<float, 2>, tensor_view<const float, 2>>);
static_assert(!std::is_convertible_v<tensor_view<const float, 2>, tensor_view<float, 2>>);
static_assert(!std::is_constructible_v<tensor_view<float, 2>, tensor_view<const float, 2>>);
static_assert(!std::is_convertible_v<tensor_view<float, 2>, tensor_view<const double, 2>>);
static_assert(!std::is_convertible_v<tensor_view<float, 2>, tensor_view<const float, 3>>);

TEST_CASE("tensor_view: row-major shape, strides, size and offsets") {
    std::vector<int> data(24);
    std::iota(data.begin(), data.end(), 0);
    const tensor_view<int, 3> v(data.data(), {2, 3, 4});
    CHECK(v.extent(0) == 2);
    CHECK(v.extent(1) == 3);
    CHECK(v.extent(2) == 4);
    CHECK(v.stride(0) == 12);
    CHECK(v.stride(1) == 4);
    CHECK(v.stride(2) == 1);
    CHECK(v.size() == 24);
    CHECK(v.is_contiguous());
    CHECK_FALSE(v.empty());
    CHECK(v.data() == data.data());
    for (index_t i = 0; i < 2; ++i)
        for (index_t j = 0; j < 3; ++j)
            for (index_t k = 0; k < 4; ++k) {
                CHECK(v.offset(i, j, k) == i * 12 + j * 4 + k);
                CHECK(v(i, j, k) == data[std::size_t(i * 12 + j * 4 + k)]);
            }
    v(1, 2, 3) = -5;  // writes through to the caller's memory
    CHECK(data[23] == -5);
    // deduction guide
    tensor_view w(data.data(), extents<2>{6, 4});
    static_assert(std::is_same_v<decltype(w), tensor_view<int, 2>>);
    CHECK(w(5, 3) == -5);
}

TEST_CASE("tensor_view: strided slices (columns of a wider row) and offsets") {
    // A (3, 10) row-major buffer; view columns [4, 7) of every row as a (3, 3) matrix, and the same
    // columns split as (3, 1, 3) heads, as the mixer views x, B, C inside xBC.
    std::vector<double> buf(30);
    std::iota(buf.begin(), buf.end(), 100.0);
    const tensor_view<double, 2> cols(buf.data() + 4, {3, 3}, {10, 1});
    CHECK_FALSE(cols.is_contiguous());
    CHECK(cols.size() == 9);
    CHECK(cols.offset(2, 1) == 21);
    CHECK(cols(2, 1) == 100.0 + 25);
    CHECK(cols(0, 0) == 104.0);
    const tensor_view<double, 3> heads(buf.data() + 1, {3, 3, 2}, {10, 2, 1});
    CHECK(heads(1, 2, 1) == 100.0 + 1 + 10 + 4 + 1);
    // a transposed view
    const tensor_view<double, 2> t(buf.data(), {10, 3}, {1, 10});
    CHECK(t(7, 2) == buf[27]);
    CHECK_FALSE(t.is_contiguous());
    // a contiguous shape given with explicit row-major strides is contiguous
    CHECK(tensor_view<double, 2>(buf.data(), {3, 10}, {10, 1}).is_contiguous());
}

TEST_CASE("tensor_view: the const conversion keeps data, shape and strides") {
    std::vector<float> buf(40, 1.0f);
    const tensor_view<float, 2> v(buf.data() + 2, {4, 5}, {10, 1});
    const tensor_view<const float, 2> c = v;
    CHECK(c.data() == v.data());
    CHECK(c.shape() == v.shape());
    CHECK(c.strides() == v.strides());
    buf[2 + 3 * 10 + 4] = 7.5f;
    CHECK(c(3, 4) == 7.5f);
    static_assert(std::is_same_v<decltype(c(0, 0)), const float&>);
}

TEST_CASE("tensor_view: a default view is empty") {
    const tensor_view<float, 3> v;
    CHECK(v.empty());
    CHECK(v.size() == 0);
    CHECK(v.data() == nullptr);
}

TEST_CASE("expect_shape: passes on the right shape and names the tensor and both shapes otherwise") {
    std::vector<float> buf(2 * 3 * 4);
    const tensor_view<float, 3> v(buf.data(), {2, 3, 4});
    CHECK_NOTHROW(transmamba::expect_shape(v, "u", {2, 3, 4}));

    CHECK_THROWS_WITH_AS(transmamba::expect_shape(v, "u", {2, 5, 4}), doctest::Contains("tensor 'u'"), error);
    try {
        transmamba::expect_shape(v, "hidden_states", {2, 5, 4});
        FAIL("expect_shape accepted a wrong shape");
    } catch (const error& e) {
        const std::string what = e.what();
        CHECK(what.find("hidden_states") != std::string::npos);
        CHECK(what.find("(2, 3, 4)") != std::string::npos);  // the actual shape
        CHECK(what.find("(2, 5, 4)") != std::string::npos);  // the expected one
        CHECK(what.find("expected") != std::string::npos);
    }
    // rank-1 and a single differing extent in the last position
    const tensor_view<const float, 1> s(buf.data(), {7});
    CHECK_THROWS_WITH_AS(transmamba::expect_shape(s, "D", {8}), doctest::Contains("has shape (7), expected (8)"), error);
    // an error is a std::runtime_error too, and its message starts with the library's name
    CHECK_THROWS_AS(transmamba::expect_shape(s, "D", {8}), std::runtime_error);
    CHECK_THROWS_WITH_AS(transmamba::expect_shape(s, "D", {8}), doctest::Contains("transmamba: "), error);
}

TEST_CASE("expect_shape: a null pointer with elements is rejected, an empty tensor is not") {
    const tensor_view<float, 2> null_view(nullptr, {3, 2});
    CHECK_THROWS_WITH_AS(transmamba::expect_shape(null_view, "final_state", {3, 2}),
                         doctest::Contains("tensor 'final_state' has no data"), error);
    const tensor_view<float, 2> empty(nullptr, {0, 2});
    CHECK_NOTHROW(transmamba::expect_shape(empty, "final_state", {0, 2}));
}

TEST_CASE("expect_contiguous: names the tensor, its strides and its shape") {
    std::vector<double> buf(30);
    const tensor_view<double, 2> ok(buf.data(), {3, 10});
    CHECK_NOTHROW(transmamba::expect_contiguous(ok, "out"));
    const tensor_view<double, 2> cols(buf.data() + 4, {3, 3}, {10, 1});
    try {
        transmamba::expect_contiguous(cols, "out");
        FAIL("expect_contiguous accepted a strided view");
    } catch (const error& e) {
        const std::string what = e.what();
        CHECK(what.find("tensor 'out' must be contiguous") != std::string::npos);
        CHECK(what.find("strides (10, 1)") != std::string::npos);
        CHECK(what.find("shape (3, 3)") != std::string::npos);
    }
}

TEST_CASE("shape_string formats every rank") {
    CHECK(transmamba::shape_string<1>({5}) == "(5)");
    CHECK(transmamba::shape_string<4>({2, 16, 4, 64}) == "(2, 16, 4, 64)");
    CHECK(transmamba::shape_string<0>({}) == "()");
}

}  // namespace test_core_tensor_view
