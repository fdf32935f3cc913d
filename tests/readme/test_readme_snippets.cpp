// The README's C++ snippets are compiled into this suite (tests/readme/extract_snippets.cmake writes
// each as a function of readme_snippets.cpp). Here: none was left out, counted independently of
// the extractor, by the fences in README.md.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

// Defined in readme_snippets.cpp.
namespace readme {
int snippet_count();
}

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_readme_readme_snippets {

TEST_CASE("readme: every ```cpp snippet is compiled") {
    std::ifstream in(TRANSMAMBA_README);
    REQUIRE(bool(in));
    int fences = 0;
    for (std::string line; std::getline(in, line);) fences += line.rfind("```cpp", 0) == 0;
    CHECK(fences >= 3);
    CHECK(readme::snippet_count() == fences);
}

}  // namespace test_readme_readme_snippets
