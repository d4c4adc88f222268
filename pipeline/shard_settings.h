#pragma once
// The shard options a config asks for, shared by `evpipe run` (app/daemon.cc)
// and `evpipe dlq requeue` (read/dlq), which runs shards of its own. Header
// only: its users link evpipe::config themselves.

#include <chrono>

#include "config/config.h"
#include "pipeline/shard.h"

namespace evpipe::pipeline {

[[nodiscard]] inline shard_options shard_options_from(const config::settings& s) {
  shard_options opts;
  opts.max_rows = s.batch.max_rows;
  opts.max_bytes = s.batch.max_bytes;
  opts.linger = std::chrono::milliseconds(s.batch.linger_ms);
  opts.window_keys = s.dedup.window_keys;
  opts.retry_base = std::chrono::milliseconds(s.postgres.retry_base_ms);
  opts.retry_max = std::chrono::milliseconds(s.postgres.retry_max_ms);
  opts.max_attempts = s.postgres.max_attempts;
  return opts;
}

}  // namespace evpipe::pipeline
