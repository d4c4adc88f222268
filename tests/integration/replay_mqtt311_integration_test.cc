// `evpipe replay --to mqtt://` into a broker that refuses MQTT 5: Debian's
// RabbitMQ 3.10, whose MQTT plugin speaks 3.1 and 3.1.1 only. Replay connects
// with MQTT 5 first (read/replay/replay_mqtt.cc), is refused, connects again
// with 3.1.1 and publishes every event at QoS 1 on its row's topic, in
// position order; the transport headers that 3.1.1 cannot carry are left out
// and counted at the end. Label interop: RabbitMQ takes 10 to 20 s to start.

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "io/sources/mqtt/mqtt_codec_v5.h"
#include "tests/integration/replay_run.h"
#include "tests/support/harness.h"
#include "tests/support/mqtt_brokers.h"
#include "tests/support/mqtt_peer.h"
#include "tests/support/tcp_pipeline.h"

namespace evpipe::testing {
namespace {


class ReplayMqtt311 : public TcpPipeline {
 protected:
  void SetUp() override {
    TcpPipeline::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    if (::access(rabbitmq_broker::script().c_str(), X_OK) != 0) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) {
        FAIL() << rabbitmq_broker::script() << " is missing (Debian rabbitmq-server)";
      }
      GTEST_SKIP() << "rabbitmq-server is not installed (scripts/test.sh installs it)";
    }
    evpipe = std::make_unique<evpipe_process>(config_for(db, free_port(), free_port()), "replay_mqtt311");
    ASSERT_EQ(evpipe->run_command("migrate"), 0) << evpipe->log("migrate.log");
    dir = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_replay_mqtt311";
  }
  replay_result replay(const std::string& args) { return run_replay(evpipe_binary(), dir, args); }
  std::unique_ptr<evpipe_process> evpipe;
  std::string dir;
};

// What the broker answers an MQTT 5 CONNECT: "refused" when it answers with
// a CONNACK that is not an MQTT 5 success, or closes; "accepted" otherwise.
std::string answer_to_mqtt5(uint16_t port) {
  mqtt_socket sock(mqtt_socket::connect_to(port));
  mqtt::v5::connect_packet c;
  c.client_id = "probe-v5";
  c.clean_start = true;
  c.keepalive_s = 30;
  std::string out;
  mqtt::v5::encode_connect(out, c);
  sock.send(out);
  mqtt::frame f;
  if (!sock.read(f, 10s)) return sock.eof() ? "refused (closed)" : "no answer";
  mqtt::v5::connack_packet ack;
  if (f.type == mqtt::packet_type::connack && mqtt::v5::parse_connack(f, ack) == mqtt::decode_status::ok &&
      ack.reason == 0) {
    return "accepted";
  }
  return "refused (CONNACK)";
}

TEST_F(ReplayMqtt311, IntoABrokerThatRefusesMqtt5TheReplayFallsBackTo311AndPublishesEveryEvent) {
  rabbitmq_broker broker("replay311");
  // The premise: this broker does refuse MQTT 5 (else the test would not
  // exercise the fallback).
  std::string v5 = answer_to_mqtt5(broker.port());
  ASSERT_EQ(v5.rfind("refused", 0), 0u) << v5 << "\n" << broker.log();

  // 300 rows on 3 topics; every third has transport headers.
  db.exec("INSERT INTO events_mirror (topic, payload, headers) SELECT 'site/' || (g % 3), "
          "jsonb_build_object('idempotency_key', 'm311-' || g, 'kind', 'telemetry', 'n', g), "
          "CASE WHEN g % 3 = 0 THEN '{\"content_type\": \"application/json\", \"user_properties\": [[\"k\", \"v\"]]}'"
          "::jsonb END FROM generate_series(1, 300) g");
  replay_result all;
  ASSERT_TRUE(eventually([&] { return (all = replay("--no-progress")).lines.size() == 300; }));
  // What the subscriber must see, in position order: the row's topic under
  // the prefix, and the stored event as jsonb prints it.
  auto topics = db.column("SELECT 'replayed/' || topic FROM events_mirror ORDER BY tx, id");
  auto payloads = db.column("SELECT payload::text FROM events_mirror ORDER BY tx, id");

  mqtt_test_client sub(broker.port(), "replay311-check");
  sub.subscribe("replayed/#");
  auto r = replay("--no-progress --to mqtt://127.0.0.1:" + std::to_string(broker.port()) + "/replayed");
  ASSERT_EQ(r.exit_code, 0) << r.err << "\n" << broker.log();
  EXPECT_TRUE(r.lines.empty());
  EXPECT_EQ(r.last_position, all.lines.back().substr(13, 34)) << r.err;
  EXPECT_NE(r.err.find("100 events had transport headers, which the broker (MQTT 3.1.1) cannot carry"),
            std::string::npos) << r.err;

  std::vector<std::string> got_topics, got_payloads;
  while (got_topics.size() < 300) {
    auto m = sub.receive(30s);
    ASSERT_TRUE(m) << got_topics.size() << " of 300 arrived\n" << broker.queues();
    got_topics.push_back(m->first);
    got_payloads.push_back(m->second);
  }
  EXPECT_EQ(got_topics, topics);
  EXPECT_EQ(got_payloads, payloads);
  EXPECT_FALSE(sub.receive(500ms)) << "more than 300 messages";

  // A replay stopped after 120 events and resumed from its printed position
  // delivers the other 180, the fallback taken again on the new connection.
  auto first = replay("--no-progress --max-rows 120 --to mqtt://127.0.0.1:" + std::to_string(broker.port()) +
                      "/replayed");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_EQ(first.last_position, all.lines[119].substr(13, 34));
  auto second = replay("--no-progress --to mqtt://127.0.0.1:" + std::to_string(broker.port()) + "/replayed --since " +
                       first.last_position);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(second.last_position, all.lines.back().substr(13, 34));
  std::vector<std::string> again;
  while (again.size() < 300) {
    auto m = sub.receive(30s);
    ASSERT_TRUE(m) << again.size() << " of 300 arrived again";
    again.push_back(m->second);
  }
  EXPECT_EQ(again, payloads);
}

}  // namespace
}  // namespace evpipe::testing
