#pragma once
// GET /v1/stream: a WebSocket upgrade goes to read/stream/ws_session; else
// Server-Sent Events (Boost.Beast parsing, one thread per client, at most
// max_clients of either kind): query parameters `topics` and `kinds`
// (comma-separated or repeated), `since` = a position, "now" (the default)
// or an ISO 8601 time; a `Last-Event-ID` header (what EventSource sends when
// it reconnects) wins over `since`. Every event's SSE `id:` is its position,
// so a client resumes with no gap and no repeat. `caught_up` carries the
// tail's position as its id too. Errors are JSON bodies with a 4xx/5xx
// status; a bad `since` time ends the stream with an `error` event.
//
// GET / serves the page (read/stream/page.html, embedded) that watches the
// stream, and GET /v1/metrics the daemon's /metrics text for it (same
// origin; behind the bearer token when one is set).
//
// Lifecycle: constructed (binds, throws std::runtime_error when it cannot),
// start(), stop() (closes every client, joins). The hub outlives it.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "read/stream/stream_hub.h"
#include "stages/tenant/token_table.h"

namespace evpipe::read {

class sse_server {
 public:
  sse_server(const config::stream_section& cfg, stream_hub& hub);
  ~sse_server();
  sse_server(const sse_server&) = delete;
  sse_server& operator=(const sse_server&) = delete;

  // What GET /v1/metrics answers (the daemon's whole /metrics); without it,
  // the stream's own metrics. Set before start(); called on client threads.
  void set_metrics_text(std::function<std::string()> fn) { metrics_text_ = std::move(fn); }
  void start();
  void stop();
  [[nodiscard]] uint16_t port() const { return port_; }

 private:
  void accept_loop();
  void serve(int fd, uint64_t session);

  config::stream_section cfg_;
  // The tokens, looked up in constant time in the secrets (token_table):
  // tokens_file's (each bound to its tenant) and bearer_token (bound to none).
  stages::tenant::token_table tenant_tokens_, bearer_token_;
  stream_hub& hub_;
  std::function<std::string()> metrics_text_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<uint32_t> active_{0};
  std::mutex mu_;
  std::map<uint64_t, std::thread> sessions_;  // running or finished, joined by the acceptor
  std::vector<uint64_t> finished_;
  std::set<int> fds_;                         // open client sockets, shut down by stop()
  // What wakes each waiting SSE client's thread, for stop(): an idle client
  // sleeps until its next heartbeat otherwise.
  std::map<uint64_t, std::function<void()>> sse_wakes_;
  uint64_t next_session_ = 1;
  std::thread acceptor_;
};

}  // namespace evpipe::read
