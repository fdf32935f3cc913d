#pragma once
// Caller-owned scratch memory (the CUB two-phase idea): a component lays out its scratch once in a
// function that takes an arena; run in measuring mode the same function gives the size, run over a
// real span it hands out the pieces. The layout therefore lives in exactly one place.
#include <cstddef>
#include <cstdint>

#include "transmamba/core/checked_size.hpp"
#include "transmamba/core/error.hpp"

namespace transmamba {

// Non-owning scratch memory of one backend's memory space.
struct workspace_span {
    std::byte* data = nullptr;
    std::size_t bytes = 0;
};

class workspace_arena {
public:
    static constexpr std::size_t alignment = 256;  // enough for AVX-512 and for CUDA vector loads

    // Measuring mode: take() returns nullptr and only counts.
    workspace_arena() = default;
    // Over a caller's span, whatever its address: the start is aligned first (align_span), which
    // the slack in used() pays for, so every piece taken is aligned in memory.
    explicit workspace_arena(workspace_span span);

    // A piece whose size overflows is an error in both modes, so a measured size never wraps.
    template <class T>
    T* take(std::size_t count) {
        const std::size_t start = (used_ + alignment - 1) / alignment * alignment;
        const std::size_t bytes = checked_bytes<T>(count, "workspace piece of ", count, " elements");
        const std::size_t end = static_cast<std::size_t>(checked_add(static_cast<index_t>(start), static_cast<index_t>(bytes),
                                                                     "workspace size in bytes"));
        used_ = end;
        if (measuring_) return nullptr;
        require(end <= capacity_, "workspace too small: needs at least ", end, " bytes, has ", capacity_);
        return reinterpret_cast<T*>(base_ + start);
    }

    // Slack so a misaligned base still fits.
    std::size_t used() const {
        return static_cast<std::size_t>(checked_add(static_cast<index_t>(used_), index_t(alignment), "workspace size in bytes"));
    }
    bool measuring() const { return measuring_; }

private:
    std::byte* base_ = nullptr;
    std::size_t capacity_ = 0;
    std::size_t used_ = 0;
    bool measuring_ = true;
};

// Aligns the start of a caller's span so that take() offsets are aligned in memory, not only
// relative to the base.
inline workspace_span align_span(workspace_span span) {
    const auto addr = reinterpret_cast<std::uintptr_t>(span.data);
    const std::size_t pad = (workspace_arena::alignment - addr % workspace_arena::alignment) % workspace_arena::alignment;
    if (span.data == nullptr || pad > span.bytes) return {span.data, 0};
    return {span.data + pad, span.bytes - pad};
}

inline workspace_arena::workspace_arena(workspace_span span) : measuring_(false) {
    const workspace_span aligned = align_span(span);
    base_ = aligned.data;
    capacity_ = aligned.bytes;
}

}  // namespace transmamba
