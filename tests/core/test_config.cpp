// core/config.hpp: the derived sizes, and validate() errors that name the field at fault.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_core_config {

using transmamba::error;
using transmamba::mixer_config;

namespace {

// The message validate() throws for a config changed by `edit` from a valid one.
std::string message_of(const std::function<void(mixer_config&)>& edit) {
    mixer_config c;
    edit(c);
    try {
        c.validate();
    } catch (const error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("mixer_config: derived sizes follow SPEC.md section 2") {
    mixer_config c;
    c.d_model = 48;
    c.expand = 2;
    c.headdim = 16;
    c.d_state = 32;
    c.ngroups = 3;
    CHECK_NOTHROW(c.validate());
    CHECK(c.d_inner() == 96);
    CHECK(c.nheads() == 6);
    CHECK(c.heads_per_group() == 2);
    CHECK(c.conv_dim() == 96 + 2 * 3 * 32);
    CHECK(c.d_in_proj() == 2 * 96 + 2 * 3 * 32 + 6);
    // the defaults are valid
    CHECK_NOTHROW(mixer_config{}.validate());
}

TEST_CASE("mixer_config::validate: non-positive sizes name the field") {
    for (long long bad : {0LL, -1LL, -64LL}) {
        CAPTURE(bad);
        const auto v = static_cast<transmamba::index_t>(bad);
        CHECK(message_of([&](mixer_config& c) { c.d_model = v; }).find("d_model must be positive") != std::string::npos);
        CHECK(message_of([&](mixer_config& c) { c.expand = v; }).find("expand must be positive") != std::string::npos);
        CHECK(message_of([&](mixer_config& c) { c.headdim = v; }).find("headdim must be positive") != std::string::npos);
        CHECK(message_of([&](mixer_config& c) { c.d_state = v; }).find("d_state must be positive") != std::string::npos);
        CHECK(message_of([&](mixer_config& c) { c.d_conv = v; }).find("d_conv must be positive") != std::string::npos);
        CHECK(message_of([&](mixer_config& c) { c.chunk_size = v; }).find("chunk_size must be positive") !=
              std::string::npos);
        CHECK(message_of([&](mixer_config& c) { c.ngroups = v; }).find("ngroups must be positive") != std::string::npos);
    }
    // the offending value is in the message too
    CHECK(message_of([](mixer_config& c) { c.d_state = -3; }).find("got -3") != std::string::npos);
}

TEST_CASE("mixer_config::validate: d_inner not a multiple of headdim names headdim") {
    const auto msg = message_of([](mixer_config& c) {
        c.d_model = 40;  // d_inner 80
        c.headdim = 32;
    });
    CHECK(msg.find("headdim = 32") != std::string::npos);
    CHECK(msg.find("d_inner") != std::string::npos);
    CHECK(msg.find("80") != std::string::npos);
    CHECK_THROWS_AS([] {
        mixer_config c;
        c.d_model = 40;
        c.headdim = 32;
        c.validate();
    }(), error);
}

TEST_CASE("mixer_config::validate: ngroups must divide nheads") {
    // d_model 256, expand 2, headdim 64: 8 heads
    for (transmamba::index_t g : {3, 5, 16}) {
        CAPTURE(g);
        const auto msg = message_of([&](mixer_config& c) { c.ngroups = g; });
        CHECK(msg.find("ngroups = " + std::to_string(g)) != std::string::npos);
        CHECK(msg.find("nheads = 8") != std::string::npos);
    }
    for (transmamba::index_t g : {1, 2, 4, 8}) {
        CAPTURE(g);
        CHECK(message_of([&](mixer_config& c) { c.ngroups = g; }) == "(no error)");
    }
}

TEST_CASE("mixer_config::validate: bad time-step limits name dt_min and dt_max") {
    const double inf = std::numeric_limits<double>::infinity();
    auto bad_limits = [&](double lo, double hi) {
        return message_of([&](mixer_config& c) {
            c.dt_min = lo;
            c.dt_max = hi;
        });
    };
    for (auto [lo, hi] : {std::pair{-0.1, 1.0}, std::pair{0.5, 0.1}, std::pair{std::nan(""), 1.0},
                          std::pair{0.0, std::nan("")}, std::pair{inf, inf}}) {
        CAPTURE(lo);
        CAPTURE(hi);
        const auto msg = bad_limits(lo, hi);
        CHECK(msg.find("dt_min") != std::string::npos);
        CHECK(msg.find("dt_max") != std::string::npos);
        CHECK(msg.find("time-step limit") != std::string::npos);
    }
    // valid limits, including a point interval and Mamba2's default (0, inf)
    CHECK(bad_limits(0.0, inf) == "(no error)");
    CHECK(bad_limits(1e-3, 0.1) == "(no error)");
    CHECK(bad_limits(0.05, 0.05) == "(no error)");
}

TEST_CASE("mixer_config::validate: norm_eps out of (0, 1)") {
    for (double eps : {0.0, -1e-5, 1.0, std::nan("")}) {
        CAPTURE(eps);
        CHECK(message_of([&](mixer_config& c) { c.norm_eps = eps; }).find("norm_eps") != std::string::npos);
    }
}

TEST_CASE("model_config::validate: checks the mixer and its own fields") {
    transmamba::model_config m;
    CHECK_NOTHROW(m.validate());
    m.num_layers = 0;
    CHECK_THROWS_WITH_AS(m.validate(), doctest::Contains("num_layers"), error);
    m.num_layers = 2;
    m.d_ff = -1;
    CHECK_THROWS_WITH_AS(m.validate(), doctest::Contains("d_ff"), error);
    m.d_ff = 0;
    m.mixer.ngroups = 3;
    CHECK_THROWS_WITH_AS(m.validate(), doctest::Contains("ngroups = 3"), error);
}

// ---- limits and overflowing products (issue 15) -------------------------------------------------

namespace {
using transmamba::index_t;

// A mixer whose sizes are all within the limits, but whose in-projection has
// d_in_proj * d_model = (3 * 2^k + 2^(2k+1)) * 2^k elements.
mixer_config wide_mixer(int k) {
    mixer_config c;
    c.d_model = index_t(1) << k;
    c.expand = 1;
    c.headdim = 1;  // nheads = 2^k
    c.ngroups = index_t(1) << k;
    c.d_state = index_t(1) << k;
    c.chunk_size = 16;
    return c;
}
}  // namespace

TEST_CASE("mixer_config::validate: a size above the library's limits names the field and the limit") {
    using transmamba::size_limits;
    CHECK(message_of([](mixer_config& c) { c.d_model = size_limits::dimension * 2; }).find(
              "d_model = 33554432 exceeds the limit 16777216") != std::string::npos);
    CHECK(message_of([](mixer_config& c) { c.d_state = size_limits::dimension + 1; }).find("d_state") != std::string::npos);
    CHECK(message_of([](mixer_config& c) { c.expand = size_limits::expand + 1; }).find("expand") != std::string::npos);
    CHECK(message_of([](mixer_config& c) { c.d_conv = size_limits::conv_width + 1; }).find("d_conv") != std::string::npos);
    CHECK(message_of([](mixer_config& c) { c.chunk_size = size_limits::dimension + 1; }).find("chunk_size") !=
          std::string::npos);
    CHECK(message_of([](mixer_config& c) { c.ngroups = size_limits::dimension + 1; }).find("ngroups") != std::string::npos);
    // at the limits exactly, the fields themselves are accepted
    CHECK(message_of([](mixer_config& c) { c.d_conv = size_limits::conv_width; }) == "(no error)");
}

TEST_CASE("mixer_config::validate: an in-projection whose element count overflows is an error naming it") {
    CHECK_NOTHROW(wide_mixer(20).validate());  // 2^61 + 3 * 2^40 elements: fits
    const mixer_config c = wide_mixer(24);     // 2^73: wraps
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("in_proj.weight elements d_in_proj * d_model"), error);
    CHECK_THROWS_AS(c.parameter_count(), error);
    CHECK(wide_mixer(20).parameter_count() > (index_t(1) << 61));
}

TEST_CASE("model_config::validate: num_layers and d_ff above the limits, and parameters times layers overflowing") {
    transmamba::model_config m;
    m.num_layers = transmamba::size_limits::layers + 1;
    CHECK_THROWS_WITH_AS(m.validate(), doctest::Contains("num_layers = 65537 exceeds the limit 65536"), error);
    m.num_layers = transmamba::size_limits::layers;
    CHECK_NOTHROW(m.validate());
    m.d_ff = transmamba::size_limits::dimension + 1;
    CHECK_THROWS_WITH_AS(m.validate(), doctest::Contains("d_ff"), error);

    transmamba::model_config wide{wide_mixer(20), 0, 3};  // ~ 3 * 2^61 parameters: fits
    CHECK_NOTHROW(wide.validate());
    wide.num_layers = 4;  // ~ 2^63: wraps
    CHECK_THROWS_WITH_AS(wide.validate(), doctest::Contains("num_layers = 4 layers"), error);
}

}  // namespace test_core_config
