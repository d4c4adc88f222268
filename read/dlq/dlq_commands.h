#pragma once
// `evpipe dlq list | show ID | purge`: the operator's view of dlq_events.
// Filters combine with AND: --reason (reason_code, repeatable: any), --topic
// (MQTT-style filter on original_topic, repeatable: any), --since/--until
// (created_at >= / <, ISO 8601). `requeue` is not implemented yet
// (docs/read.md says what it must guarantee).
//
// Runs on the calling thread with one database connection; prints to
// stdout, errors to stderr.

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"

namespace evpipe::read {

struct dlq_options {
  std::vector<std::string> reasons;
  std::vector<std::string> topics;
  std::string since, until;
  bool json = false;      // list/show: one JSON object per line instead of a table
  uint64_t limit = 100;   // list: at most this many, newest first (0: all)
  bool dry_run = false;   // purge: count what would go, delete nothing
  bool yes = false;       // purge: no confirmation question
  int64_t id = 0;         // show
};

// Exit codes: 0 done, 1 a database failure, 2 bad options (or purge not
// confirmed), 3 show: no such dead letter.
[[nodiscard]] int run_dlq_list(const config::settings& s, const dlq_options& o);
[[nodiscard]] int run_dlq_show(const config::settings& s, const dlq_options& o);
[[nodiscard]] int run_dlq_purge(const config::settings& s, const dlq_options& o);

}  // namespace evpipe::read
