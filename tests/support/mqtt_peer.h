#pragma once
// MQTT peers for the integration tests, built on io/mqtt_codec over blocking
// loopback sockets:
//  - mqtt_test_client publishes at QoS 1 and waits for the broker's PUBACKs,
//    or subscribes and receives;
//  - fake_broker plays the broker for one evpipe connection, so a test sees
//    exactly which PUBACKs evpipe sends, and when;
//  - mosquitto_broker runs Debian's Mosquitto on a loopback port with its own
//    config (persistence on, no queue limit) in a scratch directory.
// For tests only: errors throw.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "io/sources/mqtt/mqtt_codec.h"
#include "tests/support/harness.h"

namespace evpipe::testing {

namespace mqtt = evpipe::io::mqtt;

// One MQTT byte stream: whole packets in and out.
class mqtt_socket {
 public:
  explicit mqtt_socket(int fd) : fd_(fd) {
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  mqtt_socket(const mqtt_socket&) = delete;
  mqtt_socket& operator=(const mqtt_socket&) = delete;
  ~mqtt_socket() {
    if (fd_ >= 0) ::close(fd_);
  }

  static int connect_to(uint16_t port) { return connect_loopback(port); }

  void send(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("mqtt peer: send failed");
      off += static_cast<size_t>(n);
    }
  }

  // The next packet; false on timeout or end of stream. The frame's views
  // stay valid until the next call.
  bool read(mqtt::frame& f, std::chrono::milliseconds timeout) {
    in_.erase(0, consumed_);
    consumed_ = 0;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto st = mqtt::read_frame(in_, 1 << 26, f);
      if (st == mqtt::decode_status::ok) {
        consumed_ = f.size;
        return true;
      }
      if (st != mqtt::decode_status::need_more) throw std::runtime_error("mqtt peer: malformed packet");
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      char buf[65536];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        eof_ = true;
        return false;
      }
      in_.append(buf, static_cast<size_t>(n));
    }
  }
  // The peer closed the connection.
  [[nodiscard]] bool eof() const { return eof_; }

 private:
  bool eof_ = false;
  int fd_;
  std::string in_;
  size_t consumed_ = 0;
};

class mqtt_test_client {
 public:
  mqtt_test_client(uint16_t port, const std::string& client_id, bool clean_session = true,
                   const std::string& username = "", const std::string& password = "")
      : sock_(mqtt_socket::connect_to(port)) {
    mqtt::connect_packet c;
    c.client_id = client_id;
    c.clean_session = clean_session;
    c.keepalive_s = 60;
    if (!username.empty()) c.username = username;
    if (!password.empty()) c.password = password;
    std::string out;
    mqtt::encode_connect(out, c);
    sock_.send(out);
    mqtt::frame f;
    mqtt::connack_packet ack;
    if (!sock_.read(f, 30s) || mqtt::parse_connack(f, ack) != mqtt::decode_status::ok || ack.return_code != 0) {
      throw std::runtime_error("mqtt test client: no CONNACK");
    }
  }

  // Publishes every payload at QoS 1 (pipelined, up to `window` unacked) and
  // waits for all PUBACKs; returns how many came.
  size_t publish_all(const std::string& topic, const std::vector<std::string>& payloads,
                     std::chrono::milliseconds timeout = 60s, size_t window = 1000) {
    size_t sent = 0, acked = 0;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (acked < payloads.size() && std::chrono::steady_clock::now() < deadline) {
      std::string out;
      while (sent < payloads.size() && sent - acked < window) {
        mqtt::publish_packet p;
        p.topic = topic;
        p.payload = payloads[sent];
        p.qos = 1;
        p.packet_id = next_id();
        mqtt::encode_publish(out, p);
        ++sent;
      }
      if (!out.empty()) sock_.send(out);
      mqtt::frame f;
      if (!sock_.read(f, 200ms)) continue;
      if (f.type == mqtt::packet_type::puback) ++acked;
    }
    return acked;
  }

  void subscribe(const std::string& filter) {
    mqtt::subscribe_packet s;
    s.packet_id = next_id();
    s.filters.emplace_back(filter, 1);
    std::string out;
    mqtt::encode_subscribe(out, s);
    sock_.send(out);
    mqtt::frame f;
    if (!sock_.read(f, 30s) || f.type != mqtt::packet_type::suback) throw std::runtime_error("no SUBACK");
  }

  // The next message (acknowledged if QoS 1): (topic, payload).
  std::optional<std::pair<std::string, std::string>> receive(std::chrono::milliseconds timeout) {
    mqtt::frame f;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!sock_.read(f, 100ms)) continue;
      if (f.type != mqtt::packet_type::publish) continue;
      mqtt::publish_packet p;
      if (mqtt::parse_publish(f, p) != mqtt::decode_status::ok) throw std::runtime_error("bad PUBLISH");
      std::pair<std::string, std::string> msg{std::string(p.topic), std::string(p.payload)};
      if (p.qos == 1) {
        std::string out;
        mqtt::encode_puback(out, p.packet_id);
        sock_.send(out);
      }
      return msg;
    }
    return std::nullopt;
  }

 private:
  uint16_t next_id() {
    if (++id_ == 0) id_ = 1;
    return id_;
  }
  mqtt_socket sock_;
  uint16_t id_ = 0;
};

// Plays the broker for one client connection.
class fake_broker {
 public:
  fake_broker() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_fd_, 4) != 0) {
      throw std::runtime_error("fake broker: cannot listen");
    }
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~fake_broker() { ::close(listen_fd_); }
  [[nodiscard]] uint16_t port() const { return port_; }

  // Accepts the client, answers its CONNECT and SUBSCRIBE; returns the CONNECT.
  mqtt::connect_packet accept_client(std::chrono::milliseconds timeout = 60s) {
    mqtt::connect_packet c = accept_connect(timeout);
    answer_subscribe();
    return c;
  }
  // Accepts the client and answers its CONNECT only; returns the CONNECT.
  mqtt::connect_packet accept_connect(std::chrono::milliseconds timeout = 60s) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) throw std::runtime_error("fake broker: no client");
    client_.emplace(::accept(listen_fd_, nullptr, nullptr));
    mqtt::frame f;
    mqtt::connect_packet c;
    if (!client_->read(f, 30s) || mqtt::parse_connect(f, c) != mqtt::decode_status::ok) {
      throw std::runtime_error("fake broker: no CONNECT");
    }
    std::string out;
    mqtt::encode_connack(out, mqtt::connack_packet{false, 0});
    client_->send(out);
    return c;
  }
  // Reads the client's SUBSCRIBE and grants every filter at QoS 1.
  void answer_subscribe() {
    mqtt::frame f;
    std::string out;
    mqtt::subscribe_packet s;
    if (!client_->read(f, 30s) || mqtt::parse_subscribe(f, s) != mqtt::decode_status::ok) {
      throw std::runtime_error("fake broker: no SUBSCRIBE");
    }
    filters_ = s.filters;
    out.clear();
    mqtt::suback_packet ack;
    ack.packet_id = s.packet_id;
    for (size_t i = 0; i < s.filters.size(); ++i) ack.return_codes.push_back(1);
    mqtt::encode_suback(out, ack);
    client_->send(out);
  }
  // Closes the client's connection (the broker going away).
  void drop_client() { client_.reset(); }
  [[nodiscard]] const std::vector<std::pair<std::string, uint8_t>>& filters() const { return filters_; }
  // PINGREQs read_pubacks has answered.
  [[nodiscard]] size_t pingreqs() const { return pingreqs_; }
  // The client said DISCONNECT (a clean goodbye) before closing.
  [[nodiscard]] bool saw_disconnect() const { return saw_disconnect_; }

  void publish(const std::string& topic, const std::string& payload, uint16_t packet_id) {
    mqtt::publish_packet p;
    p.topic = topic;
    p.payload = payload;
    p.qos = 1;
    p.packet_id = packet_id;
    std::string out;
    mqtt::encode_publish(out, p);
    client_->send(out);
  }

  // PUBACK ids in the order they arrive, until `n` came or `timeout` passed.
  // Answers PINGREQs meanwhile.
  std::vector<uint16_t> read_pubacks(size_t n, std::chrono::milliseconds timeout) {
    std::vector<uint16_t> ids;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (ids.size() < n && std::chrono::steady_clock::now() < deadline && !client_->eof()) {
      mqtt::frame f;
      if (!client_->read(f, 50ms)) continue;
      if (f.type == mqtt::packet_type::disconnect) {
        saw_disconnect_ = true;
      } else if (f.type == mqtt::packet_type::puback) {
        uint16_t id = 0;
        if (mqtt::parse_packet_id(f, id) != mqtt::decode_status::ok) throw std::runtime_error("bad PUBACK");
        ids.push_back(id);
      } else if (f.type == mqtt::packet_type::pingreq) {
        ++pingreqs_;
        std::string out;
        mqtt::encode_pingresp(out);
        client_->send(out);
      }
    }
    return ids;
  }

 private:
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::optional<mqtt_socket> client_;
  std::vector<std::pair<std::string, uint8_t>> filters_;
  bool saw_disconnect_ = false;
  size_t pingreqs_ = 0;
};

// Debian's Mosquitto on 127.0.0.1:port, data in a scratch directory.
// scripts/test.sh installs it; EVPIPE_TEST_MOSQUITTO names the binary. With
// `tls`, a second listener on tls_port() speaks TLS with a certificate for
// 127.0.0.1 signed by a throwaway CA (ca_file()), made with the openssl CLI.
class mosquitto_broker {
 public:
  // With a `user`, anonymous clients are refused and `user`/`password` is the
  // one account (made with mosquitto_passwd).
  explicit mosquitto_broker(const std::string& name, bool tls = false, const std::string& user = "",
                            const std::string& password = "")
      : port_(free_port()) {
    dir_ = env_or("TMPDIR", "/tmp") + "/mosquitto_" + std::to_string(::getpid()) + "_" + name;
    std::string mk = "mkdir -p '" + dir_ + "'";
    if (std::system(mk.c_str()) != 0) throw std::runtime_error("mkdir " + dir_);
    if (tls) make_certificates();
    if (!user.empty()) {
      std::string cmd = "mosquitto_passwd -b -c '" + dir_ + "/passwd' '" + user + "' '" + password + "'";
      if (std::system(cmd.c_str()) != 0) throw std::runtime_error("mosquitto_passwd failed");
    }
    std::ofstream conf(dir_ + "/mosquitto.conf");
    if (user.empty()) {
      conf << "allow_anonymous true\n";
    } else {
      conf << "allow_anonymous false\npassword_file " << dir_ << "/passwd\n";
    }
    conf << "listener " << port_ << " 127.0.0.1\n";
    if (tls) {
      tls_port_ = free_port();
      conf << "listener " << tls_port_ << " 127.0.0.1\n"
           << "cafile " << dir_ << "/ca.crt\ncertfile " << dir_ << "/server.crt\nkeyfile " << dir_ << "/server.key\n";
    }
    conf
         << "persistence true\npersistence_location " << dir_ << "/\n"
         << "max_queued_messages 0\nmax_inflight_messages 0\n"
         << "log_dest file " << dir_ << "/mosquitto.log\n"
         // The defaults, plus one line per SUBSCRIBE (see subscriptions()).
         << "log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\n";
    if (::geteuid() == 0) conf << "user root\n";  // keep access to the scratch directory
    conf.close();
    start();
  }
  ~mosquitto_broker() { stop(SIGKILL); }

  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] std::string url() const { return "mqtt://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] std::string tls_url() const { return "mqtts://127.0.0.1:" + std::to_string(tls_port_); }
  [[nodiscard]] std::string ca_file() const { return dir_ + "/ca.crt"; }
  [[nodiscard]] std::string dir() const { return dir_; }

  // The broker's log so far.
  [[nodiscard]] std::string log() const {
    std::ifstream in(dir_ + "/mosquitto.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // How many times the broker has logged a subscription of `client_id` to
  // `filter` (e.g. "$share/group/tracker/events/#"). Mosquitto adds the
  // subscription before it logs it, so every PUBLISH it handles afterwards
  // is routed to that client: wait on this instead of sleeping before
  // publishing.
  [[nodiscard]] size_t subscriptions(const std::string& client_id, const std::string& filter) const {
    std::string text = log(), line = " " + client_id + " 1 " + filter + "\n";
    size_t n = 0;
    for (auto at = text.find(line); at != std::string::npos; at = text.find(line, at + 1)) ++n;
    return n;
  }

  // A CA and a server certificate for IP 127.0.0.1, valid for a day.
  void make_certificates() {
    std::string d = "'" + dir_ + "'";  // quoted for the shell
    std::string cmd = "cd " + d + " && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext"
                      " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1"
                      " -subj /CN=evpipe-test-ca"
                      " && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1"
                      " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt"
                      " -days 1 -extfile san.ext"
                      " && openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days 1"
                      " -subj /CN=some-other-ca"
                      " && chmod 644 *.key >/dev/null 2>&1";
    if (std::system(("(" + cmd + ") >" + d + "/openssl.log 2>&1").c_str()) != 0) {
      throw std::runtime_error("openssl could not make the test certificates (see " + dir_ + "/openssl.log)");
    }
  }

  void start() {
    std::string bin = env_or("EVPIPE_TEST_MOSQUITTO", "/usr/sbin/mosquitto");
    std::string conf = dir_ + "/mosquitto.conf";
    std::vector<char*> argv{bin.data(), const_cast<char*>("-c"), conf.data(), nullptr};
    if (posix_spawn(&pid_, bin.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
      throw std::runtime_error("cannot start " + bin);
    }
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
      try {
        ::close(mqtt_socket::connect_to(port_));
        return;
      } catch (const std::exception&) {
        std::this_thread::sleep_for(20ms);
      }
    }
    throw std::runtime_error("mosquitto did not listen on " + std::to_string(port_));
  }
  // SIGTERM saves the persistent sessions and messages first.
  void stop(int sig = SIGTERM) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  std::string dir_;
  uint16_t port_;
  uint16_t tls_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace evpipe::testing
