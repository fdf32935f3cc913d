#pragma once
// The message of the transmamba::error a call throws, for tests that check several parts of it.
#include <string>

#include <transmamba/core/error.hpp>

namespace transmamba::testing {

// The message of the transmamba::error that f throws ("" if none).
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const error& e) {
        return e.what();
    }
    return "";
}
inline bool has(const std::string& text, const char* part) { return text.find(part) != std::string::npos; }

}  // namespace transmamba::testing
