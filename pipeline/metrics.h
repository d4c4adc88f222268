#pragma once
// Metrics: one probe object per module instance (a shard, a source), read by
// the registry when /metrics is scraped, rendered in Prometheus text format.
//
// Counters and histograms on the hot path are relaxed atomics written by one
// thread (the probe's owner); the scraper only reads them. Labelled counters
// (ingest by topic and kind, DLQ by topic and reason) are merged once per
// committed batch under a mutex. Each labelled family has its own budget: at
// most `max_label_values` distinct values per label and `max_series` series,
// the rest folded into "other" (counts are moved, never dropped, so sums stay
// exact), so that junk in one family never crowds out another.

#include <array>
#include <chrono>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <absl/container/flat_hash_map.h>
#include <absl/container/flat_hash_set.h>

#include "pipeline/shard_lease.h"

namespace evpipe::pipeline {

class metrics_registry;

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
  // `n` observations of the same value (e.g. the events of one write).
  void observe_ns(int64_t ns, uint64_t n) noexcept {
    size_t i = 0;
    while (i < bounds_ns.size() && ns > bounds_ns[i]) ++i;
    counts_[i].fetch_add(n, std::memory_order_relaxed);
    sum_ns_.fetch_add(ns < 0 ? 0 : static_cast<uint64_t>(ns) * n, std::memory_order_relaxed);
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
// inserts and COMMIT, retries included). Between them (issue 19): queue (a
// read's batch waiting in its shard's queue, push to pop), ack_post (from
// COMMIT's answer to the outcomes handed to every origin: counters, dedup
// window upkeep) and ack_write (TCP: from the outcomes handed over to the
// written ack that covers them, i.e. the I/O thread's wait, the wait for
// earlier lines of other shards (acks are cumulative) and the write itself).
enum class stage : uint8_t { validate, dedup, linger, write, queue, ack_post, ack_write, count_ };
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
  // For readiness: when the write in progress began (steady-clock ns, and the
  // wall clock for the report; 0: no write in progress), whether it has
  // failed at least once, and when a batch last committed (wall clock ms; the
  // start time before the first commit).
  std::atomic<int64_t> write_started_ns{0};
  std::atomic<int64_t> write_started_unix_ms{0};
  std::atomic<bool> retrying{false};
  std::atomic<int64_t> last_commit_unix_ms{0};
  void set_last_error(std::string e) {
    std::lock_guard lock(error_mu_);
    last_error_ = std::move(e);
  }
  [[nodiscard]] std::string last_error() const {
    std::lock_guard lock(error_mu_);
    return last_error_;
  }
  histogram event_latency;             // receive to commit, per event
  std::array<histogram, static_cast<size_t>(stage::count_)> stage_latency;

 private:
  mutable std::mutex error_mu_;  // the shard writes on failures; the scraper reads
  std::string last_error_;
};

// Written by the source threads (one probe per configured source; the
// metrics sum a kind's probes, /health/ready lists each).
struct source_probe {
  std::string kind;                     // "tcp", ...
  std::string address;                  // which source of its kind: "127.0.0.1:5555", "mqtt://... as <client id>"
  std::atomic<bool> retired{false};     // its source was stopped by a reload (still counted, no longer listed)
  counter received{0};
  std::atomic<int64_t> last_received_unix_ms{0};  // wall clock of the last read with events (0: none yet)
  // Events read: counts them and notes when (for /health/ready).
  void note_received(uint64_t n) noexcept {
    if (n == 0) return;
    bump(received, n);
    last_received_unix_ms.store(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count(),
                                std::memory_order_relaxed);
  }
  counter connections_total{0};
  counter connections_refused{0};       // over the source's connection limit
  counter connections_timed_out{0};     // closed by the idle timeout
  std::atomic<int64_t> connections_active{0};
  std::atomic<int64_t> unacked{0};      // events read and not yet acknowledged
  counter backpressure_waits{0};        // times a connection paused reading (queue full or too much unacked)
  counter backpressure_paused_ns{0};    // time connections spent paused, summed over connections (pause_timer)
  counter tenant_throttled{0};           // pauses and 429s because a tenant was over its quota (docs/tenants.md)
  // Counts one pause or 429 of `tenant`: tenant_throttled, and the registry's
  // by-tenant family (a mutex: once per pause or refused request, not per event).
  void note_tenant_throttled(std::string_view tenant);
  metrics_registry* registry = nullptr;  // set by add_source; null in a probe made alone (tests)
  histogram validate_latency;           // per source read (a batch of lines)
  histogram ack_write_latency;          // per batch and connection: outcomes handed over to ack written (TCP)
  // MQTT only.
  counter reconnects{0};                // sessions re-established after a lost connection
  counter pubacks{0};                   // PUBACKs sent (each after its message's outcome committed)
  counter dlq_published{0};             // dead letters republished to the broker
  counter dlq_echoes_ignored{0};        // our own dead-letter republishes received back and acked unstored
  counter protocol_errors{0};           // connections dropped because the broker broke the protocol
  counter session_takeovers{0};         // sessions the broker closed soon after CONNACK (same client id elsewhere?)
  counter session_lost{0};              // reconnects where the broker no longer had our persistent session
  std::atomic<int64_t> subscriptions_degraded{0};  // filters refused (SUBACK 0x80) or granted only QoS 0
  std::atomic<int64_t> sessions_subscribed{0};     // connected sessions whose SUBACK came back
  std::atomic<int64_t> shared_unconfirmed{0};      // sessions whose shared_group probe did not come back
  // NATS only (io/sources/nats).
  counter nats_acks{0};                 // messages acked, each after its outcome committed
  counter nats_in_progress{0};          // in-progress acks: messages whose commit is taking long (a database outage)
  counter nats_max_deliveries{0};       // messages dead-lettered unprocessed as max_deliveries
  counter nats_fetch_errors{0};         // pulls that failed (other than timeouts)
  std::atomic<int64_t> nats_consumers_ready{0};  // consumers bound and pulling
  // HTTP only: responses by status class.
  counter http_ok{0};                   // 200
  counter http_client_errors{0};        // 400, 401, 404, 405, 413, 415, 431
  counter http_busy{0};                 // 503 (queues full or shutting down)
};

// Times one connection's backpressure pauses into its source's probe:
// begin() at every wait (the first of a pause counts backpressure_waits),
// end() when reading resumes or stops. Owned by the connection's reading
// thread or strand; not thread-safe.
class pause_timer {
 public:
  void begin(source_probe& p) noexcept {
    if (started_ns_ != 0) return;
    bump(p.backpressure_waits);
    started_ns_ = now_ns();
  }
  void end(source_probe& p) noexcept {
    if (started_ns_ == 0) return;
    p.backpressure_paused_ns.fetch_add(static_cast<uint64_t>(now_ns() - started_ns_), std::memory_order_relaxed);
    started_ns_ = 0;
  }
  [[nodiscard]] bool paused() const noexcept { return started_ns_ != 0; }

 private:
  static int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  int64_t started_ns_ = 0;
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

// One counter family labelled (topic, second label) and its budget. Not
// thread-safe (used under the registry's mutex).
struct labelled_family {
  labelled_family(size_t max_values_first, size_t max_values_second, size_t max_series)
      : first(max_values_first), second(max_values_second), max_series(max_series) {}
  // Adds n to the series of (a, b), or to the series it folds into: a label
  // over its budget reads "other", and a series still new once the family
  // holds max_series reads (other, other), so a family has at most
  // max_series + 1 series.
  void add(std::string_view a, std::string_view b, uint64_t n);

  label_limiter first, second;
  size_t max_series;
  absl::flat_hash_map<std::string, uint64_t> counts;  // key "a\x1fb"
};

class metrics_registry {
 public:
  metrics_registry(std::string prefix, size_t max_label_values, size_t max_series = 2000);

  shard_probe& add_shard();          // call before threads start
  // A source's probe (kind "tcp", "mqtt", "http", "nats"; address: which
  // one, for /health/ready). Metrics sum the probes of a kind.
  source_probe& add_source(std::string kind, std::string address = "");

  // Labelled counts of one committed batch: key is "a\x1fb" (topic, kind) or
  // (topic, reason code). Thread-safe.
  void add_ingested(const absl::flat_hash_map<std::string, uint64_t>& by_topic_kind);
  void add_dead_lettered(const absl::flat_hash_map<std::string, uint64_t>& by_topic_reason);
  // Rows PostgreSQL refused (dead-lettered as db_rejected), by SQLSTATE.
  void add_db_rejected(std::string_view sqlstate, uint64_t n);
  // Dead letters dlq_events already held (same topic and bytes, resent), by
  // reason code: acked, but no new row, so not in add_dead_lettered.
  void add_dlq_duplicate(std::string_view reason, uint64_t n);
  // By tenant (docs/tenants.md), under the same folding as topics: events
  // committed ("tenant" keys), dead letters ("tenant\x1freason" keys), and
  // one quota pause or 429. Thread-safe.
  void add_ingested_by_tenant(const absl::flat_hash_map<std::string, uint64_t>& by_tenant);
  void add_dead_lettered_by_tenant(const absl::flat_hash_map<std::string, uint64_t>& by_tenant_reason);
  void add_throttled_by_tenant(std::string_view tenant, uint64_t n);

  // The connections pinned to each shard (route_by = "connection",
  // pipeline/shard_lease.h), shown as <prefix>_shard_connections. Set once,
  // before /metrics is served (app/daemon.cc).
  void watch_shard_leases(std::shared_ptr<const shard_lease::counts> counts) {
    leases_ = std::move(counts);
  }

  // Prometheus text exposition format 0.0.4.
  [[nodiscard]] std::string render() const;

  [[nodiscard]] bool all_shards_ready() const;
  // What /health/ready answers: not ready while a shard has no database
  // connection, is retrying a failed write, or has been writing one batch for
  // longer than max_stall; `body` is the JSON to send, naming the shard, the
  // SQLSTATE and since when. An idle shard is ready.
  struct readiness {
    bool ready = false;
    std::string body;
    // Each source's health, a JSON array (also inside body as
    // "source_health"): broker_connected (MQTT), connections,
    // last_message_time, messages_processed, errors.
    std::string source_health;
  };
  [[nodiscard]] readiness ready_state(std::chrono::milliseconds max_stall) const;
  [[nodiscard]] const std::string& prefix() const noexcept { return prefix_; }
  [[nodiscard]] const std::vector<std::unique_ptr<shard_probe>>& shards() const { return shards_; }
  // The probe of the source of `kind` at `address`, or null.
  [[nodiscard]] source_probe* find_source(std::string_view kind, std::string_view address) const;

  // Config reloads (SIGHUP, app/daemon.cc): how many loaded and applied or
  // failed to load, and when the last one ended. Written by the reload thread.
  struct reload_probe {
    counter succeeded{0}, failed{0};
    std::atomic<double> last_timestamp{0};  // Unix time; 0 before the first
    std::atomic<bool> last_succeeded{true};
  } reloads;

 private:
  void merge(const absl::flat_hash_map<std::string, uint64_t>& in, labelled_family& into);

  std::string prefix_;
  std::vector<std::unique_ptr<shard_probe>> shards_;
  // Added to by a reload while the metrics are rendered (on the HTTP or the
  // stream thread): guarded; the probes themselves are atomics, never moved.
  mutable std::mutex sources_mu_;
  std::vector<std::unique_ptr<source_probe>> sources_;
  std::shared_ptr<const shard_lease::counts> leases_;  // watch_shard_leases

  mutable std::mutex mu_;  // guards the labelled families
  labelled_family ingested_;       // (topic, kind)
  labelled_family dead_lettered_;  // (topic, reason)
  labelled_family tenant_ingested_;       // (tenant, "")
  labelled_family tenant_dead_lettered_;  // (tenant, reason)
  labelled_family tenant_throttled_;      // (tenant, "")
  absl::flat_hash_map<std::string, uint64_t> db_rejected_;  // SQLSTATE codes: a bounded set
  absl::flat_hash_map<std::string, uint64_t> dlq_duplicates_;  // reason codes: a fixed set
};

// One unlabelled histogram family (HELP, TYPE, buckets in seconds, sum,
// count) in Prometheus text, for probes rendered outside the registry (the
// read side's stream).
void render_histogram_family(std::string& out, const std::string& name, const std::string& help,
                             const histogram::snapshot& s);

// Joins two label values into one map key.
inline constexpr char label_sep = '\x1f';

}  // namespace evpipe::pipeline
