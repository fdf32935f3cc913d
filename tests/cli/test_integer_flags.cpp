// The program's one integer parser (tools/transmamba/integer_flags.hpp), which every integer flag
// goes through: decimal only, no saturation, no empty list items; the message names the flag, the
// value as given and the range.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "transmamba/integer_flags.hpp"

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_cli_integer_flags {

using namespace transmamba;
using cli::parse_integer;
using cli::parse_integer_list;

namespace {
constexpr std::int64_t i64max = std::numeric_limits<std::int64_t>::max();
constexpr std::uint64_t u64max = std::numeric_limits<std::uint64_t>::max();
}  // namespace

TEST_CASE("cli integers: decimal values in range are read exactly") {
    CHECK(parse_integer<std::int64_t>("--max-new-tokens", "0", 0, i64max) == 0);
    CHECK(parse_integer<std::int64_t>("--max-new-tokens", "9223372036854775807", 0, i64max) == i64max);
    CHECK(parse_integer<std::uint64_t>("--seed", "18446744073709551615", 0, u64max) == u64max);
    CHECK(parse_integer<std::int64_t>("--d-model", "007", 1, i64max) == 7);  // decimal, not octal
    CHECK(parse_integer<int>("--threads", "4096", 1, 4096) == 4096);
    CHECK(parse_integer<std::int64_t>("--offset", "-5", -10, 10) == -5);  // a sign where the range has negatives
    CHECK(parse_integer_list<std::int64_t>("--prompt-ids", "1,2,3", 0, i64max) == std::vector<std::int64_t>{1, 2, 3});
    CHECK(parse_integer_list<std::int64_t>("--schedule", "5", 0, i64max) == std::vector<std::int64_t>{5});
}

TEST_CASE("cli integers: malformed values are errors naming the flag, the value and the range") {
    const auto refused = [](const char* flag, const std::string& text, std::int64_t lo, std::int64_t hi, const char* problem) {
        CAPTURE(text);
        CHECK_THROWS_WITH_AS(parse_integer<std::int64_t>(flag, text, lo, hi),
                             doctest::Contains((std::string(flag) + " '" + text + "': " + problem + "; expected a decimal integer in [" +
                                                std::to_string(lo) + ", " + std::to_string(hi) + "]")
                                                   .c_str()),
                             error);
    };
    refused("--max-new-tokens", "0x10", 0, i64max, "not a decimal integer");
    refused("--max-new-tokens", "1e11", 0, i64max, "not a decimal integer");
    refused("--max-new-tokens", "1.5", 0, i64max, "not a decimal integer");
    refused("--max-new-tokens", "+3", 0, i64max, "not a decimal integer");
    refused("--max-new-tokens", " 3", 0, i64max, "not a decimal integer");
    refused("--max-new-tokens", "3 ", 0, i64max, "not a decimal integer");
    refused("--max-new-tokens", "-", 0, i64max, "not a decimal integer");
    refused("--max-new-tokens", "", 0, i64max, "empty value");
    refused("--max-new-tokens", "-1", 0, i64max, "negative value");
    refused("--top-k", "-0", 0, i64max, "negative value");
    refused("--max-new-tokens", "9223372036854775808", 0, i64max, "out of range");  // no saturation
    refused("--max-new-tokens", "99999999999999999999999", 0, i64max, "out of range");
    refused("--threads", "0", 1, 4096, "out of range");
    refused("--threads", "4097", 1, 4096, "out of range");
    refused("--offset", "-9223372036854775809", std::numeric_limits<std::int64_t>::min(), i64max, "out of range");
    CHECK_THROWS_WITH_AS(parse_integer<std::uint64_t>("--seed", "-1", 0, u64max),
                         doctest::Contains("--seed '-1': negative value; expected a decimal integer in [0, 18446744073709551615]"),
                         error);
    CHECK_THROWS_WITH_AS(parse_integer<std::uint64_t>("--seed", "18446744073709551616", 0, u64max),
                         doctest::Contains("out of range"), error);
}

TEST_CASE("cli integers: the value in a message is escaped and kept to one line") {
    CHECK_THROWS_WITH_AS(parse_integer<std::int64_t>("--seed", "1\n2", 0, i64max), doctest::Contains("--seed '1\\x0a2'"), error);
    CHECK_THROWS_WITH_AS(parse_integer<std::int64_t>("--seed", "it's", 0, i64max), doctest::Contains("--seed 'it\\'s'"), error);
    CHECK_THROWS_WITH_AS(parse_integer<std::int64_t>("--seed", std::string(200, '9'), 0, i64max), doctest::Contains("...'"),
                         error);
    try {
        parse_integer<std::int64_t>("--seed", "\xff\t", 0, i64max);
        FAIL("accepted");
    } catch (const error& e) {
        CHECK(std::string(e.what()).find('\t') == std::string::npos);
        CHECK(std::string(e.what()).find("\\xff\\x09") != std::string::npos);
    }
}

TEST_CASE("cli integer lists: no empty list, no empty item, every item checked") {
    const auto refused = [](const std::string& text, const char* needle) {
        CAPTURE(text);
        CHECK_THROWS_WITH_AS(parse_integer_list<std::int64_t>("--prompt-ids", text, 0, i64max),
                             doctest::Contains(("--prompt-ids '" + text + "': " + needle).c_str()), error);
    };
    refused("", "empty list");             // not [0]
    refused("1,,3", "item 2 is empty");    // not two tokens
    refused(",", "item 1 is empty");
    refused("1,", "item 2 is empty");
    refused(",1", "item 1 is empty");
    refused("1,x", "item 2 'x': not a decimal integer");
    refused("1,-2", "item 2 '-2': negative value");
    refused("1,99999999999999999999", "item 2 '99999999999999999999': out of range");
    refused("1, 2", "item 2 ' 2': not a decimal integer");
    CHECK_THROWS_WITH_AS(parse_integer_list<std::int64_t>("--schedule", "1,,2", 0, i64max),
                         doctest::Contains("expected decimal integers in [0, 9223372036854775807] separated by commas"), error);
}

}  // namespace test_cli_integer_flags
