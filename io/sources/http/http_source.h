#pragma once
// Where events enter over HTTP: POST /v1/events on a Beast listener.
//
// The body is one JSON event, a JSON array of events (Content-Type
// application/json) or NDJSON (application/x-ndjson). Each event is validated
// and routed like any other; the response is written only once every event of
// the request has a committed outcome: 200 with counts and one result per
// event, in request order ({"outcome":"ok"}, "duplicate", or "dlq" with the
// reason code). Other answers: 400 (body in none of those forms, bad
// X-Topic), 401 (bearer token configured and missing or wrong), 404, 405,
// 413 (body over max_body_bytes), 415 (other content types), 431 (headers over
// max_header_bytes), 503 with Retry-After (shard queues full, or shutting
// down). The topic is the X-Topic header if given, else the event's `topic`
// field, else the listener's default. Keep-alive connections are served until
// idle for idle_timeout_s, which answers announce (Keep-Alive: timeout=N).
//
// Bodies may be sent with Content-Encoding gzip or deflate (content_coding.h);
// max_body_bytes bounds the decoded size too. Other codings get 415. A leading
// UTF-8 byte order mark is ignored. After an error answer to a request whose
// body was not read, the connection reads and drops what the client still
// sends for a bounded time (a lingering close), so that the client sees the
// status rather than a reset.
//
// Browsers: with cors_allow_origins set, OPTIONS /v1/events answers CORS
// preflights, every answer to a listed Origin carries
// Access-Control-Allow-Origin, and text/plain bodies (sendBeacon, fetch
// without a preflight) are taken as JSON or NDJSON, from listed origins only
// (403 for others, which a browser would otherwise let write events without
// asking).
//
// Threads: each connection runs on its own strand; the public functions are
// thread-safe.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <memory>
#include <vector>

#include "config/config.h"
#include "io/connection_set.h"
#include "io/listener.h"
#include "io/source.h"
#include "pipeline/metrics.h"
#include "pipeline/router.h"
#include "stages/tenant/binding.h"
#include "stages/validate.h"

namespace evpipe::io {

class http_connection;

class http_source final : public source {
 public:
  http_source(boost::asio::io_context& ioc, config::http_source cfg, pipeline::router& router,
              pipeline::source_probe& probe, stages::envelope_limits limits);
  ~http_source() override;

  void start() override;
  [[nodiscard]] uint16_t port() const noexcept { return port_; }
  void stop_reading() override;
  void close() override;
  [[nodiscard]] int reading_connections() const noexcept override { return reading_.load(); }
  [[nodiscard]] size_t open_connections() override;
  [[nodiscard]] std::string describe() const override;
  // A reload that changed only this source's tenancy (tokens, tenant,
  // allowed_tenants; docs/tenants.md): the new binding applies from each
  // connection's next request on; no connection is closed. Thread-safe.
  void set_tenancy(const config::source_tenancy& next);

 private:
  void accept();

  boost::asio::io_context& ioc_;
  const config::http_source cfg_;
  pipeline::router& router_;
  pipeline::source_probe& probe_;
  const stages::envelope_limits limits_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer accept_timer_;  // pauses accepting while descriptors run out
  accept_pacer pacer_;
  uint16_t port_ = 0;
  std::atomic<int> reading_{0};
  std::atomic<bool> stopping_{false};
  connection_set<http_connection> conns_;
  // What its connections check tokens against, swapped by set_tenancy().
  std::shared_ptr<stages::tenant::binding_slot> tenancy_;
};

}  // namespace evpipe::io
