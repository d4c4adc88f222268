#pragma once
// `evpipe dlq list | show ID | requeue | purge`: the operator's view of
// dlq_events. Filters combine with AND: --reason (reason_code, repeatable:
// any; an unknown code is refused), --topic (MQTT-style filter on
// original_topic, repeatable: any), --since/--until (created_at >= / <, ISO
// 8601).
//
// list, show and purge run on the calling thread with one database
// connection; requeue also runs shards of its own (dlq_requeue.cc). They
// print to stdout, errors and progress to stderr.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace evpipe::read {

struct dlq_options {
  std::vector<std::string> reasons;
  std::vector<std::string> topics;
  std::string since, until;
  std::optional<std::string> tenant;  // --tenant: only this tenant's dead letters (docs/tenants.md)
  bool json = false;      // list/show: one JSON object per line instead of a table
  uint64_t limit = 100;   // list: at most this many, newest first (0: all)
  bool dry_run = false;   // purge, requeue: say what would happen, change nothing
  bool yes = false;       // purge: no confirmation question
  int64_t id = 0;         // show
};

// Exit codes: 0 done, 1 a database failure, 2 bad options (or purge not
// confirmed), 3 show: no such dead letter.
[[nodiscard]] int run_dlq_list(const config::settings& s, const dlq_options& o);
[[nodiscard]] int run_dlq_show(const config::settings& s, const dlq_options& o);
[[nodiscard]] int run_dlq_purge(const config::settings& s, const dlq_options& o);
// Sends the selected dead letters through validation, dedup and the write
// again; each one's row is deleted in the transaction that commits its new
// outcome (docs/read.md). too_large dead letters are left alone (only a
// prefix is stored). Also 130: interrupted (what was handed over is
// committed first; the rest stays in dlq_events).
[[nodiscard]] int run_dlq_requeue(const config::settings& s, const dlq_options& o);

}  // namespace evpipe::read
