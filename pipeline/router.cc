#include "pipeline/router.h"

namespace evpipe::pipeline {

router::router(std::vector<std::unique_ptr<shard>> shards, int64_t queue_capacity)
    : capacity_(queue_capacity),
      shards_(std::move(shards)),
      leases_(std::make_shared<shard_lease::counts>(shards_.size())) {
  for (size_t i = 0; i < shards_.size(); ++i) {
    bells_.push_back(std::make_unique<room_bell>());
    shards_[i]->on_taken([this, i] { rang_room(i); });
  }
}

void router::rang_room(size_t i) {
  room_bell& bell = *bells_[i];
  if (bell.armed() && shards_[i]->queued_events() < capacity_.load(std::memory_order_relaxed)) bell.ring();
}

void router::ring_all() {
  open_bell_.ring();
  for (auto& b : bells_) b->ring();
}

void router::set_open(bool open) {
  open_.store(open);
  if (open) ring_all();
}

void router::set_queue_capacity(int64_t capacity) {
  capacity_.store(capacity, std::memory_order_relaxed);
  ring_all();  // a larger capacity is room now; the others look again and wait again
}

bool router::wait_for_room(size_t only, room_bell::waiter w) {
  // The bell of what keeps this source waiting: the router closed, or the
  // first full queue among those it sends to.
  room_bell* bell = nullptr;
  size_t full = shards_.size();
  if (!open_.load()) {
    bell = &open_bell_;
  } else {
    const int64_t capacity = capacity_.load(std::memory_order_relaxed);
    for (size_t i = 0; i < shards_.size(); ++i) {
      if (only != intake::unpinned && i != only) continue;
      if (shards_[i]->queued_events() >= capacity) {
        full = i;
        bell = bells_[i].get();
        break;
      }
    }
  }
  if (bell == nullptr) return false;
  bell->add(std::move(w));
  // Look again now that the waiter is in: the shard may have taken its
  // batches (or the router opened) just before, and rung no one.
  const bool still = full < shards_.size()
                         ? shards_[full]->queued_events() >= capacity_.load(std::memory_order_relaxed)
                         : !open_.load();
  if (still) return true;
  bell->ring();  // runs this waiter too: a spurious wake, which a waiting source tolerates
  return false;
}

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
