#include "read/replay/replay_mqtt.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <simdjson.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "io/sources/mqtt/mqtt_codec.h"
#include "io/sources/mqtt/mqtt_codec_v5.h"

namespace evpipe::read {

namespace mqtt = io::mqtt;

namespace {

int connect_socket(const load::target& t) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(t.host.c_str(), t.port.c_str(), &hints, &res) != 0) throw std::runtime_error("cannot resolve " + t.host);
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (rc != 0) {
    std::string why = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("cannot connect to " + t.text + ": " + why);
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

void send_all(int fd, const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) throw std::runtime_error(std::string("cannot send to the broker: ") + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
}

// The CONNACK (or nothing: a broker may close on a version it refuses).
std::optional<mqtt::frame> read_connack(int fd, std::string& buf) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    mqtt::frame f;
    auto st = mqtt::read_frame(buf, 1 << 20, f);
    if (st == mqtt::decode_status::ok) return f;
    if (st != mqtt::decode_status::need_more) throw std::runtime_error("malformed MQTT packet from the broker");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      throw std::runtime_error("no CONNACK from the broker within 10 s");
    }
    char tmp[4096];
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return std::nullopt;
    buf.append(tmp, static_cast<size_t>(n));
  }
}

const char* connack_reason_311(uint8_t code) {
  switch (code) {
    case 1: return "unacceptable protocol version";
    case 2: return "client identifier rejected";
    case 3: return "server unavailable";
    case 4: return "bad user name or password";
    case 5: return "not authorized";
  }
  return "refused";
}

}  // namespace

std::string read_mqtt_credentials(const std::string& path, mqtt_credentials& out) {
  std::ifstream in(path);
  if (!in) return "cannot read the credentials file \"" + path + "\"";
  std::string user, password;
  std::getline(in, user);
  if (!user.empty() && user.back() == '\r') user.pop_back();
  if (user.empty()) return "the credentials file \"" + path + "\" has no user name on its first line";
  out.username = user;
  if (std::getline(in, password)) {
    if (!password.empty() && password.back() == '\r') password.pop_back();
    out.password = password;
  }
  return "";
}

std::string read_secret_file(const std::string& path, std::string& out) {
  std::ifstream in(path);
  if (!in) return "cannot read \"" + path + "\"";
  std::getline(in, out);
  if (!out.empty() && out.back() == '\r') out.pop_back();
  if (out.empty()) return "\"" + path + "\" is empty";
  return "";
}

int connect_mqtt_broker(const load::target& t, const std::string& client_id, const mqtt_credentials* credentials,
                        uint8_t& protocol_level) {
  // MQTT 5 first. A broker that only knows 3.1.1 answers a 3.1.1 CONNACK
  // with "unacceptable protocol version", or closes: then 3.1.1.
  {
    int fd = connect_socket(t);
    std::string out, buf;
    mqtt::v5::connect_packet c;
    c.client_id = client_id;
    c.clean_start = true;
    c.keepalive_s = 0;  // no keep alive: the sender may be busy for long
    if (credentials) {
      c.username = credentials->username;
      c.password = credentials->password;
    }
    mqtt::v5::encode_connect(out, c);
    try {
      send_all(fd, out);
      auto f = read_connack(fd, buf);
      if (f && f->type == mqtt::packet_type::connack) {
        mqtt::v5::connack_packet ack;
        if (mqtt::v5::parse_connack(*f, ack) == mqtt::decode_status::ok) {
          if (ack.reason == 0) {
            protocol_level = 5;
            return fd;
          }
          if (ack.reason != 0x84) {  // other than "unsupported protocol version"
            throw std::runtime_error(std::string("the broker refused the connection: ") +
                                     mqtt::v5::reason_name(ack.reason));
          }
        }
        // Else a 3.1.1 CONNACK (2 bytes): the broker does not speak 5.
      }
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
  }
  int fd = connect_socket(t);
  try {
    std::string out, buf;
    mqtt::connect_packet c;
    c.client_id = client_id;
    c.clean_session = true;
    c.keepalive_s = 0;
    if (credentials) {
      c.username = credentials->username;
      c.password = credentials->password;
    }
    mqtt::encode_connect(out, c);
    send_all(fd, out);
    auto f = read_connack(fd, buf);
    if (!f) throw std::runtime_error("the broker closed the connection during CONNECT");
    mqtt::connack_packet ack;
    if (mqtt::parse_connack(*f, ack) != mqtt::decode_status::ok) throw std::runtime_error("expected CONNACK");
    if (ack.return_code != 0) {
      throw std::runtime_error(std::string("the broker refused the connection: ") + connack_reason_311(ack.return_code));
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  protocol_level = 4;
  return fd;
}

mqtt_replay_wire::mqtt_replay_wire(uint8_t protocol_level)
    : v5_(protocol_level == 5), parser_(std::make_unique<simdjson::dom::parser>()) {}
mqtt_replay_wire::~mqtt_replay_wire() = default;

void mqtt_replay_wire::add_event(uint64_t idx, std::string_view topic, std::string_view event,
                                 std::string_view headers, std::string& out) {
  mqtt::publish_packet p;
  p.topic = topic;
  p.payload = event;
  p.qos = 1;
  p.packet_id = static_cast<uint16_t>(idx % 65535 + 1);
  if (!v5_) {
    if (!headers.empty()) ++headers_dropped_;
    mqtt::encode_publish(out, p);
    return;
  }
  mqtt::v5::properties props;
  // The headers object evpipe wrote (schemas/events.sql): parsed here, and
  // its strings referenced by `props` until the PUBLISH is encoded.
  simdjson::dom::element doc;
  if (!headers.empty() && !parser_->parse(headers.data(), headers.size()).get(doc)) {
    std::string_view ct;
    if (!doc["content_type"].get_string().get(ct)) props.content_type = ct;
    simdjson::dom::array ups;
    if (!doc["user_properties"].get_array().get(ups)) {
      for (auto pair : ups) {
        simdjson::dom::array kv;
        std::string_view k, v;
        if (pair.get_array().get(kv) || kv.size() != 2 || kv.at(0).get_string().get(k) || kv.at(1).get_string().get(v)) {
          continue;
        }
        props.user_properties.emplace_back(k, v);
      }
    }
  }
  mqtt::v5::encode_publish(out, p, props);
}

uint64_t mqtt_replay_wire::on_bytes(std::string& in, uint64_t acked, std::string& reply) {
  size_t used = 0;
  for (;;) {
    mqtt::frame f;
    auto st = mqtt::read_frame(std::string_view(in).substr(used), 1 << 20, f);
    if (st == mqtt::decode_status::need_more) break;
    if (st != mqtt::decode_status::ok) throw std::runtime_error("malformed MQTT packet from the broker");
    used += f.size;
    if (f.type == mqtt::packet_type::puback) {
      if (v5_) {
        mqtt::v5::ack_packet a;
        if (mqtt::v5::parse_ack(f, a) != mqtt::decode_status::ok) throw std::runtime_error("malformed PUBACK");
        if (a.reason >= 0x80) {
          throw std::runtime_error(std::string("the broker refused an event: ") + mqtt::v5::reason_name(a.reason));
        }
      }
      ++acked;  // in publish order (MQTT section 4.6)
    } else if (f.type == mqtt::packet_type::pingreq) {
      mqtt::encode_pingresp(reply);
    } else if (f.type == mqtt::packet_type::disconnect) {
      std::string why = "the broker disconnected";
      mqtt::v5::disconnect_packet d;
      if (v5_ && mqtt::v5::parse_disconnect(f, d) == mqtt::decode_status::ok) {
        why += std::string(": ") + mqtt::v5::reason_name(d.reason);
      }
      throw std::runtime_error(why);
    }
  }
  in.erase(0, used);
  return acked;
}

}  // namespace evpipe::read
