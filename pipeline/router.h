#pragma once
// The set of shards. Sources build one event_batch per shard from what they
// read (pipeline/intake, which routes by shard_for) and hand them over with
// submit(). Thread-safe.

#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include "pipeline/intake.h"
#include "pipeline/room_bell.h"
#include "pipeline/shard.h"
#include "pipeline/shard_lease.h"

namespace evpipe::pipeline {

class router {
 public:
  router(std::vector<std::unique_ptr<shard>> shards, int64_t queue_capacity);

  [[nodiscard]] size_t shard_count() const noexcept { return shards_.size(); }
  [[nodiscard]] size_t shard_of(const stages::event_record& ev) const noexcept {
    return shard_for(ev, shards_.size());
  }
  // Whether every shard has room for more events; sources stop reading while
  // this is false (backpressure). `only`: just that shard (a connection
  // pinned to it sends nothing to the others).
  [[nodiscard]] bool has_room(size_t only = intake::unpinned) const noexcept;
  // For a source that found no room (has_room(only) false) and will wait
  // for it: `w.wake` runs once, on a shard's thread (or this one), when the
  // queue it waits for has room again or the router opens; the source then
  // checks has_room() again. Returns false, keeping nothing, when there is
  // room already. Instead of polling: see room_bell.h.
  bool wait_for_room(size_t only, room_bell::waiter w);
  // Closed, has_room() is false whatever the queues hold: sources read
  // nothing (evpipe started before its database and waits for it).
  // Thread-safe.
  void set_open(bool open);
  // A reload's [pipeline] queue_capacity and [batch]; thread-safe, effective
  // for the next has_room() and each shard's next batch.
  void set_queue_capacity(int64_t capacity);
  void set_batch_limits(uint32_t max_rows, uint32_t max_bytes, std::chrono::microseconds linger) noexcept {
    for (auto& s : shards_) s->set_batch_limits(max_rows, max_bytes, linger);
  }
  // Hands batches over; batches[i] goes to shard i; empty ones are skipped.
  void submit(std::vector<stages::event_batch>& batches);
  // The shard with the fewest live leases (ties: the lowest index), leased
  // until the result is destroyed. Thread-safe; two connections leasing at
  // the same moment may pick the same shard.
  [[nodiscard]] shard_lease lease_shard();
  // Live leases on shard i (tests, metrics).
  [[nodiscard]] int64_t leases(size_t i) const noexcept { return (*leases_)[i].load(std::memory_order_relaxed); }
  // Every shard's live leases, shared: /metrics reads them
  // (metrics_registry::watch_shard_leases), also after the router is gone.
  [[nodiscard]] std::shared_ptr<const shard_lease::counts> lease_counts() const noexcept { return leases_; }
  // Gives each empty batch (batches[i] for shard i) the memory of one the
  // shard has absorbed, when it has one spare (shard::take_spare). A source
  // calls it once data is read, right before filling the batches: memory
  // moves between sources and shards instead of being freed and allocated
  // again, and an idle connection holds none. `only`: just that shard's
  // batch (an intake pinned to one shard fills no other).
  void take_spares(std::vector<stages::event_batch>& batches, size_t only = intake::unpinned);

  void start();
  // Drains and joins every shard (see shard::stop).
  void stop(std::chrono::steady_clock::time_point deadline);

 private:
  // Shard i rang room for whoever waits on bells_[i] (after taking batches).
  void rang_room(size_t i);
  void ring_all();

  // Declared before shards_, so destroyed after them: a shard thread rings
  // them until it is joined.
  std::atomic<int64_t> capacity_;
  std::atomic<bool> open_{true};
  std::vector<std::unique_ptr<room_bell>> bells_;  // per shard: sources waiting for its queue
  room_bell open_bell_;                            // sources waiting for set_open(true)
  std::vector<std::unique_ptr<shard>> shards_;
  std::shared_ptr<shard_lease::counts> leases_;  // live shard_leases per shard
};

}  // namespace evpipe::pipeline
