#pragma once
// Events and probes shared by the integration tests: envelopes with stable
// trace ids, and a plain HTTP GET for /metrics and health.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <string>

namespace evpipe::testing {

inline std::string uuid_for(uint32_t i) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-0000-4000-8000-%012llx", i, static_cast<unsigned long long>(i) * 7);
  return buf;
}

inline std::string valid_event(const std::string& key, const std::string& text = "plain", const std::string& extra = "") {
  return "{\"trace_id\":\"" + uuid_for(static_cast<uint32_t>(std::hash<std::string>{}(key))) +
         "\",\"ts\":\"2025-01-15T10:30:00.123+02:00\",\"kind\":\"project_created\",\"idempotency_key\":\"" + key +
         "\",\"payload\":{\"text\":\"" + text + "\",\"n\":[1,2.5,-3e2,true,null]}" + extra + "}";
}

inline std::string http_get(uint16_t port, const std::string& path) {
  std::string out;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return "";
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  (void)::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, n);
  ::close(fd);
  return out;
}

// The value of one sample ("name" or "name{labels}") in a /metrics body; -1 if absent.
inline double metric_value(const std::string& metrics, const std::string& sample) {
  auto at = metrics.find("\n" + sample + " ");
  if (at == std::string::npos) return -1;
  return std::stod(metrics.substr(at + sample.size() + 2));
}

// The sum of every series of the family `name` (labelled or not); -1 when
// it has none.
inline double metric_family_sum(const std::string& metrics, const std::string& name) {
  double sum = 0;
  bool any = false;
  for (size_t at = 0; at < metrics.size();) {
    size_t end = metrics.find('\n', at);
    if (end == std::string::npos) end = metrics.size();
    std::string_view line(metrics.data() + at, end - at);
    if (line.starts_with(name + "{") || line.starts_with(name + " ")) {
      sum += std::stod(std::string(line.substr(line.rfind(' ') + 1)));
      any = true;
    }
    at = end + 1;
  }
  return any ? sum : -1;
}

}  // namespace evpipe::testing
