#pragma once
// The stream clients of the stream tests (tests/integration/stream_*):
// a minimal Server-Sent Events client on a raw socket, and the two fields
// the tests read from an event message. For tests only: errors throw.

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>

namespace evpipe::testing {

using namespace std::chrono_literals;

// The string value of `"name":"…"` in a message as the stream writes it ("" when absent).
// Events of ~200 bytes or more that a stream client which reads nothing
// cannot all hold in the kernel's buffers: the server's send buffer grows up
// to tcp_wmem's maximum (4 MiB by default) while the hub writes into it.
inline size_t events_past_the_send_buffer() {
  size_t lo = 0, def = 0, max = 4u << 20;
  std::ifstream("/proc/sys/net/ipv4/tcp_wmem") >> lo >> def >> max;
  return std::max<size_t>(3000, max / 200 + 3000);
}

inline std::string field(const std::string& json, const std::string& name) {
  std::string tag = "\"" + name + "\":\"";
  auto at = json.find(tag);
  if (at == std::string::npos) return "";
  at += tag.size();
  return json.substr(at, json.find('"', at) - at);
}
// The idempotency key of the event in a message (jsonb's text: `"key": "value"`).
inline std::string key_in(const std::string& data) {
  const std::string tag = "\"idempotency_key\": \"";
  auto at = data.find(tag);
  if (at == std::string::npos) return "";
  at += tag.size();
  return data.substr(at, data.find('"', at) - at);
}

struct sse_frame {
  std::string id, event, data;
};

// A minimal SSE client on a raw socket.
class sse_client {
 public:
  sse_client(uint16_t port, const std::string& query, const std::string& headers = "Accept: text/event-stream\r\n",
             int rcvbuf = 0)
      : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    if (rcvbuf) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("connect");
    std::string req = "GET /v1/stream" + query + " HTTP/1.1\r\nHost: x\r\n" + headers + "\r\n";
    (void)::send(fd_, req.data(), req.size(), MSG_NOSIGNAL);
  }
  ~sse_client() { ::close(fd_); }
  // The status line and headers (reads them first).
  std::string head(std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (buf_.find("\r\n\r\n") == std::string::npos && fill(deadline)) {
    }
    auto end = buf_.find("\r\n\r\n");
    if (end == std::string::npos) return buf_;
    std::string h = buf_.substr(0, end + 4);
    buf_.erase(0, end + 4);
    return h;
  }
  std::string rest(std::chrono::milliseconds timeout = 5s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (fill(deadline)) {
    }
    return buf_;
  }
  // Heartbeat comments (": ping") that next() has skipped so far.
  [[nodiscard]] size_t pings() const { return pings_; }
  // The next frame with an event name (comments skipped); nullopt on timeout or close.
  std::optional<sse_frame> next(std::chrono::milliseconds timeout = 30s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto end = buf_.find("\n\n");
      if (end != std::string::npos) {
        std::string block = buf_.substr(0, end);
        buf_.erase(0, end + 2);
        sse_frame f;
        size_t start = 0;
        while (start <= block.size()) {
          size_t nl = block.find('\n', start);
          std::string line = block.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
          if (line.rfind("id: ", 0) == 0) f.id = line.substr(4);
          if (line.rfind("event: ", 0) == 0) f.event = line.substr(7);
          if (line.rfind("data: ", 0) == 0) f.data = line.substr(6);
          if (nl == std::string::npos) break;
          start = nl + 1;
        }
        if (!f.event.empty()) return f;
        if (block.rfind(": ping", 0) == 0) ++pings_;
        continue;
      }
      if (!fill(deadline)) return std::nullopt;
    }
  }

 private:
  bool fill(std::chrono::steady_clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  int fd_;
  std::string buf_;
  size_t pings_ = 0;
};

}  // namespace evpipe::testing
