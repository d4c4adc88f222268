#pragma once
// The operator's HTTP endpoint (Boost.Beast): GET /metrics (Prometheus text),
// GET /health/live (the process runs), GET /health/ready (every shard holds a
// working database connection, and the process is not draining). Keep-alive;
// one coroutine per connection, at most `max_connections` of them, each
// closed when a request's headers (or the next keep-alive request) do not
// arrive within `idle_timeout`.
//
// Lifecycle: start() binds (throws std::runtime_error on failure),
// set_draining() from the shutdown path (thread-safe), stop() closes the
// listener. Runs on the io_context it is given.

#include <memory>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "config/config.h"
#include "io/listener.h"
#include "pipeline/metrics.h"

namespace evpipe::io {

struct http_server_options {
  config::endpoint listen;
  uint32_t max_connections = 64;
  std::chrono::seconds idle_timeout{10};
  std::chrono::milliseconds max_commit_stall{2000};  // see metrics_registry::ready_state
  // What the sources say for /health/ready, called on each request from the
  // endpoint's thread: `not_ready` ones make it 503, the others are listed as
  // warnings. Empty: nothing to say.
  struct source_note {
    bool not_ready = false;
    std::string text;
  };
  std::function<std::vector<source_note>()> source_notes;
  // More Prometheus text appended to /metrics (the read side's stream probe),
  // called on the endpoint's thread. Empty: nothing.
  std::function<std::string()> extra_metrics;
};

class http_server {
 public:
  http_server(boost::asio::io_context& ioc, http_server_options opts, const pipeline::metrics_registry& metrics);
  void start();
  void stop();
  // From now on /health/ready answers 503 "draining"; /health/live stays 200.
  void set_draining() noexcept { draining_.store(true); }
  [[nodiscard]] uint16_t port() const noexcept { return port_; }

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket);

  boost::asio::io_context& ioc_;
  const http_server_options opts_;
  const pipeline::metrics_registry& metrics_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer accept_timer_;
  accept_pacer pacer_;
  std::atomic<bool> draining_{false};
  // Connections being served (on the io_context's one thread). Shared with each
  // connection's coroutine: frames still open when the io_context is destroyed
  // (after this object, at exit) count down here, not in freed memory.
  std::shared_ptr<uint32_t> open_ = std::make_shared<uint32_t>(0);
  uint16_t port_ = 0;
};

}  // namespace evpipe::io
