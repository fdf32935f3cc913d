// The warm-up + cosine schedule (train/lr_schedule.hpp) at its defining points and against its
// formula in between.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>

#include "transmamba/train/lr_schedule.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_train_lr_schedule {

using namespace transmamba;

TEST_CASE("cosine schedule: warm-up, peak, cosine, floor") {
    const cosine_schedule s{2e-3, 2e-4, 10, 110};
    s.validate();
    CHECK(s.at(0) == doctest::Approx(2e-4).epsilon(1e-12));   // peak * 1/10
    CHECK(s.at(4) == doctest::Approx(1e-3).epsilon(1e-12));   // peak * 5/10
    CHECK(s.at(9) == 2e-3);                                    // the warm-up ends at the peak
    CHECK(s.at(109) == 2e-4);                                  // the last update runs at the floor
    CHECK(s.at(500) == 2e-4);                                  // and past the end stays there
    // Half way through the decay: the mean of peak and floor.
    CHECK(s.at(59) == doctest::Approx(1.1e-3).epsilon(1e-12));
    for (index_t k = 10; k < 110; ++k) {
        const double q = double(k + 1 - 10) / 100.0;
        CHECK(s.at(k) == doctest::Approx(2e-4 + 1.8e-3 * 0.5 * (1 + std::cos(std::numbers::pi * q))).epsilon(1e-12));
        if (k > 10) CHECK(s.at(k) < s.at(k - 1));  // strictly decreasing after the warm-up
    }
}

TEST_CASE("cosine schedule: no warm-up, constant, all warm-up; bad values refused") {
    const cosine_schedule no_warmup{1e-3, 0.0, 0, 4};
    CHECK(no_warmup.at(0) == doctest::Approx(1e-3 * 0.5 * (1 + std::cos(std::numbers::pi * 0.25))));
    CHECK(no_warmup.at(3) == 0.0);
    const cosine_schedule constant{5e-4, 5e-4, 0, 10};
    for (index_t k = 0; k < 12; ++k) CHECK(constant.at(k) == doctest::Approx(5e-4).epsilon(1e-15));
    const cosine_schedule all_warmup{1e-3, 1e-4, 4, 4};
    CHECK(all_warmup.at(3) == 1e-3);
    CHECK_THROWS_WITH_AS((cosine_schedule{1e-3, 2e-3, 0, 10}.validate()), doctest::Contains("final learning rate"), error);
    CHECK_THROWS_WITH_AS((cosine_schedule{1e-3, 0, 11, 10}.validate()), doctest::Contains("warmup_steps"), error);
    CHECK_THROWS_WITH_AS((cosine_schedule{-1, 0, 0, 10}.validate()), doctest::Contains("peak"), error);
}

}  // namespace test_train_lr_schedule
