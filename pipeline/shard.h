#pragma once
// A shard: one thread that owns a slice of the key space (by hash of the
// idempotency key), its dedup window, its current batch and its own database
// sink. Sources feed it through a lock-free queue of event batches; it runs
// dedup, batch and DLQ routing, writes each batch in one transaction and,
// after COMMIT, hands every event's outcome back to the event's origin.
//
// Lifecycle: constructed, start(), then stop() drains the queue, commits the
// last batch and joins. Producers call push() from any thread; everything
// else runs on the shard's own thread.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <thread>

#include <absl/container/flat_hash_map.h>
#include <concurrentqueue/blockingconcurrentqueue.h>

#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "stages/batch.h"
#include "stages/dedup.h"
#include "stages/event.h"

namespace evpipe::pipeline {

// `evpipe run` sets every field from its config ([batch], [dedup], ...); the
// defaults here are the library's, for tests and benchmarks that build shards
// themselves (the daemon's batch defaults are config::settings').
struct shard_options {
  uint32_t max_rows = 4096;
  uint32_t max_bytes = 4 << 20;
  std::chrono::microseconds linger{0};
  uint32_t window_keys = 1'000'000;
  std::chrono::milliseconds retry_base{100};
  std::chrono::milliseconds retry_max{5000};
  uint32_t max_attempts = 0;  // 0: retry forever
  // Called on the shard thread right after a batch with events_mirror rows
  // commits, with the steady-clock time of the commit (ns): wakes the read
  // side's stream (read::stream_hub::note_commit). Must be cheap; may be empty.
  std::function<void(int64_t commit_ns)> on_commit;
};

// Tuning of the shard queue (moodycamel's traits): blocks of 64 batches; a
// batch carries many events, so the queue itself stays short. A shard that
// finds its queue empty sleeps at once: moodycamel's default first spins
// 10,000 times, even for a wait of 0 us, and a shard waits after nearly every
// commit at a moderate rate, when the next read is 0.1-1 ms away (those
// spins were three quarters of a shard thread's instructions at 1,000
// events/s: docs/performance-cpu.md, "The shard queue's spin").
struct shard_queue_traits : moodycamel::ConcurrentQueueDefaultTraits {
  static const size_t BLOCK_SIZE = 64;
  static const int MAX_SEMA_SPINS = 0;
};

class shard {
 public:
  shard(uint32_t id, shard_options opts, std::unique_ptr<batch_sink> sink, shard_probe& probe,
        metrics_registry& registry);
  ~shard();
  shard(const shard&) = delete;
  shard& operator=(const shard&) = delete;

  void start();
  // Thread-safe. Never blocks and never drops: capacity is enforced by the
  // sources, which stop reading while queued_events() is over the limit.
  void push(stages::event_batch&& batch);
  // Thread-safe. Replaces `into` (empty) by a batch this shard has absorbed,
  // cleared but with its arena's and events' memory, when one is spare: a
  // read's batch for this shard then allocates nothing, and no freshly
  // mapped page is touched (see spares_; router::take_spares).
  bool take_spare(stages::event_batch& into) { return spares_.try_dequeue(into); }
  // Before start(): runs on the shard thread each time it has taken
  // batches off its queue (the router rings for sources waiting for room).
  void on_taken(std::function<void()> f) { on_taken_ = std::move(f); }
  [[nodiscard]] int64_t queued_events() const noexcept {
    return probe_.queue_depth.load(std::memory_order_relaxed);
  }
  // Drains the queue, commits what is pending and joins the thread. When
  // `deadline` passes first, retries are abandoned (their events stay unacked).
  void stop(std::chrono::steady_clock::time_point deadline);
  // Thread-safe (a reload's [batch]): the shard thread takes these limits
  // before its next dequeue; the open batch closes by the new ones.
  void set_batch_limits(uint32_t max_rows, uint32_t max_bytes, std::chrono::microseconds linger) noexcept;

 private:
  void run();
  // `popped`: when the shard took `in` from its queue (steady ns).
  void absorb(stages::event_batch& in, int64_t popped);
  // Starts the open write batch's timeline with `in`, unless it has one.
  void note_opened(const stages::event_batch& in, int64_t popped);
  void flush();
  void deliver_outcomes();
  // Forgets the keys of rows that did not become rows of events_mirror (all
  // rows not already stored, when giving up on the batch).
  void forget_unmirrored_keys(bool giving_up);
  void forget(std::string_view key, std::string_view tenant);  // one key out of the dedup window
  void record_labels();

  uint32_t id_;
  shard_options opts_;
  std::unique_ptr<batch_sink> sink_;
  shard_probe& probe_;
  metrics_registry& registry_;

  moodycamel::BlockingConcurrentQueue<stages::event_batch, shard_queue_traits> queue_;
  std::function<void()> on_taken_;
  // Absorbed batches go back to the sources through here instead of being
  // freed on this thread and allocated again on theirs: a batch's arena is
  // about a read's size (64 KiB), and each fresh one cost page faults. At
  // most max_spares are kept, none with an arena over max_spare_bytes.
  static constexpr size_t max_spares = 32;
  static constexpr size_t max_spare_bytes = size_t{1} << 20;
  moodycamel::ConcurrentQueue<stages::event_batch> spares_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> abandon_{false};
  std::atomic<bool> finished_{false};
  std::thread thread_;
  // Limits set by set_batch_limits, taken by the shard thread into opts_.
  std::atomic<uint32_t> next_max_rows_{0}, next_max_bytes_{0};
  std::atomic<int64_t> next_linger_us_{0};
  std::atomic<bool> limits_changed_{false};

  // Shard-thread state.
  stages::dedup_window window_;
  stages::write_batch batch_;
  std::vector<std::vector<stages::outcome>> by_origin_;
  absl::flat_hash_map<std::string, uint64_t> ingest_labels_;
  absl::flat_hash_map<std::string, uint64_t> dlq_labels_;
  absl::flat_hash_map<std::string, uint64_t> tenant_ingest_labels_;  // tenant (docs/tenants.md)
  absl::flat_hash_map<std::string, uint64_t> tenant_dlq_labels_;     // tenant \x1f reason
  std::string label_key_;
};

}  // namespace evpipe::pipeline
