#pragma once
// SIGHUP: reloads the config file and applies what can change while evpipe
// runs (config/reload.h says what), on a thread of its own, so that the
// I/O threads go on while a changed source drains.
//
// Lifecycle: built by run_daemon once everything runs; request() from the
// signal handler (requests that arrive during a reload are coalesced into one
// more reload); stop() before the drain joins the thread.

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "app/live_sources.h"
#include "config/config.h"
#include "pipeline/metrics.h"
#include "pipeline/router.h"

namespace evpipe::app {

class config_reloader {
 public:
  config_reloader(std::string path, config::settings running, pipeline::router& router,
                  pipeline::metrics_registry& registry, live_sources& sources);
  ~config_reloader();
  config_reloader(const config_reloader&) = delete;
  config_reloader& operator=(const config_reloader&) = delete;

  void request();  // thread-safe
  void stop();     // waits for a reload under way, then joins

 private:
  void run();
  void reload_once();
  // Compiles next's [[routes]], checks their tables, and publishes them;
  // false (logged) leaves the running routes in place.
  bool reload_routes(const config::settings& next);
  void record(bool ok);

  std::string path_;
  config::settings running_;  // reload thread only
  pipeline::router& router_;
  pipeline::metrics_registry& registry_;
  live_sources& sources_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool pending_ = false, stopping_ = false;
  std::thread thread_;
};

}  // namespace evpipe::app
