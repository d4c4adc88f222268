// The MQTT source's MQTT 5 edges end to end, against a scripted MQTT 5 broker
// that shows exactly what evpipe sends and answers: the CONNECT it sends,
// server redirection (logged, never followed), a DISCONNECT with a reason
// from the broker, AUTH (not supported: a clear error), and Receive Maximum
// enforced.

#include <gtest/gtest.h>

#include "io/sources/mqtt/mqtt_codec_v5.h"
#include "tests/integration/mqtt_source_fixture.h"

namespace evpipe::testing {
namespace {

using namespace mqtt_it;
namespace v5 = mqtt::v5;

// Takes one connection at a time; accept() reads the MQTT 5 CONNECT.
class v5_broker {
 public:
  v5_broker() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 8) != 0) {
      throw std::runtime_error("v5 broker: cannot listen");
    }
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~v5_broker() { ::close(fd_); }
  [[nodiscard]] std::string url() const { return "mqtt://127.0.0.1:" + std::to_string(port_); }

  std::unique_ptr<mqtt_socket> accept(v5::connect_packet& c, std::chrono::milliseconds timeout = 30s) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return nullptr;
    auto s = std::make_unique<mqtt_socket>(::accept(fd_, nullptr, nullptr));
    mqtt::frame f;
    v5::properties props;
    if (!s->read(f, 5s) || v5::parse_connect(f, c, props) != mqtt::decode_status::ok) return nullptr;
    return s;
  }
  // CONNACK success (with `connack`'s properties), then the SUBACK granting what was asked.
  static bool welcome(mqtt_socket& s, const v5::connack_packet& connack = {}) {
    std::string out;
    v5::encode_connack(out, connack);
    s.send(out);
    mqtt::frame f;
    mqtt::subscribe_packet sub;
    v5::properties props;
    if (!s.read(f, 5s) || v5::parse_subscribe(f, sub, props) != mqtt::decode_status::ok) return false;
    mqtt::suback_packet ack{sub.packet_id, {}};
    for (const auto& fl : sub.filters) ack.return_codes.push_back(fl.second);
    out.clear();
    v5::encode_suback(out, ack, {});
    s.send(out);
    return true;
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

mqtt_options v5_options(const std::string& extra = "") {
  mqtt_options o;
  o.client_id = "evpipe-v5proto";
  o.topics = R"(["tracker/events/#"])";
  o.extra = "protocol = \"5\"\nsession_expiry_s = 3600\n" + extra;
  return o;
}

TEST_F(MqttSource, Mqtt5ConnectAndServerRedirectionIsNotFollowed) {
  v5_broker broker;
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, v5_options()), "mqtt5_redirect");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  v5::connect_packet c;
  auto s = broker.accept(c);
  ASSERT_TRUE(s) << evp.log();
  EXPECT_EQ(c.client_id, "evpipe-v5proto");
  EXPECT_FALSE(c.clean_start) << "the session is resumed";
  EXPECT_EQ(c.session_expiry_s, 3600u);
  EXPECT_EQ(c.receive_maximum, 16384) << "Receive Maximum is max_inflight";
  // Server moved, with a reference elsewhere.
  v5::connack_packet moved;
  moved.reason = 0x9D;
  moved.props.server_reference = "elsewhere.example:1883";
  std::string out;
  v5::encode_connack(out, moved);
  s->send(out);
  s.reset();
  // The next attempt comes back here, not to the reference.
  auto again = broker.accept(c);
  ASSERT_TRUE(again) << evp.log();
  std::string log = evp.log();
  EXPECT_NE(log.find("server moved (0x9D)"), std::string::npos) << log;
  EXPECT_NE(log.find("\"elsewhere.example:1883\", which evpipe does not follow"), std::string::npos) << log;
}

TEST_F(MqttSource, Mqtt5BrokerDisconnectWithAReasonIsLoggedAndRetried) {
  v5_broker broker;
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, v5_options()), "mqtt5_disconnect");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  v5::connect_packet c;
  auto s = broker.accept(c);
  ASSERT_TRUE(s && v5_broker::welcome(*s)) << evp.log();
  ASSERT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_connections_active") == 1; })) << evp.log();
  v5::disconnect_packet d;
  d.reason = 0x8B;
  d.props.reason_string = "maintenance";
  std::string out;
  v5::encode_disconnect(out, d);
  s->send(out);
  auto again = broker.accept(c);
  ASSERT_TRUE(again) << evp.log();
  EXPECT_TRUE(evp.log_has("the broker disconnected: server shutting down (0x8B): maintenance")) << evp.log();
  EXPECT_EQ(mqtt_metric(http_port, "evpipe_mqtt_protocol_errors_total"), 0);
}

// Server Keep Alive 0 turns the keep alive off: evpipe keeps pinging at its
// own keepalive_s (here 2 s: every 1 to 1.5 s), and gives the broker up only
// a keep alive after an unanswered PINGREQ. Taken as 0 s, it pinged every
// 0.25 s and gave the broker up at the first PINGRESP slower than that.
TEST_F(MqttSource, Mqtt5ServerKeepAliveZeroKeepsEvpipesOwn) {
  v5_broker broker;
  uint16_t http_port = free_port();
  mqtt_options o = v5_options();
  o.keepalive_s = 2;
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, o), "mqtt5_keepalive_off");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  v5::connect_packet c;
  auto s = broker.accept(c);
  ASSERT_TRUE(s) << evp.log();
  v5::connack_packet ack;
  ack.props.server_keep_alive = 0;
  ASSERT_TRUE(v5_broker::welcome(*s, ack)) << evp.log();
  mqtt::frame f;
  std::string out;
  // Each PINGRESP comes 0.6 s late, past a 0.5 s tick, within the keep alive.
  size_t pings = 0;
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    if (!s->read(f, 100ms)) continue;
    if (f.type != mqtt::packet_type::pingreq) continue;
    ++pings;
    std::this_thread::sleep_for(600ms);
    out.clear();
    mqtt::encode_pingresp(out);
    s->send(out);
  }
  EXPECT_GE(pings, 2u);
  EXPECT_LE(pings, 5u) << "a keep alive of 2 s pings every 1 to 1.5 s";
  EXPECT_EQ(evp.log().find("no PINGRESP"), std::string::npos) << evp.log();
  EXPECT_EQ(mqtt_metric(http_port, "evpipe_mqtt_reconnects_total"), 0) << evp.log();
  EXPECT_TRUE(evp.log_has("the broker turns the keep alive off")) << evp.log();
}

TEST_F(MqttSource, Mqtt5AuthIsRefusedWithAClearError) {
  v5_broker broker;
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, v5_options()), "mqtt5_auth");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  v5::connect_packet c;
  auto s = broker.accept(c);
  ASSERT_TRUE(s) << evp.log();
  // AUTH, continue authentication (0x18), method "SCRAM-SHA-1".
  s->send(std::string("\xF0\x10\x18\x0E\x15\x00\x0BSCRAM-SHA-1", 18));
  EXPECT_TRUE(eventually([&] { return evp.log().find("enhanced authentication") != std::string::npos; }, 30s))
      << evp.log();
}

TEST_F(MqttSource, Mqtt5ReceiveMaximumIsEnforced) {
  v5_broker broker;
  uint16_t http_port = free_port();
  mqtt_options o = v5_options();
  o.max_inflight = 2;
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, o), "mqtt5_recvmax");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  v5::connect_packet c;
  auto s = broker.accept(c);
  ASSERT_TRUE(s && v5_broker::welcome(*s)) << evp.log();
  EXPECT_EQ(c.receive_maximum, 2);
  // Nothing can commit: the three messages stay unacknowledged.
  db.exec("BEGIN");
  db.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  for (uint16_t id = 1; id <= 3; ++id) {
    mqtt::publish_packet p;
    std::string payload = valid_event("rm-" + std::to_string(id));
    p.topic = "tracker/events/rm";
    p.payload = payload;
    p.qos = 1;
    p.packet_id = id;
    std::string out;
    v5::encode_publish(out, p, {});
    s->send(out);
  }
  bool told = false;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!told && !s->eof() && std::chrono::steady_clock::now() < deadline) {
    mqtt::frame f;
    if (!s->read(f, 100ms)) continue;
    v5::disconnect_packet d;
    told = f.type == mqtt::packet_type::disconnect && v5::parse_disconnect(f, d) == mqtt::decode_status::ok &&
           d.reason == 0x93;
  }
  db.exec("COMMIT");
  EXPECT_TRUE(told) << "no DISCONNECT 0x93 (receive maximum exceeded)\n" << evp.log();
  EXPECT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_protocol_errors_total") >= 1; }, 30s))
      << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
