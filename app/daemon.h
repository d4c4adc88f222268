#pragma once
// The `run` command: the one place where sources, shards, sinks and the HTTP
// endpoint are built from the configuration and wired together.

#include <atomic>
#include <functional>
#include <string>

#include "config/config.h"

namespace evpipe::app {

struct run_hooks {
  // Called once every listener is bound (tests read the ports from it).
  std::function<void(uint16_t first_tcp_port, uint16_t http_port)> on_listening;
  // The file `settings` came from: SIGHUP reloads it. "" = SIGHUP is ignored.
  std::string config_path;
};

// Runs until SIGINT/SIGTERM, then drains and returns the exit code. Startup
// problems (database unreachable, port taken) print one line and return 1.
int run_daemon(const config::settings& settings, const run_hooks& hooks = {});

// `migrate`: applies schemas/events.sql and builds the indexes of schemas/schema.h. Returns the exit code.
int migrate(const config::settings& settings);

}  // namespace evpipe::app
