#pragma once
// The running sources, as the config says: built at start, changed by a
// reload (SIGHUP) one source at a time, stopped by the drain.
//
// A reload stops each source that was removed or changed (it stops reading,
// its connections write their last acks and close, as in a drain), then
// starts each new or changed one; a source whose settings did not change is
// not touched, and its connections stay open. A stopped source is kept, not
// destroyed, until the process ends: batches in the shards may still point
// at its connections.
//
// Thread-safe: the reload thread and the drain thread call it; one mutex
// serialises them, and once the drain began a reload changes nothing.

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "config/reload.h"
#include "io/serve/http_server.h"
#include "io/source.h"
#include "pipeline/metrics.h"
#include "pipeline/router.h"
#include "stages/validate.h"

namespace evpipe::io {
class mqtt_source;
class mqtt_subscription_memory;
class nats_source;
class tcp_source;
}  // namespace evpipe::io

namespace evpipe::app {

class live_sources {
 public:
  // `mqtt_memory` (may be null: then MQTT sources remember no subscriptions)
  // outlives this object.
  live_sources(boost::asio::io_context& ioc, pipeline::router& router, pipeline::metrics_registry& registry,
               stages::envelope_limits limits, io::mqtt_subscription_memory* mqtt_memory);
  ~live_sources();

  // Builds and starts every source of `s`; throws std::runtime_error as a
  // source's start() does (start-up fails then).
  void start_all(const config::settings& s);
  // From now on, probes for new kinds are added through `run_there`, which
  // runs a function where /metrics is rendered (so that a probe added by a
  // reload never races a scrape) and returns once it ran.
  void set_metrics_thread(std::function<void(std::function<void()>)> run_there);

  // Applies a reload's source changes. `effective` is the plan's (its source
  // lists are the new config's): a source that fails to start is logged and
  // taken out of it. Returns how many failed to start (-1: draining, nothing
  // changed).
  int apply(const config::reload_plan& plan, config::settings& effective, std::chrono::milliseconds stop_budget);
  // Before apply(): each HTTP source that `ch` would stop and start again
  // although only its tenancy changed (its tokens file's contents, tenant,
  // allowed_tenants) gets the new binding in place instead, and moves to
  // `ch.keep`: its connections stay open (docs/tenants.md). `running` is the
  // running sources' config, in this object's order. Returns how many.
  size_t swap_http_tenancy(config::source_changes& ch, const std::vector<config::http_source>& running,
                           const std::vector<config::http_source>& next);

  // The drain: stop reading everywhere; wait until no connection reads; close
  // once the last acks are out (or at the deadline).
  void stop_reading_all();
  void wait_not_reading(std::chrono::steady_clock::time_point deadline);
  void close_all(std::chrono::steady_clock::time_point ack_deadline);

  // One line per source for the start-up log.
  [[nodiscard]] std::vector<std::string> describe();
  // The first TCP source's port at start (tests read it); 0 without one.
  [[nodiscard]] uint16_t first_tcp_port() const noexcept { return first_tcp_port_; }
  // /health/ready's notes about MQTT sessions (called on the metrics thread).
  [[nodiscard]] std::vector<io::http_server_options::source_note> mqtt_notes();
  // The same about NATS sources (connection, consumers bound).
  [[nodiscard]] std::vector<io::http_server_options::source_note> nats_notes();

 private:
  // The probe of the source of `kind` at `address`: the one it had before a
  // reload restarted it (its counters go on), else a new one.
  pipeline::source_probe& probe_for(const std::string& kind, const std::string& address);
  // A source stopped for good: its probe leaves /health/ready (its counts stay in the metrics).
  void retire_probe(const io::source& src);
  std::unique_ptr<io::source> make_tcp(const config::tcp_source& c);
  std::unique_ptr<io::source> make_mqtt(const config::mqtt_source& c);
  std::unique_ptr<io::source> make_http(const config::http_source& c);
  std::unique_ptr<io::source> make_nats(const config::nats_source& c);
  // Starts a source, retrying a few times while its address is still held by
  // the source it replaces; nullptr (logged) when it cannot start.
  std::unique_ptr<io::source> start_one(const std::function<std::unique_ptr<io::source>()>& make,
                                        const std::string& what);
  void stop_one(io::source& src, std::chrono::milliseconds budget);

  boost::asio::io_context& ioc_;
  pipeline::router& router_;
  pipeline::metrics_registry& registry_;
  stages::envelope_limits limits_;
  io::mqtt_subscription_memory* mqtt_memory_;
  std::function<void(std::function<void()>)> on_metrics_thread_;

  std::mutex mu_;
  bool draining_ = false;
  // In the order of the running config's lists, so that a plan's indices
  // apply to them.
  std::vector<std::unique_ptr<io::source>> tcp_, mqtt_, http_;
  // [[sources.nats]]: started with the others, changed only by a restart
  // (config/reload.cc names it in the reload's kept settings).
  std::vector<std::unique_ptr<io::source>> nats_;
  std::vector<std::unique_ptr<io::source>> retired_;
  std::unordered_map<const io::source*, pipeline::source_probe*> probe_of_;
  uint16_t first_tcp_port_ = 0;

  std::mutex notes_mu_;  // guards mqtt_list_ (read by the metrics thread)
  std::vector<std::pair<io::mqtt_source*, std::string>> mqtt_list_;  // (source, its url)
};

}  // namespace evpipe::app
