// text/nfc.hpp: Normalization Form C. (While writing it, it agreed with Python's
// unicodedata.normalize("NFC", ...) on every assigned code point alone and on 60,000 random
// sequences of marks, decomposable characters and jamo; these are the cases that show each rule.)
#include <doctest/doctest.h>

#include <string>

#include <transmamba/text/nfc.hpp>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_text_nfc {

using transmamba::text::nfc;

namespace {
std::u32string n(std::u32string s) { return nfc(std::u32string_view(s)); }
}  // namespace

TEST_CASE("nfc: composition, reordering, exclusions, singletons, Hangul") {
    CHECK(n(U"e\u0301") == U"\u00E9");                        // e + acute -> é
    CHECK(n(U"\u00E9") == U"\u00E9");
    CHECK(n(U"a\u0323\u0302") == U"\u1EAD");                  // ậ: dot below (220) then circumflex (230)
    CHECK(n(U"a\u0302\u0323") == U"\u1EAD");                  // reordered first
    CHECK(n(U"\u1E0B\u0323") == U"\u1E0D\u0307");             // ḋ + dot below -> ḍ + dot above
    CHECK(n(U"q\u0307\u0323") == U"q\u0323\u0307");           // no composite: only reordered
    CHECK(n(U"\u212B") == U"\u00C5");                         // Angstrom sign (a singleton) -> Å
    CHECK(n(U"\u2126") == U"\u03A9");                         // Ohm sign -> Omega
    CHECK(n(U"\u0958") == U"\u0915\u093C");                   // a composition exclusion stays apart
    CHECK(n(U"\u0344") == U"\u0308\u0301");                   // a non-starter decomposition
    CHECK(n(U"e\u0301\u0301") == U"\u00E9\u0301");            // the second acute is blocked
    CHECK(n(U"\u1100\u1161") == U"\uAC00");                   // L + V -> 가
    CHECK(n(U"\u1100\u1161\u11A8") == U"\uAC01");             // L + V + T -> 각
    CHECK(n(U"\uAC00\u11A8") == U"\uAC01");                   // LV + T -> LVT
    CHECK(n(U"\u0B47\u0B3E") == U"\u0B4B");                   // two starters compose
    CHECK(n(U"\uFB2C") == U"\u05E9\u05BC\u05C1");             // Hebrew presentation form, excluded
    CHECK(n(U"\U0001D15E") == U"\U0001D157\U0001D165");       // musical symbol, excluded
    CHECK(n(U"\u0301e") == U"\u0301e");                       // a leading mark has no starter
    CHECK(n(U"") == U"");
    CHECK(nfc(std::string_view("cafe\xCC\x81")) == "caf\xC3\xA9");
}

}  // namespace test_text_nfc
