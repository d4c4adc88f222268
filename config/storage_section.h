#pragma once
// [storage]: how events_mirror and dlq_events are laid out (docs/partitions.md).
// Part of config::settings; parsed by detail::parse_storage()
// (config/reader.h, storage_section.cc).

#include <cstdint>
#include <string>

namespace evpipe::config {

struct storage_section {
  // "none" (one plain table each), or "day", "week" (Monday 00:00 UTC) or
  // "month": the tables are range-partitioned on created_at by `evpipe
  // migrate`, and `evpipe run` creates the partitions ahead of time.
  std::string partition = "none";
  // Partitions whose whole range is older than this are dropped; 0 = never.
  // Written as "<n>d", "<n>h" or "<n>w" ("30d").
  std::string retention;
  uint64_t retention_s = 0;
  uint32_t premake = 3;                  // partitions kept ready beyond the current one
  uint32_t check_interval_s = 300;       // pause between maintenance rounds
  uint32_t lock_timeout_ms = 500;        // longest a maintenance statement waits for a table lock (then retried)

  [[nodiscard]] bool partitioned() const { return partition != "none"; }
};

}  // namespace evpipe::config
