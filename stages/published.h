#pragma once
// A value one thread publishes and many threads follow without a lock on
// their fast path: each reader keeps its own copy and the generation it saw,
// and takes the new value (under the lock, rarely) only when the generation
// moved. Used for what a reload (SIGHUP) swaps while events flow: the
// [events] limits (pipeline/intake), the payload schema set
// (stages/schema/active) and the routes (stages/route/active). Readers cost
// one acquire load per look.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <utility>

namespace evpipe::stages {

template <typename T>
class published {
 public:
  void publish(T value) {
    std::lock_guard lock(mu_);
    value_ = std::move(value);
    generation_.fetch_add(1, std::memory_order_release);
  }
  // True, with `out` replaced, when a value was published after the
  // generation in `seen` (0 before the first look: any published value).
  [[nodiscard]] bool take_if_newer(uint64_t& seen, T& out) const {
    if (generation_.load(std::memory_order_acquire) == seen) return false;
    std::lock_guard lock(mu_);
    out = value_;
    seen = generation_.load(std::memory_order_relaxed);
    return true;
  }

 private:
  mutable std::mutex mu_;
  T value_{};
  std::atomic<uint64_t> generation_{0};  // 0: never published
};

}  // namespace evpipe::stages
