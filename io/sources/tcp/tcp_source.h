#pragma once
// Where events enter over TCP: newline-delimited JSON, one event a line.
//
// Per connection, lines are numbered from 1. Each read is framed into lines,
// every line is validated on this (I/O) thread and routed to its shard; when
// shards report outcomes after COMMIT, the connection writes back
// {"ack":N}\n, N being how many lines from the first all have a durable
// outcome. Acks are cumulative and coalesced: a line is never acked before its
// outcome is committed. With selective_acks (the default) an ack also names
// the runs of lines beyond N committed since the last ack,
// {"ack":N,"sack":[[a,b],...]}, so that a line committed by one shard need
// not wait for an earlier line in another. The connection stops reading while
// any shard queue is full or its own unacked lines reach `max_unacked`
// (backpressure, no drops).
//
// Lifecycle: start() binds; stop_reading() stops accepting and reading (lines
// already read still complete and are acked); close() closes every connection
// once its last ack is written. Runs on the io_context it is given; the
// public functions are thread-safe.

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
#include "stages/validate.h"

namespace evpipe::stages::tenant {
class binding;
}

namespace evpipe::io {

class tcp_connection;

class tcp_source final : public source {
 public:
  tcp_source(boost::asio::io_context& ioc, config::tcp_source cfg, pipeline::router& router,
             pipeline::source_probe& probe, stages::envelope_limits limits);
  ~tcp_source() override;

  // Binds and starts accepting; throws std::runtime_error naming the address.
  void start() override;
  [[nodiscard]] uint16_t port() const noexcept { return port_; }

  void stop_reading() override;
  void close() override;
  [[nodiscard]] size_t open_connections() override;
  [[nodiscard]] int reading_connections() const noexcept override { return reading_.load(); }
  [[nodiscard]] std::string describe() const override;

 private:
  void accept();

  boost::asio::io_context& ioc_;
  config::tcp_source cfg_;
  pipeline::router& router_;
  pipeline::source_probe& probe_;
  stages::envelope_limits limits_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer accept_timer_;  // pauses accepting while descriptors run out
  accept_pacer pacer_;
  uint16_t port_ = 0;
  std::atomic<int> reading_{0};
  bool refusal_logged_ = false;  // accept handler only
  connection_set<tcp_connection> conns_;
  std::shared_ptr<const stages::tenant::binding> tenancy_;  // null: tenancy off (docs/tenants.md)
};

}  // namespace evpipe::io
