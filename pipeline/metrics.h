#pragma once
// Metrics: one probe object per module instance (a shard, a source), read by
// the registry when /metrics is scraped, rendered in Prometheus text format.
//
// Counters and histograms on the hot path are relaxed atomics written by one
// thread (the probe's owner); the scraper only reads them. Labelled counters
// (ingest by topic and kind, DLQ by topic and reason) are merged once per
// committed batch under a mutex, through a limiter that caps the number of
// distinct values per label and folds the rest into "other".

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <absl/container/flat_hash_map.h>
#include <absl/container/flat_hash_set.h>

namespace evpipe::pipeline {

// Latency histogram with fixed buckets from 1 µs to 10 s (1-2.5-5 steps).
class histogram {
 public:
  static constexpr std::array<int64_t, 22> bounds_ns = {
      1'000,       2'500,       5'000,       10'000,        25'000,        50'000,
      100'000,     250'000,     500'000,     1'000'000,     2'500'000,     5'000'000,
      10'000'000,  25'000'000,  50'000'000,  100'000'000,   250'000'000,   500'000'000,
      1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};

  void observe_ns(int64_t ns) noexcept {
    size_t i = 0;
    while (i < bounds_ns.size() && ns > bounds_ns[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(ns < 0 ? 0 : ns, std::memory_order_relaxed);
  }

  struct snapshot {
    std::array<uint64_t, bounds_ns.size() + 1> counts{};  // per bucket, not cumulative
    uint64_t sum_ns = 0;
    void add(const snapshot& o) {
      for (size_t i = 0; i < counts.size(); ++i) counts[i] += o.counts[i];
      sum_ns += o.sum_ns;
    }
    [[nodiscard]] uint64_t total() const {
      uint64_t t = 0;
      for (auto c : counts) t += c;
      return t;
    }
  };
  [[nodiscard]] snapshot read() const noexcept {
    snapshot s;
    for (size_t i = 0; i < counts_.size(); ++i) s.counts[i] = counts_[i].load(std::memory_order_relaxed);
    s.sum_ns = sum_ns_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  std::array<std::atomic<uint64_t>, bounds_ns.size() + 1> counts_{};
  std::atomic<uint64_t> sum_ns_{0};
};

using counter = std::atomic<uint64_t>;

inline void bump(counter& c, uint64_t n = 1) noexcept { c.fetch_add(n, std::memory_order_relaxed); }

// Stages whose time is recorded per batch: validate (a source read's lines),
// dedup (a queued batch through the window into the write batch), linger (a
// write batch open, from its first event to its flush) and write (COPY, DLQ
// inserts and COMMIT, retries included).
enum class stage : uint8_t { validate, dedup, linger, write, count_ };
[[nodiscard]] std::string_view stage_name(stage s) noexcept;

// Written by one shard thread.
struct shard_probe {
  counter batches{0};
  counter copy_rows{0};
  counter copy_bytes{0};
  counter duplicates{0};
  counter db_errors{0};
  counter db_retries{0};
  std::atomic<int64_t> queue_depth{0};  // events queued for this shard (sources add, shard subtracts)
  std::atomic<bool> db_ready{false};
  histogram event_latency;             // receive to commit, per event
  std::array<histogram, static_cast<size_t>(stage::count_)> stage_latency;
};

// Written by the source threads (one probe per source kind).
struct source_probe {
  std::string kind;                     // "tcp", ...
  counter received{0};
  counter connections_total{0};
  counter connections_refused{0};       // over the source's connection limit
  counter connections_timed_out{0};     // closed by the idle timeout
  std::atomic<int64_t> connections_active{0};
  std::atomic<int64_t> unacked{0};      // events read and not yet acknowledged
  counter backpressure_waits{0};        // times a connection paused reading (queue full or too much unacked)
  histogram validate_latency;           // per source read (a batch of lines)
  // MQTT only.
  counter reconnects{0};                // sessions re-established after a lost connection
  counter pubacks{0};                   // PUBACKs sent (each after its message's outcome committed)
  counter dlq_published{0};             // dead letters republished to the broker
  counter dlq_echoes_ignored{0};        // our own dead-letter republishes received back and acked unstored
  counter protocol_errors{0};           // connections dropped because the broker broke the protocol
  counter session_takeovers{0};         // sessions the broker closed soon after CONNACK (same client id elsewhere?)
  counter session_lost{0};              // reconnects where the broker no longer had our persistent session
  std::atomic<int64_t> subscriptions_degraded{0};  // filters refused (SUBACK 0x80) or granted only QoS 0
  // HTTP only: responses by status class.
  counter http_ok{0};                   // 200
  counter http_client_errors{0};        // 400, 401, 404, 405, 413, 415, 431
  counter http_busy{0};                 // 503 (queues full or shutting down)
};

// Caps the distinct values of one label. Not thread-safe (used under the
// registry's mutex).
class label_limiter {
 public:
  explicit label_limiter(size_t max_values) : max_(max_values) {}
  // The value to report: `v` itself while fewer than max distinct values have
  // been seen, else "other".
  [[nodiscard]] std::string_view admit(std::string_view v);

 private:
  size_t max_;
  absl::flat_hash_set<std::string> seen_;
};

class metrics_registry {
 public:
  metrics_registry(std::string prefix, size_t max_label_values);

  shard_probe& add_shard();          // call before threads start
  source_probe& add_source(std::string kind);

  // Labelled counts of one committed batch: key is "a\x1fb" (topic, kind) or
  // (topic, reason code). Thread-safe.
  void add_ingested(const absl::flat_hash_map<std::string, uint64_t>& by_topic_kind);
  void add_dead_lettered(const absl::flat_hash_map<std::string, uint64_t>& by_topic_reason);
  // Rows PostgreSQL refused (dead-lettered as db_rejected), by SQLSTATE.
  void add_db_rejected(std::string_view sqlstate, uint64_t n);

  // Prometheus text exposition format 0.0.4.
  [[nodiscard]] std::string render() const;

  [[nodiscard]] bool all_shards_ready() const;
  [[nodiscard]] const std::string& prefix() const noexcept { return prefix_; }
  [[nodiscard]] const std::vector<std::unique_ptr<shard_probe>>& shards() const { return shards_; }
  [[nodiscard]] const std::vector<std::unique_ptr<source_probe>>& sources() const { return sources_; }

 private:
  void merge(const absl::flat_hash_map<std::string, uint64_t>& in,
             absl::flat_hash_map<std::string, uint64_t>& into, label_limiter& second);

  std::string prefix_;
  std::vector<std::unique_ptr<shard_probe>> shards_;
  std::vector<std::unique_ptr<source_probe>> sources_;

  mutable std::mutex mu_;  // guards the labelled maps and limiters
  label_limiter topics_;
  label_limiter kinds_;
  label_limiter reasons_;
  absl::flat_hash_map<std::string, uint64_t> ingested_;
  absl::flat_hash_map<std::string, uint64_t> dead_lettered_;
  absl::flat_hash_map<std::string, uint64_t> db_rejected_;  // SQLSTATE codes: a bounded set
};

// Joins two label values into one map key.
inline constexpr char label_sep = '\x1f';

}  // namespace evpipe::pipeline
