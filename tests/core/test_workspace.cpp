// core/workspace.hpp and the growable workspace<cpu>: the measuring and the real arena agree, taken
// pointers are aligned, a short span is reported, reserve() grows only when it must.
#include <doctest/doctest.h>

#include <transmamba/transmamba.hpp>

#include <cstdint>
#include <string>
#include <vector>

// Its own namespace, so that files compiled together (a unity build) do not clash.
namespace test_core_workspace {

using transmamba::workspace_arena;
using transmamba::workspace_span;

namespace {

constexpr std::size_t align = workspace_arena::alignment;

struct pieces {
    float* a;
    double* b;
    std::byte* c;
    int* empty;
    char* d;
    std::int16_t* e;
};

// One layout function, run once measuring and once for real (the two-phase pattern).
pieces layout(workspace_arena& arena) {
    pieces p{};
    p.a = arena.take<float>(3);
    p.b = arena.take<double>(17);
    p.c = arena.take<std::byte>(1);
    p.empty = arena.take<int>(0);
    p.d = arena.take<char>(1000);
    p.e = arena.take<std::int16_t>(257);
    return p;
}

// Offsets of the pieces from a base, and the end of the last one.
std::vector<std::size_t> offsets(const pieces& p, const std::byte* base) {
    auto off = [&](const void* q) { return static_cast<std::size_t>(static_cast<const std::byte*>(q) - base); };
    return {off(p.a), off(p.b), off(p.c), off(p.empty), off(p.d), off(p.e)};
}

bool aligned(const void* q) { return reinterpret_cast<std::uintptr_t>(q) % align == 0; }

}  // namespace

TEST_CASE("workspace_arena: measuring mode hands out nothing and counts with slack") {
    workspace_arena measure;
    CHECK(measure.measuring());
    const pieces p = layout(measure);
    CHECK(p.a == nullptr);
    CHECK(p.d == nullptr);
    // pieces start at multiples of the alignment: 0, 256, 512, 768, 768, 1792; last ends at 1792 + 514
    CHECK(measure.used() == 1792 + 257 * 2 + align);
}

TEST_CASE("workspace_arena: a span of the measured size holds the layout at any base alignment") {
    workspace_arena measure;
    layout(measure);
    const std::size_t need = measure.used();
    std::vector<std::byte> storage(need + 2 * align);
    for (std::size_t shift : {std::size_t(0), std::size_t(1), std::size_t(8), std::size_t(100), align - 1}) {
        CAPTURE(shift);
        // a caller's span that starts at an arbitrary address, exactly as large as measured
        const workspace_span raw{storage.data() + shift, need};
        const workspace_span span = transmamba::align_span(raw);
        CHECK(aligned(span.data));
        CHECK(span.data >= raw.data);
        CHECK(span.data + span.bytes == raw.data + raw.bytes);
        workspace_arena real(span);
        CHECK_FALSE(real.measuring());
        pieces p{};
        REQUIRE_NOTHROW(p = layout(real));
        for (const void* q : {static_cast<const void*>(p.a), static_cast<const void*>(p.b),
                              static_cast<const void*>(p.c), static_cast<const void*>(p.d),
                              static_cast<const void*>(p.e)})
            CHECK(aligned(q));
        // same offsets as the measuring pass implies, increasing, no overlap, inside the span
        const auto off = offsets(p, span.data);
        CHECK(off == std::vector<std::size_t>{0, 256, 512, 768, 768, 1792});
        CHECK(off[4] + 1000 <= off[5]);
        CHECK(off[5] + 257 * sizeof(std::int16_t) <= span.bytes);
        CHECK(real.used() == measure.used());
    }
}

TEST_CASE("workspace_arena: over a misaligned span it aligns the base itself") {
    // A caller may hand any byte buffer to a forward pass; the arena must not give out misaligned
    // float/double pointers from it (undefined behaviour, caught by UBSan).
    workspace_arena measure;
    layout(measure);
    alignas(256) static std::byte storage[8192];
    for (std::size_t shift : {std::size_t(1), std::size_t(3), std::size_t(64), align - 1}) {
        CAPTURE(shift);
        workspace_arena real(workspace_span{storage + shift, measure.used()});
        pieces p{};
        REQUIRE_NOTHROW(p = layout(real));
        CHECK(aligned(p.a));
        CHECK(aligned(p.b));
        CHECK(aligned(p.e));
        CHECK(static_cast<void*>(p.a) == static_cast<void*>(storage + align));  // the first aligned address
        CHECK(static_cast<void*>(p.e + 257) <= static_cast<void*>(storage + shift + measure.used()));
    }
}

TEST_CASE("workspace_arena: a span too small is reported with both sizes") {
    alignas(256) static std::byte storage[2000];
    workspace_arena real(workspace_span{storage, 2000});
    // 0..12, 256..392, 512..513, 768..1768 fit; the int16 piece at 1792 needs 2306 bytes
    CHECK_THROWS_WITH_AS(layout(real), doctest::Contains("workspace too small: needs at least 2306 bytes, has 2000"),
                         transmamba::error);
    // a misaligned span loses its padding: 1999 bytes from storage + 1 hold 1744 aligned ones
    workspace_arena shifted(workspace_span{storage + 1, 1999});
    CHECK_THROWS_WITH_AS(layout(shifted), doctest::Contains("needs at least 1768 bytes, has 1744"), transmamba::error);
    // an empty span fails at the first non-empty piece
    workspace_arena none(workspace_span{});
    CHECK_THROWS_WITH_AS(none.take<float>(1), doctest::Contains("workspace too small"), transmamba::error);
    // but taking nothing from it is fine
    workspace_arena none2(workspace_span{});
    CHECK_NOTHROW(none2.take<float>(0));
}

TEST_CASE("align_span: null or too short spans become empty") {
    CHECK(transmamba::align_span({}).bytes == 0);
    alignas(256) std::byte storage[512];
    const auto s = transmamba::align_span({storage + 1, 10});  // needs 255 bytes of padding
    CHECK(s.bytes == 0);
    const auto t = transmamba::align_span({storage, 512});
    CHECK(t.data == storage);
    CHECK(t.bytes == 512);
    const auto u = transmamba::align_span({storage + 1, 300});
    CHECK(u.data == storage + 256);
    CHECK(u.bytes == 45);
}

TEST_CASE("workspace<cpu>::reserve grows only when a call needs more than any before") {
    transmamba::workspace<transmamba::cpu> ws;
    CHECK(ws.capacity() == 0);
    const auto s1 = ws.reserve(1000);
    CHECK(ws.capacity() == 1000);
    CHECK(s1.bytes == 1000);
    REQUIRE(s1.data != nullptr);
    for (std::size_t smaller : {std::size_t(1000), std::size_t(999), std::size_t(1), std::size_t(0)}) {
        CAPTURE(smaller);
        const auto s = ws.reserve(smaller);
        CHECK(ws.capacity() == 1000);
        CHECK(s.data == s1.data);  // no reallocation
        CHECK(s.bytes == 1000);   // the whole buffer is offered
    }
    const auto s2 = ws.reserve(5000);
    CHECK(ws.capacity() == 5000);
    CHECK(s2.bytes == 5000);
    // the buffer of a host_buffer is aligned for the arena
    CHECK(reinterpret_cast<std::uintptr_t>(s2.data) % transmamba::host_buffer<std::byte>::alignment == 0);
    const auto s3 = ws.reserve(4999);
    CHECK(s3.data == s2.data);
    CHECK(ws.capacity() == 5000);
}

}  // namespace test_core_workspace
