#pragma once
// What a reload (SIGHUP) changes while evpipe runs: computed from the running
// settings and the newly loaded ones, applied by app/daemon.cc.
//
// Live: the sources (added, removed, changed: a changed source is stopped and
// started again, the others keep their connections), [batch], [pipeline]
// queue_capacity, [log], [events] (the limits, from each connection's next
// read; no connection is closed for them), [schemas] and [[routes]] (from
// each connection's next read; events read before finish under the routes
// they were taken with). Everything else (the shards, the database, the
// metrics endpoint, ...) keeps its running value until a restart and is named
// in `kept`, so that the operator sees it in one log line.

#include <string>
#include <utility>
#include <vector>

#include "config/config.h"

namespace evpipe::config {

// Which sources of one kind stop, start or stay across a reload. A source
// whose settings (including a token or password read from its file) are equal
// in both stays, and its connections stay open.
struct source_changes {
  std::vector<size_t> stop;                     // indices into the running list
  std::vector<size_t> start;                    // indices into the new list
  std::vector<std::pair<size_t, size_t>> keep;  // (running index, new index)
  [[nodiscard]] bool any() const { return !stop.empty() || !start.empty(); }
};

struct reload_plan {
  source_changes tcp, mqtt, http;
  bool batch = false;  // [batch] differs
  bool queue = false;  // [pipeline] queue_capacity differs
  bool log = false;    // [log] differs
  bool events = false; // [events] differs: the limits apply to the next read of every connection
  bool routes = false; // [[routes]] differ: app/reload.cc compiles and checks them, then publishes them
  bool tenant_quotas = false;  // [tenants] events_per_s/burst/quotas differ: a new quota book is published (docs/tenants.md)
  // Keys that differ but apply only after a restart ("[pipeline] shards");
  // values are not listed, since some hold secrets.
  std::vector<std::string> kept;
  // What runs after the reload: the running settings with the live parts
  // taken from the new ones (sources are adjusted by the daemon when one
  // fails to start).
  settings effective;
};

[[nodiscard]] reload_plan plan_reload(const settings& running, const settings& next);

// Pairs equal sources of one kind (each running one with at most one new one).
template <class T>
[[nodiscard]] source_changes diff_sources(const std::vector<T>& running, const std::vector<T>& next) {
  source_changes c;
  std::vector<bool> taken(next.size(), false);
  for (size_t i = 0; i < running.size(); ++i) {
    bool kept = false;
    for (size_t j = 0; j < next.size() && !kept; ++j) {
      if (!taken[j] && running[i] == next[j]) {
        taken[j] = kept = true;
        c.keep.emplace_back(i, j);
      }
    }
    if (!kept) c.stop.push_back(i);
  }
  for (size_t j = 0; j < next.size(); ++j) {
    if (!taken[j]) c.start.push_back(j);
  }
  return c;
}

}  // namespace evpipe::config
