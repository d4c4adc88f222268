#pragma once
// A connection's hold on one shard (pipeline/router.h, lease_shard), kept by
// its intake (intake::pin).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace evpipe::pipeline {

// A connection's hold on one shard, for a source with route_by = "connection"
// (docs/operations.md, "Routing: by key or by connection"): all its events go to that
// shard, so its cumulative acks wait for one shard's commits, not the
// slowest of all. router::lease_shard() gives the shard the fewest live
// leases hold; the lease counts there until destroyed. Movable; it may
// outlive the router.
class shard_lease {
 public:
  using counts = std::vector<std::atomic<int64_t>>;
  shard_lease() = default;
  shard_lease(std::shared_ptr<counts> held, size_t shard) noexcept : held_(std::move(held)), shard_(shard) {}
  shard_lease(shard_lease&& o) noexcept : held_(std::move(o.held_)), shard_(o.shard_) {}
  shard_lease& operator=(shard_lease&& o) noexcept {
    if (this != &o) {
      release();
      held_ = std::move(o.held_);
      shard_ = o.shard_;
    }
    return *this;
  }
  shard_lease(const shard_lease&) = delete;
  shard_lease& operator=(const shard_lease&) = delete;
  ~shard_lease() { release(); }

  [[nodiscard]] bool held() const noexcept { return held_ != nullptr; }
  [[nodiscard]] size_t shard() const noexcept { return shard_; }

 private:
  void release() noexcept {
    if (held_) (*held_)[shard_].fetch_sub(1, std::memory_order_relaxed);
    held_.reset();
  }
  std::shared_ptr<counts> held_;
  size_t shard_ = 0;
};

}  // namespace evpipe::pipeline
