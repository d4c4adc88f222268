#pragma once
// The counters of partition maintenance (io/postgres/partitions.h), served
// on /metrics by pipeline/metrics.cc. Header-only atomics, one instance per
// process, so the metrics page needs no link to io/postgres.

#include <atomic>
#include <cstdint>

namespace evpipe::io {

struct partition_probe {
  std::atomic<uint64_t> created{0};          // partitions created ahead (or for rows found in the default one)
  std::atomic<uint64_t> dropped{0};          // partitions dropped as past [storage] retention
  std::atomic<uint64_t> rows_dropped{0};     // rows in them (PostgreSQL's estimate at the time of the drop)
  std::atomic<uint64_t> rows_moved{0};       // rows moved out of the default partition into a new one
  std::atomic<uint64_t> keys_pruned{0};      // evpipe_mirror_keys / evpipe_dlq_keys rows older than every row
  std::atomic<uint64_t> errors{0};           // maintenance statements that failed (busy lock, ...), then retried

  static partition_probe& instance() {
    static partition_probe p;
    return p;
  }
};

}  // namespace evpipe::io
