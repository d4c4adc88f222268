#pragma once
// Where events enter over MQTT: evpipe subscribes to a broker as an MQTT 3.1.1
// client, or an MQTT 5 one with protocol = "5" (mqtt_codec / mqtt_codec_v5
// for the bytes, mqtt_link for a connection, this file for the session;
// docs/mqtt.md for the MQTT 5 choices).
//
// Each configured connection is one persistent session (clean session off, a
// stable client id), subscribed at QoS 1 (or `qos`), so the broker keeps
// messages while evpipe is away and redelivers those never acknowledged. A
// received PUBLISH is validated and routed like any other event, its topic
// being the MQTT topic; its PUBACK (PUBREC at QoS 2, then PUBCOMP on PUBREL)
// is written only once the shards report its outcome as committed, and
// acknowledgements leave in the order the PUBLISHes arrived (MQTT 3.1.1
// section 4.6). A connection stops reading while `max_inflight` messages are
// unacknowledged or a shard queue is full: the broker's own in-flight limit is
// not relied on. Lost connections are retried forever with exponential
// backoff and jitter; a connection that ends soon after CONNACK (a takeover by
// another client with the same id) or on a protocol violation by the broker
// is a failure too, so no broker behaviour makes evpipe reconnect at full
// speed. Each state change is logged once, repeats at debug level.
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
class mqtt_subscription_memory;
struct mqtt_shared;

// Warnings about a [[sources.mqtt]] that is valid but likely not what was
// meant; check-config prints them and start() logs them. One today: with
// dlq_publish, a topic filter that can match the DLQ prefix delivers evpipe's
// own dead-letter republishes back to it (they are acknowledged and dropped,
// never stored or republished again, but they still cost a round trip).
[[nodiscard]] std::vector<std::string> mqtt_config_warnings(const config::mqtt_source& cfg);

class mqtt_source final : public source {
 public:
  mqtt_source(boost::asio::io_context& ioc, config::mqtt_source cfg, pipeline::router& router,
              pipeline::source_probe& probe, stages::envelope_limits limits,
              mqtt_subscription_memory* memory = nullptr);  // outlives the source; null = nothing remembered
  ~mqtt_source() override;

  // Starts the sessions; they connect in the background (an unreachable broker
  // is retried, not fatal). Throws when the TLS files cannot be loaded.
  void start() override;
  void stop_reading() override;
  void close() override;
  [[nodiscard]] int reading_connections() const noexcept override { return reading_.load(); }
  [[nodiscard]] size_t open_connections() override;
  [[nodiscard]] std::string describe() const override;

  // For /health/ready, from any thread. Suggested reading: not ready while
  // connected < sessions, flapping > 0, or degraded_filters == filters (every
  // subscription refused or QoS 0); degraded_filters > 0 alone is a warning.
  struct readiness {
    size_t sessions = 0;
    size_t filters = 0;           // subscriptions asked for: sessions x topics
    size_t connected = 0;         // sessions with a CONNACK and a live connection
    size_t flapping = 0;          // sessions whose connections keep failing or ending soon after CONNACK
    int64_t degraded_filters = 0; // filters refused (SUBACK 0x80) or granted only QoS 0, over all sessions
                                  // (every filter of a session whose shared_group delivers nothing)
    size_t shared_silent = 0;     // sessions whose shared_group probe did not come back (broker without $share)
  };
  [[nodiscard]] readiness ready_state() const;

 private:
  boost::asio::io_context& ioc_;
  const config::mqtt_source cfg_;
  pipeline::router& router_;
  pipeline::source_probe& probe_;
  const stages::envelope_limits limits_;
  mqtt_subscription_memory* const memory_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  std::unique_ptr<mqtt_shared> shared_;
  std::atomic<int> reading_{0};
  std::vector<std::shared_ptr<mqtt_session>> sessions_;
};

}  // namespace evpipe::io
