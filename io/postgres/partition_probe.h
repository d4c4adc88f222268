#pragma once
// The counters of partition maintenance (io/postgres/partitions.h), served
// on /metrics by pipeline/metrics.cc, one series per partitioned table
// (label table: events_mirror, dlq_events and the routes' partition_by
// tables, a set the config bounds). Header-only, one instance per process,
// so the metrics page needs no link to io/postgres. The maintenance thread
// adds; the metrics page reads. A table's counters, once made, live as long
// as the process (their addresses stay valid).

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace evpipe::io {

struct partition_counters {
  std::atomic<uint64_t> created{0};          // partitions created ahead (or for rows found in the default one)
  std::atomic<uint64_t> dropped{0};          // partitions dropped as past [storage] retention
  std::atomic<uint64_t> rows_dropped{0};     // rows in them, and DEFAULT-partition rows past the retention
  std::atomic<uint64_t> rows_moved{0};       // rows moved out of the default partition into a new one
  std::atomic<uint64_t> keys_pruned{0};      // evpipe_mirror_keys / evpipe_dlq_keys rows older than every row
  std::atomic<uint64_t> errors{0};           // maintenance rounds that failed on the table (busy lock, ...), then retried
};

class partition_probe {
 public:
  static partition_probe& instance() {
    static partition_probe p;
    return p;
  }
  // The counters of `table` (as evpipe names it: "events_mirror",
  // "ingest.telemetry"), made at the first call.
  partition_counters& of(const std::string& table) {
    std::lock_guard lock(mu_);
    auto& slot = tables_[table];
    if (!slot) slot = std::make_unique<partition_counters>();
    return *slot;
  }
  // Every table's counters, in name order.
  void each(const std::function<void(const std::string&, const partition_counters&)>& f) const {
    std::lock_guard lock(mu_);
    for (const auto& [name, c] : tables_) f(name, *c);
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<partition_counters>> tables_;
};

}  // namespace evpipe::io
