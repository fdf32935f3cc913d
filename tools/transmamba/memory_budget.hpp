#pragma once
// What a command is about to allocate, added up before the first big allocation, so that a size
// no machine can hold is refused at once with a message naming the buffer, its bytes and the flag
// that set it (rather than a bare std::bad_alloc after minutes, or an allocation that takes the
// machine down). Sizes are counted with overflow checks: a product past 2^64 is "more than 2^64
// bytes", never a wrapped small number. The estimate covers the big buffers (weights, logits, KV
// caches, workspaces); an allocation that fails anyway is reported by allocation_phase.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "transmamba/core/error.hpp"

namespace transmamba::cli {

// A byte count that saturates to "unknown, more than 2^64" instead of wrapping.
class byte_count {
public:
    constexpr byte_count() = default;
    constexpr byte_count(std::uint64_t v) : value_(v) {}  // NOLINT: counts are numbers
    static constexpr byte_count too_many() {
        byte_count b;
        b.value_.reset();
        return b;
    }
    // From a signed size (a flag or a config field); negative sizes never reach here (validated).
    static constexpr byte_count of(std::int64_t v) { return v < 0 ? too_many() : byte_count(static_cast<std::uint64_t>(v)); }

    constexpr bool known() const { return value_.has_value(); }
    constexpr std::uint64_t value() const { return *value_; }

    friend constexpr byte_count operator+(byte_count a, byte_count b) {
        if (!a.known() || !b.known() || a.value() > std::numeric_limits<std::uint64_t>::max() - b.value()) return too_many();
        return a.value() + b.value();
    }
    friend constexpr byte_count operator*(byte_count a, byte_count b) {
        if (!a.known() || !b.known()) return too_many();
        if (a.value() != 0 && b.value() > std::numeric_limits<std::uint64_t>::max() / a.value()) return too_many();
        return a.value() * b.value();
    }
    friend constexpr bool operator>(byte_count a, std::uint64_t limit) { return !a.known() || a.value() > limit; }

    // "2097152000 bytes (1.95 GiB)", or "more than 2^64 bytes".
    std::string describe() const {
        if (!known()) return "more than 2^64 bytes";
        const double v = static_cast<double>(value());
        const char* unit = "KiB";
        double scaled = v / 1024.0;
        for (const char* next : {"MiB", "GiB", "TiB", "PiB", "EiB"}) {
            if (scaled < 1024.0) break;
            scaled /= 1024.0;
            unit = next;
        }
        char text[64];
        if (v < 1024.0) std::snprintf(text, sizeof(text), "%llu bytes", static_cast<unsigned long long>(value()));
        else std::snprintf(text, sizeof(text), "%llu bytes (%.2f %s)", static_cast<unsigned long long>(value()), scaled, unit);
        return text;
    }

private:
    std::optional<std::uint64_t> value_ = std::uint64_t(0);
};

// The machine's physical memory: the most any allocation plan can hope for.
inline std::uint64_t physical_memory_bytes() {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return std::numeric_limits<std::uint64_t>::max();  // unknown: do not refuse
    return (byte_count::of(pages) * byte_count::of(page)).known() ? std::uint64_t(pages) * std::uint64_t(page)
                                                                  : std::numeric_limits<std::uint64_t>::max();
}

// Where a buffer lives: host memory, or the backend's (the same memory on the CPU).
enum class memory_space { host, backend };

// The big buffers a command will hold at once, each with what sets its size.
class memory_plan {
public:
    struct item {
        std::string what;   // "the logits (batch x len x vocab float32)"
        byte_count bytes;
        std::string set_by;  // "--input's shape and the model's vocab_size"
        memory_space space;
    };

    explicit memory_plan(std::string command) : command_(std::move(command)) {}

    void add(std::string what, byte_count bytes, std::string set_by, memory_space space = memory_space::backend) {
        items_.push_back({std::move(what), bytes, std::move(set_by), space});
    }
    const std::vector<item>& items() const { return items_; }

    byte_count total(memory_space space) const {
        byte_count sum;
        for (const auto& i : items_)
            if (i.space == space) sum = sum + i.bytes;
        return sum;
    }

    // Throws unless the buffers fit: host and backend items together in `host_limit` when the
    // backend computes in host memory, else each in its own limit (`backend_name` names it).
    void require_fits(std::uint64_t host_limit, std::uint64_t backend_limit, bool backend_is_host,
                      std::string_view backend_name = "GPU memory") const {
        if (backend_is_host) {
            check(total(memory_space::host) + total(memory_space::backend), host_limit, "memory", std::nullopt);
        } else {
            check(total(memory_space::host), host_limit, "memory", memory_space::host);
            check(total(memory_space::backend), backend_limit, backend_name, memory_space::backend);
        }
    }

private:
    void check(byte_count need, std::uint64_t limit, std::string_view limit_name, std::optional<memory_space> only) const {
        if (!(need > limit)) return;
        // Name the largest buffer (a count past 2^64 is the largest): its flag is the one to change.
        const auto size = [](const item& i) { return i.bytes.known() ? i.bytes.value() : std::numeric_limits<std::uint64_t>::max(); };
        const item* largest = nullptr;
        for (const auto& i : items_)
            if ((!only || i.space == *only) && (!largest || size(i) > size(*largest))) largest = &i;
        fail(command_, " needs ", need.describe(), ", more than this machine's ", byte_count(limit).describe(), " of ", limit_name,
             largest ? ": the largest part is " + largest->what + ", " + largest->bytes.describe() + ", set by " + largest->set_by
                     : std::string());
    }

    std::string command_;
    std::vector<item> items_;
};

// Runs `allocate` and turns a std::bad_alloc into an error naming the buffer, its bytes and the
// flag behind it (an allocation the estimate let through, e.g. under a ulimit or overcommit rule).
template <class F>
decltype(auto) allocation_phase(std::string_view what, byte_count bytes, std::string_view set_by, F&& allocate) {
    try {
        return std::forward<F>(allocate)();
    } catch (const std::bad_alloc&) {
        fail("out of memory allocating ", what, " (", bytes.describe(), ", set by ", set_by, ")");
    }
}

}  // namespace transmamba::cli
