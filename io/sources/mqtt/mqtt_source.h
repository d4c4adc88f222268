#pragma once
// Where events enter over MQTT: evpipe subscribes to a broker as an MQTT 3.1.1
// client (io/mqtt_codec for the bytes, this file for the session).
//
// Each configured connection is one persistent session (clean session off, a
// stable client id), subscribed at QoS 1, so the broker keeps messages while
// evpipe is away and redelivers those never acknowledged. A received PUBLISH
// is validated and routed like any other event, its topic being the MQTT
// topic; its PUBACK is written only once the shards report its outcome as
// committed, and PUBACKs leave in the order the PUBLISHes arrived (MQTT 3.1.1
// section 4.6). A connection stops reading while `max_inflight` messages are
// unacknowledged or a shard queue is full: the broker's own in-flight limit is
// not relied on. Lost connections are retried forever with exponential
// backoff and jitter; each state change is logged once.
//
// Threads: every session runs on its own strand of the io_context; the public
// functions are thread-safe.

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "io/source.h"
#include "pipeline/metrics.h"
#include "pipeline/router.h"
#include "stages/validate.h"

namespace boost::asio::ssl {
class context;
}

namespace evpipe::io {

class mqtt_session;
struct mqtt_shared;

class mqtt_source final : public source {
 public:
  mqtt_source(boost::asio::io_context& ioc, config::mqtt_source cfg, pipeline::router& router,
              pipeline::source_probe& probe, stages::envelope_limits limits);
  ~mqtt_source() override;

  // Starts the sessions; they connect in the background (an unreachable broker
  // is retried, not fatal). Throws when the TLS files cannot be loaded.
  void start() override;
  void stop_reading() override;
  void close() override;
  [[nodiscard]] int reading_connections() const noexcept override { return reading_.load(); }
  [[nodiscard]] size_t open_connections() override;
  [[nodiscard]] std::string describe() const override;

 private:
  boost::asio::io_context& ioc_;
  const config::mqtt_source cfg_;
  pipeline::router& router_;
  pipeline::source_probe& probe_;
  const stages::envelope_limits limits_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  std::unique_ptr<mqtt_shared> shared_;
  std::atomic<int> reading_{0};
  std::vector<std::shared_ptr<mqtt_session>> sessions_;
};

}  // namespace evpipe::io
