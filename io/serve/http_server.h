#pragma once
// The operator's HTTP endpoint (Boost.Beast): GET /metrics (Prometheus text),
// GET /health/live (the process runs), GET /health/ready (every shard holds a
// working database connection). Keep-alive; one coroutine per connection.
//
// Lifecycle: start() binds (throws std::runtime_error on failure), stop()
// closes the listener. Runs on the io_context it is given.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "config/config.h"
#include "pipeline/metrics.h"

namespace evpipe::io {

class http_server {
 public:
  http_server(boost::asio::io_context& ioc, config::endpoint listen, const pipeline::metrics_registry& metrics);
  void start();
  void stop();
  [[nodiscard]] uint16_t port() const noexcept { return port_; }

 private:
  boost::asio::io_context& ioc_;
  config::endpoint listen_;
  const pipeline::metrics_registry& metrics_;
  boost::asio::ip::tcp::acceptor acceptor_;
  uint16_t port_ = 0;
};

}  // namespace evpipe::io
