#include "load/wire.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>

#include "io/sources/mqtt/mqtt_codec.h"

namespace evpipe::load {

namespace mqtt = evpipe::io::mqtt;

target parse_target(const std::string& url) {
  target t;
  t.text = url;
  std::string rest;
  auto scheme_end = url.find("://");
  std::string scheme = scheme_end == std::string::npos ? "" : url.substr(0, scheme_end);
  if (scheme == "tcp") {
    t.kind = target_kind::tcp;
  } else if (scheme == "mqtt") {
    t.kind = target_kind::mqtt;
  } else if (scheme == "mqtt-serve") {
    t.kind = target_kind::mqtt_serve;
  } else if (scheme == "http") {
    t.kind = target_kind::http;
  } else if (scheme == "nats") {
    t.kind = target_kind::nats;
  } else {
    throw std::invalid_argument("target must be tcp://host:port, mqtt://host:port, mqtt-serve://host:port, "
                                "http://host:port/v1/events or nats://host:port, got \"" + url + "\"");
  }
  rest = url.substr(scheme_end + 3);
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    if (t.kind != target_kind::http) throw std::invalid_argument("only http:// targets take a path: " + url);
    t.path = rest.substr(slash);
    rest = rest.substr(0, slash);
  }
  auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon + 1 == rest.size()) {
    throw std::invalid_argument("target needs host:port: " + url);
  }
  t.host = rest.substr(0, colon);
  t.port = rest.substr(colon + 1);
  if (!t.host.empty() && t.host.front() == '[') t.host = t.host.substr(1, t.host.size() - 2);
  return t;
}

namespace {

int connect_socket(const target& t) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(t.host.c_str(), t.port.c_str(), &hints, &res) != 0) {
    throw std::runtime_error("cannot resolve " + t.host);
  }
  int fd = ::socket(res->ai_family, SOCK_STREAM, 0);
  int rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0) {
    ::close(fd);
    throw std::runtime_error("cannot connect to " + t.text + ": " + std::strerror(errno));
  }
  return fd;
}

void send_bytes(int fd, const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) throw std::runtime_error(std::string("send: ") + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
}

// Reads one whole MQTT packet (handshakes only); `buf` keeps what follows.
mqtt::frame read_packet(int fd, std::string& buf, double timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    mqtt::frame f;
    auto st = mqtt::read_frame(buf, 1 << 20, f);
    if (st == mqtt::decode_status::ok) return f;
    if (st != mqtt::decode_status::need_more) throw std::runtime_error("malformed MQTT packet in the handshake");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      throw std::runtime_error("MQTT handshake timed out");
    }
    char tmp[4096];
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) throw std::runtime_error("connection closed during the MQTT handshake");
    buf.append(tmp, static_cast<size_t>(n));
  }
}

// The one listening socket of mqtt-serve, shared by its connections.
int serve_listener(const target& t) {
  static std::mutex mu;
  static int fd = -1;
  std::lock_guard lock(mu);
  if (fd >= 0) return fd;
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  if (getaddrinfo(t.host.c_str(), t.port.c_str(), &hints, &res) != 0) throw std::runtime_error("cannot resolve " + t.host);
  fd = ::socket(res->ai_family, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int rc = ::bind(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0 || ::listen(fd, 16) != 0) {
    ::close(fd);
    fd = -1;
    throw std::runtime_error("cannot listen on " + t.text + ": " + std::strerror(errno));
  }
  return fd;
}

class ndjson_wire final : public wire {
 public:
  void add(uint64_t, std::string_view event, std::string& out) override {
    out += event;
    out += '\n';
  }
  uint64_t on_bytes(std::string& in, uint64_t acked, std::string&) override {
    size_t nl;
    size_t at = 0;
    while ((nl = in.find('\n', at)) != std::string::npos) {
      auto colon = in.find(':', at);
      if (colon < nl) acked = std::strtoull(in.c_str() + colon + 1, nullptr, 10);
      const std::string_view line(in.data() + at, nl - at);
      const size_t sack = line.find("\"sack\":[");
      if (sack != std::string_view::npos) {
        // The runs end at the array's "]]".
        const size_t end = line.find("]]", sack);
        if (end != std::string_view::npos) parse_runs(line.data() + sack + 8, line.data() + end + 1);
      }
      at = nl + 1;
    }
    in.erase(0, at);
    return acked;
  }
  void take_selective(std::vector<std::pair<uint64_t, uint64_t>>& out) override {
    out.insert(out.end(), runs_.begin(), runs_.end());
    runs_.clear();
  }

 private:
  // [[a,b],[c,d],...] of lines from 1, up to `end`.
  void parse_runs(const char* p, const char* end) {
    while (p < end) {
      while (p < end && (*p < '0' || *p > '9')) ++p;
      if (p >= end) return;
      char* q = nullptr;
      uint64_t a = std::strtoull(p, &q, 10);
      p = q;
      while (p < end && (*p < '0' || *p > '9')) ++p;
      if (p >= end || a == 0) return;
      uint64_t b = std::strtoull(p, &q, 10);
      p = q;
      if (b >= a) runs_.emplace_back(a - 1, b - 1);
    }
  }
  std::vector<std::pair<uint64_t, uint64_t>> runs_;
};

class mqtt_wire final : public wire {
 public:
  explicit mqtt_wire(std::string topic) : topic_(std::move(topic)) {}
  void add(uint64_t idx, std::string_view event, std::string& out) override { add_on_topic(idx, topic_, event, out); }
  void add_on_topic(uint64_t idx, std::string_view topic, std::string_view event, std::string& out) override {
    mqtt::publish_packet p;
    p.topic = topic;
    p.payload = event;
    p.qos = 1;
    p.packet_id = static_cast<uint16_t>(idx % 65535 + 1);
    mqtt::encode_publish(out, p);
  }
  uint64_t on_bytes(std::string& in, uint64_t acked, std::string& reply) override {
    size_t used = 0;
    for (;;) {
      mqtt::frame f;
      auto st = mqtt::read_frame(std::string_view(in).substr(used), 1 << 20, f);
      if (st == mqtt::decode_status::need_more) break;
      if (st != mqtt::decode_status::ok) throw std::runtime_error("malformed MQTT packet from the endpoint");
      used += f.size;
      if (f.type == mqtt::packet_type::puback) {
        ++acked;  // in publish order (MQTT 3.1.1 section 4.6)
      } else if (f.type == mqtt::packet_type::pingreq) {
        mqtt::encode_pingresp(reply);
      } else if (f.type == mqtt::packet_type::disconnect) {
        throw std::runtime_error("the MQTT peer disconnected");
      }
    }
    in.erase(0, used);
    return acked;
  }
  // Packet ids must not be reused while unacknowledged.
  [[nodiscard]] uint64_t max_in_flight() const override { return 65000; }

 private:
  std::string topic_;
};

class http_wire final : public wire {
 public:
  http_wire(const target& t, std::string token, uint64_t batch)
      : head_("POST " + t.path + " HTTP/1.1\r\nHost: " + t.host + ":" + t.port +
              "\r\nContent-Type: application/x-ndjson\r\n" +
              (token.empty() ? std::string() : "Authorization: Bearer " + token + "\r\n")),
        batch_(batch) {}
  void add(uint64_t, std::string_view event, std::string&) override {
    body_ += event;
    body_ += '\n';
  }
  void finish(std::string& out) override {
    if (body_.empty()) return;
    out += head_;
    out += "Content-Length: " + std::to_string(body_.size()) + "\r\n\r\n";
    out += body_;
    body_.clear();
  }
  uint64_t on_bytes(std::string& in, uint64_t acked, std::string&) override {
    for (;;) {
      auto end = in.find("\r\n\r\n");
      if (end == std::string::npos) return acked;
      std::string_view head(in.data(), end);
      size_t length = 0;
      for (auto at = head.find("\r\n"); at != std::string_view::npos; at = head.find("\r\n", at + 2)) {
        std::string_view line = head.substr(at + 2, head.find("\r\n", at + 2) - at - 2);
        if (line.size() > 15 && strncasecmp(line.data(), "content-length:", 15) == 0) {
          length = std::strtoull(std::string(line.substr(15)).c_str(), nullptr, 10);
        }
      }
      if (in.size() < end + 4 + length) return acked;
      int status = head.size() > 12 ? std::atoi(head.data() + 9) : 0;
      std::string body = in.substr(end + 4, length);
      in.erase(0, end + 4 + length);
      if (status != 200) throw std::runtime_error("HTTP " + std::to_string(status) + ": " + body);
      auto at = body.find("\"accepted\":");
      if (at == std::string::npos) throw std::runtime_error("HTTP 200 without \"accepted\": " + body);
      acked += std::strtoull(body.c_str() + at + 11, nullptr, 10);
    }
  }
  [[nodiscard]] uint64_t max_group() const override { return batch_; }
  [[nodiscard]] bool one_group_at_a_time() const override { return true; }

 private:
  std::string head_;
  std::string body_;
  uint64_t batch_;
};

// Publishes into a JetStream stream with the NATS text protocol: each PUB
// names this connection's inbox as its reply subject, and the stream's
// publish ack ({"stream":..,"seq":N}) comes back there as a MSG once the
// message is stored. One stream on one connection acks in publish order.
class nats_wire final : public wire {
 public:
  explicit nats_wire(std::string topic) : subject_(std::move(topic)) {
    // An MQTT-style topic names the subject: tracker/events/load -> tracker.events.load.
    for (char& c : subject_) c = c == '/' ? '.' : c;
    static std::atomic<int> next{0};
    inbox_ = "_INBOX.evpipe_load_" + std::to_string(::getpid()) + "_" + std::to_string(++next);
  }
  void add(uint64_t idx, std::string_view event, std::string& out) override { add_on_topic(idx, subject_, event, out); }
  void add_on_topic(uint64_t, std::string_view topic, std::string_view event, std::string& out) override {
    if (!subscribed_) {
      // In the byte stream before the first PUB: the server handles it first.
      out += "SUB " + inbox_ + " 1\r\n";
      subscribed_ = true;
    }
    out += "PUB ";
    out += topic;
    out += " " + inbox_ + " " + std::to_string(event.size()) + "\r\n";
    out += event;
    out += "\r\n";
  }
  uint64_t on_bytes(std::string& in, uint64_t acked, std::string& reply) override {
    size_t used = 0;
    for (;;) {
      size_t eol = in.find("\r\n", used);
      if (eol == std::string::npos) break;
      std::string_view line(in.data() + used, eol - used);
      if (line.starts_with("MSG ") || line.starts_with("HMSG ")) {
        // MSG <subject> <sid> [reply] <bytes>; HMSG ... <header bytes> <total bytes>
        size_t total = std::strtoull(std::string(line.substr(line.rfind(' ') + 1)).c_str(), nullptr, 10);
        if (in.size() < eol + 2 + total + 2) break;
        std::string_view body(in.data() + eol + 2, total);
        if (line.starts_with("HMSG ")) {
          // Headers only come with a status: 503 = no stream takes the subject.
          throw std::runtime_error("NATS: no JetStream stream stores \"" + subject_ + "\" (" +
                                   std::string(body.substr(0, body.find("\r\n"))) + ")");
        }
        if (body.find("\"error\"") != std::string_view::npos) {
          throw std::runtime_error("NATS: the stream refused a message: " + std::string(body));
        }
        ++acked;
        used = eol + 2 + total + 2;
        continue;
      }
      if (line == "PING") reply += "PONG\r\n";
      if (line.starts_with("-ERR")) throw std::runtime_error("NATS: " + std::string(line));
      used = eol + 2;  // PONG, +OK, INFO
    }
    in.erase(0, used);
    return acked;
  }

 private:
  std::string subject_, inbox_;
  bool subscribed_ = false;
};

// Reads lines until `PONG` (the server has handled what came before it).
void nats_handshake(int fd, const std::string& name) {
  std::string buf;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  bool sent = false;
  for (;;) {
    size_t eol;
    while ((eol = buf.find("\r\n")) != std::string::npos) {
      std::string line = buf.substr(0, eol);
      buf.erase(0, eol + 2);
      if (line.starts_with("-ERR")) throw std::runtime_error("NATS: " + line);
      if (line == "PONG") return;
      if (line.starts_with("INFO ") && !sent) {
        // headers and no_responders: a subject no stream takes is answered
        // at once with status 503 instead of never.
        send_bytes(fd, "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,"
                       "\"lang\":\"c++\",\"version\":\"1\",\"protocol\":1,\"name\":\"" + name + "\"}\r\nPING\r\n");
        sent = true;
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      throw std::runtime_error("NATS handshake timed out");
    }
    char tmp[4096];
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) throw std::runtime_error("connection closed during the NATS handshake");
    buf.append(tmp, static_cast<size_t>(n));
  }
}

}  // namespace

int open_connection(const target& t, int index, const wire_options& o) {
  int fd = -1;
  if (t.kind == target_kind::mqtt_serve) {
    int lfd = serve_listener(t);
    pollfd p{lfd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(o.accept_timeout_s * 1000)) <= 0) {
      throw std::runtime_error("no MQTT client connected to " + t.text + " within " +
                               std::to_string(static_cast<int>(o.accept_timeout_s)) + " s");
    }
    fd = ::accept(lfd, nullptr, nullptr);
  } else {
    fd = connect_socket(t);
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  try {
    std::string buf, out;
    if (t.kind == target_kind::mqtt) {
      mqtt::connect_packet c;
      c.client_id = o.client_id + "-" + std::to_string(index + 1);
      c.clean_session = true;
      c.keepalive_s = 0;  // no keep alive: the sender may be busy for long
      mqtt::encode_connect(out, c);
      send_bytes(fd, out);
      mqtt::connack_packet ack;
      auto f = read_packet(fd, buf, 10);
      if (mqtt::parse_connack(f, ack) != mqtt::decode_status::ok || ack.return_code != 0) {
        throw std::runtime_error("the broker refused the connection");
      }
    } else if (t.kind == target_kind::nats) {
      nats_handshake(fd, o.client_id + "-" + std::to_string(index + 1));
    } else if (t.kind == target_kind::mqtt_serve) {
      // Play the broker: accept the CONNECT and the SUBSCRIBE.
      mqtt::connect_packet c;
      auto f = read_packet(fd, buf, 10);
      if (mqtt::parse_connect(f, c) != mqtt::decode_status::ok) throw std::runtime_error("expected CONNECT");
      buf.erase(0, f.size);
      mqtt::encode_connack(out, mqtt::connack_packet{false, 0});
      send_bytes(fd, out);
      out.clear();
      mqtt::subscribe_packet s;
      f = read_packet(fd, buf, 10);
      if (mqtt::parse_subscribe(f, s) != mqtt::decode_status::ok) throw std::runtime_error("expected SUBSCRIBE");
      mqtt::suback_packet ack;
      ack.packet_id = s.packet_id;
      for (const auto& filter : s.filters) ack.return_codes.push_back(filter.second);
      mqtt::encode_suback(out, ack);
      send_bytes(fd, out);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  return fd;
}

std::unique_ptr<wire> make_wire(const target& t, const wire_options& o, uint64_t http_batch) {
  switch (t.kind) {
    case target_kind::tcp: return std::make_unique<ndjson_wire>();
    case target_kind::mqtt:
    case target_kind::mqtt_serve: return std::make_unique<mqtt_wire>(o.topic);
    case target_kind::http: return std::make_unique<http_wire>(t, o.bearer_token, http_batch);
    case target_kind::nats: return std::make_unique<nats_wire>(o.topic);
  }
  return nullptr;
}

}  // namespace evpipe::load
