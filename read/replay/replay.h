#pragma once
// `evpipe replay`: committed events of events_mirror, in position order, to
// stdout as NDJSON or back into an evpipe source (TCP, MQTT through a
// broker, HTTP). Each event keeps its
// idempotency_key, so a replay into a pipeline that already holds it stores
// nothing twice. The last position is printed at the end (and on SIGINT or
// SIGTERM), so an interrupted replay continues from it with --since.
//
// Runs on the calling thread; one database connection, one output.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace evpipe::read {

struct replay_options {
  // A position (rows after it) or an ISO 8601 time (rows created at or after
  // it); given twice, one of each: both apply (a window resumed from a position).
  std::vector<std::string> since;
  std::string until;                // a position (rows up to it) or a time (rows created before it)
  std::vector<std::string> topics;  // MQTT-style filters; any of them
  std::vector<std::string> kinds;   // event kinds; any of them
  std::optional<std::string> tenant;  // only this tenant's events (docs/tenants.md)
  std::string to = "stdout";        // "stdout", tcp://host:port, mqtt://host:port[/topic-prefix], http://host:port/path
  double rate = 0;                  // events per second at most (0: as fast as possible)
  uint64_t max_rows = 0;            // stop after this many (0: the whole window)
  bool progress = true;             // a progress line on stderr every second
  // Secrets come from files, never from the command line (which any user
  // of the host can read in /proc), and are never printed.
  std::string mqtt_credentials_file;  // --to mqtt://: user name (first line) and password (second)
  std::string bearer_token_file;      // --to http://: a bearer token (first line)
};

// Exit codes: 0 done, 1 a database or output failure, 2 bad options,
// 130 interrupted (the last position was printed).
[[nodiscard]] int run_replay(const config::settings& s, const replay_options& o);

}  // namespace evpipe::read
