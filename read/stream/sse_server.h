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
// Lifecycle: constructed (binds, throws std::runtime_error when it cannot),
// start(), stop() (closes every client, joins). The hub outlives it.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "read/stream/stream_hub.h"

namespace evpipe::read {

class sse_server {
 public:
  sse_server(const config::stream_section& cfg, stream_hub& hub);
  ~sse_server();
  sse_server(const sse_server&) = delete;
  sse_server& operator=(const sse_server&) = delete;

  void start();
  void stop();
  [[nodiscard]] uint16_t port() const { return port_; }

 private:
  void accept_loop();
  void serve(int fd, uint64_t session);

  config::stream_section cfg_;
  stream_hub& hub_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<uint32_t> active_{0};
  std::mutex mu_;
  std::map<uint64_t, std::thread> sessions_;  // running or finished, joined by the acceptor
  std::vector<uint64_t> finished_;
  std::set<int> fds_;                         // open client sockets, shut down by stop()
  uint64_t next_session_ = 1;
  std::thread acceptor_;
};

}  // namespace evpipe::read
