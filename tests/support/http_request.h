#pragma once
// One HTTP/1.1 request on a fresh loopback connection, the response read to
// its end (Connection: close): for the integration tests of evpipe's HTTP
// endpoints. Not for protocol tests that need the raw bytes.

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "tests/support/harness.h"

namespace evpipe::testing {

struct http_reply {
  int status = 0;  // 0: no status line came
  std::string headers, body;
};

inline http_reply http_request(uint16_t port, const std::string& method, const std::string& path,
                               const std::string& body,
                               const std::string& extra_headers = "Content-Type: application/json\r\n") {
  int fd = connect_loopback(port);
  timeval tv{60, 0};  // a test must not hang on a missing answer
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra_headers +
                    "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  (void)::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string raw;
  char buf[65536];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) raw.append(buf, static_cast<size_t>(n));
  ::close(fd);
  http_reply r;
  if (raw.size() > 12) r.status = std::atoi(raw.c_str() + 9);
  auto end = raw.find("\r\n\r\n");
  r.headers = raw.substr(0, end);
  if (end != std::string::npos) r.body = raw.substr(end + 4);
  return r;
}

}  // namespace evpipe::testing
