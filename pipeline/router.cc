#include "pipeline/router.h"

namespace evpipe::pipeline {

router::router(std::vector<std::unique_ptr<shard>> shards, int64_t queue_capacity)
    : shards_(std::move(shards)),
      capacity_(queue_capacity),
      leases_(std::make_shared<shard_lease::counts>(shards_.size())) {}

bool router::has_room(size_t only) const noexcept {
  if (!open_.load(std::memory_order_relaxed)) return false;
  const int64_t capacity = capacity_.load(std::memory_order_relaxed);
  if (only != intake::unpinned) return only >= shards_.size() || shards_[only]->queued_events() < capacity;
  for (const auto& s : shards_) {
    if (s->queued_events() >= capacity) return false;
  }
  return true;
}

void router::submit(std::vector<stages::event_batch>& batches) {
  for (size_t i = 0; i < batches.size() && i < shards_.size(); ++i) {
    if (batches[i].events.empty()) continue;
    shards_[i]->push(std::move(batches[i]));
    batches[i].clear();
  }
}

shard_lease router::lease_shard() {
  size_t best = 0;
  for (size_t i = 1; i < leases_->size(); ++i) {
    if ((*leases_)[i].load(std::memory_order_relaxed) < (*leases_)[best].load(std::memory_order_relaxed)) best = i;
  }
  (*leases_)[best].fetch_add(1, std::memory_order_relaxed);
  return shard_lease(leases_, best);
}

void router::take_spares(std::vector<stages::event_batch>& batches, size_t only) {
  for (size_t i = 0; i < batches.size() && i < shards_.size(); ++i) {
    if (only != intake::unpinned && i != only) continue;
    // Submitted batches are moved-from: no heap memory (a moved-from
    // string keeps only its small-string capacity).
    if (batches[i].arena.capacity() < 1024 && batches[i].events.capacity() == 0) {
      (void)shards_[i]->take_spare(batches[i]);
    }
  }
}

void router::start() {
  for (auto& s : shards_) s->start();
}

void router::stop(std::chrono::steady_clock::time_point deadline) {
  for (auto& s : shards_) s->stop(deadline);
}

}  // namespace evpipe::pipeline
