#pragma once
// One exception type for every bad input the library detects (STYLE.md practice 5). Messages name
// the tensor or field, what was expected and what was given, so a user can fix the call from the
// message alone.
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace transmamba {

class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Builds the message from any streamable parts; only evaluated on the failure path.
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
    std::ostringstream os;
    os << "transmamba: ";
    (os << ... << parts);
    throw error(os.str());
}

template <class... Parts>
void require(bool ok, const Parts&... parts) {
    if (!ok) fail(parts...);
}

}  // namespace transmamba
