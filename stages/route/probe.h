#pragma once
// Per-route counters for /metrics (docs/routes.md, "Metrics"): rows appended,
// rows upserted, messages skipped as older, messages that did not fit the
// route (route_mismatch). One process-wide probe keyed by the route's name,
// so that a reload that keeps a route keeps its counts; route names come from
// the config, so the label has a bounded set of values.
//
// Counters are relaxed atomics: intake (I/O threads) bumps `mismatched`, the
// sinks (shard threads) add the others after their transaction commits, the
// metrics scrape reads them.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace evpipe::stages::route {

struct route_counts {
  std::atomic<uint64_t> appended{0};       // rows COPYed into an append route's table
  std::atomic<uint64_t> upserted{0};       // rows an upsert inserted or updated
  std::atomic<uint64_t> skipped_older{0};  // upsert messages that changed nothing (not newer than the stored row, or than another message of their batch)
  std::atomic<uint64_t> mismatched{0};     // messages dead-lettered as route_mismatch by this route (each delivery)
};

class route_probe {
 public:
  [[nodiscard]] static route_probe& instance();
  // The counts of the route called `name`, created on first use; the
  // reference stays valid for the life of the process.
  [[nodiscard]] route_counts& of(const std::string& name);

  struct row {
    std::string route;
    uint64_t appended, upserted, skipped_older, mismatched;
  };
  // Every route seen so far, by name.
  [[nodiscard]] std::vector<row> snapshot() const;

  // evpipe_route_keys pruning (io/postgres/route_keys_pruner.h), process-wide.
  std::atomic<uint64_t> keys_pruned{0};        // keys deleted as older than [route_keys] retention_s
  std::atomic<uint64_t> keys_prune_errors{0};  // pruning rounds that failed (connection, timeout, missing table)

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<route_counts>> by_name_;
};

}  // namespace evpipe::stages::route
