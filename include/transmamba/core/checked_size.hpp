#pragma once
// Sizes derived from sizes a user gives (config fields, sequence lengths, buffer lengths), computed
// with an overflow check: a product that wraps sizes a buffer too small (a vocabulary of 2^62 rows
// of 4 makes 0 elements), and the first write into it is a crash instead of an error. Every config's
// validate() and every allocation derives its sizes through these three functions.
#include <cstddef>
#include <limits>

#include "transmamba/core/error.hpp"
#include "transmamba/core/tensor_view.hpp"

namespace transmamba {

// a * b for sizes a, b >= 0; `what` names the product in the error ("in_proj.weight elements").
template <class... What>
index_t checked_mul(index_t a, index_t b, const What&... what) {
    constexpr index_t most = std::numeric_limits<index_t>::max();
    require(a >= 0 && b >= 0, what..., " = ", a, " * ", b, ": a factor is negative");
    if (a != 0 && b > most / a) fail(what..., " = ", a, " * ", b, " overflows the index type (at most ", most, ")");
    return a * b;
}

// a + b for sizes a, b >= 0.
template <class... What>
index_t checked_add(index_t a, index_t b, const What&... what) {
    constexpr index_t most = std::numeric_limits<index_t>::max();
    require(a >= 0 && b >= 0, what..., " = ", a, " + ", b, ": a term is negative");
    if (a > most - b) fail(what..., " = ", a, " + ", b, " overflows the index type (at most ", most, ")");
    return a + b;
}

// Bytes of `count` elements of T: what an allocation of `count` elements asks for. Kept within
// PTRDIFF_MAX as well as SIZE_MAX, since pointers into the block are subtracted as index_t.
template <class T, class... What>
std::size_t checked_bytes(std::size_t count, const What&... what) {
    constexpr auto most = static_cast<std::size_t>(std::numeric_limits<index_t>::max());
    if (count > most / sizeof(T))
        fail(what..., ": ", count, " elements of ", sizeof(T), " bytes overflow the size type (at most ", most, " bytes)");
    return count * sizeof(T);
}

}  // namespace transmamba
