#pragma once
// "The weights have been checked since they were last handed out for writing": the one piece of
// state a const forward pass updates. Models are shared between threads (several sessions, or a
// server's workers, calling forward() on one const model), so the flag is atomic: two threads that
// both find it clear both run the read-only check and both set it, which is harmless; a plain bool
// there is a data race. It copies and moves by value, so the classes holding it keep theirs.
#include <atomic>

namespace transmamba {

class check_flag {
public:
    check_flag() = default;
    check_flag(const check_flag& other) : done_(other.done()) {}
    check_flag& operator=(const check_flag& other) {
        set(other.done());
        return *this;
    }

    // Acquire/release: a thread that sees the flag set also sees the weights the setter checked.
    bool done() const { return done_.load(std::memory_order_acquire); }
    void set(bool value = true) { done_.store(value, std::memory_order_release); }
    void clear() { set(false); }

private:
    std::atomic<bool> done_{false};
};

}  // namespace transmamba
