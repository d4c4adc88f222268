#pragma once
// Wakes the sources that wait for room in a shard's queue, so that a paused
// connection sleeps until there is room instead of polling for it (a
// thousand connections paused through a database outage, each polling every
// 2 ms, kept 0.4 cores busy doing nothing). router::wait_for_room adds a
// waiter and checks again; the shard rings once it has taken batches off
// its queue and has room (router.cc). Thread-safe.

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace evpipe::pipeline {

class room_bell {
 public:
  struct waiter {
    std::weak_ptr<void> owner;   // a waiter whose owner is gone is dropped unrun
    std::function<void()> wake;  // runs once, on the ringing thread: post to the owner's executor
  };

  void add(waiter w) {
    std::lock_guard lock(m_);
    // A connection that closed while it waited leaves its waiter behind
    // until the next ring: drop those before the list doubles.
    if (waiting_.size() >= prune_at_) {
      std::erase_if(waiting_, [](const waiter& x) { return x.owner.expired(); });
      prune_at_ = std::max<size_t>(64, 2 * waiting_.size());
    }
    waiting_.push_back(std::move(w));
    armed_.store(true, std::memory_order_relaxed);
    // Pairs with the fence in armed(): either the shard sees this waiter or
    // the caller's next look at the queue sees what the shard took.
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  // Whether anyone waits; after the caller's change to the queue depth.
  [[nodiscard]] bool armed() const noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return armed_.load(std::memory_order_relaxed);
  }
  // Runs (and forgets) every waiter added so far.
  void ring() {
    std::vector<waiter> now;
    {
      std::lock_guard lock(m_);
      now.swap(waiting_);
      armed_.store(false, std::memory_order_relaxed);
    }
    for (auto& w : now) {
      if (!w.owner.expired()) w.wake();
    }
  }
  [[nodiscard]] size_t waiting() const {
    std::lock_guard lock(m_);
    return waiting_.size();
  }

 private:
  mutable std::mutex m_;
  std::vector<waiter> waiting_;
  size_t prune_at_ = 64;
  std::atomic<bool> armed_{false};
};

}  // namespace evpipe::pipeline
