// The MQTT source at protocol = "5" against Debian's Mosquitto (2.x speaks
// MQTT 5): QoS 0, 1 and 2 publishers (MQTT 5 clients written here with the
// codec, so no mosquitto_pub is needed), every message stored exactly once
// and acknowledged after its commit; SIGKILL before the commit, then exactly
// once; user properties and content type kept in a dead letter.

#include <gtest/gtest.h>

#include "io/sources/mqtt/mqtt_codec_v5.h"
#include "tests/integration/mqtt_source_fixture.h"

namespace evpipe::testing {
namespace {

using namespace mqtt_it;
namespace v5 = mqtt::v5;

// An MQTT 5 publisher: publishes each payload at `qos` and completes its
// handshake (PUBACK; PUBREC, PUBREL, PUBCOMP) with a window of 20.
size_t publish_v5(uint16_t port, const std::string& client_id, const std::string& topic,
                  const std::vector<std::string>& payloads, uint8_t qos, const v5::properties& props = {}) {
  mqtt_socket s(mqtt_socket::connect_to(port));
  std::string out;
  v5::connect_packet c;
  c.client_id = client_id;
  c.clean_start = true;
  v5::encode_connect(out, c);
  s.send(out);
  mqtt::frame f;
  v5::connack_packet ack;
  if (!s.read(f, 5s) || v5::parse_connack(f, ack) != mqtt::decode_status::ok || ack.reason != 0) return 0;
  size_t sent = 0, done = 0;
  uint16_t next_id = 0;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (done < payloads.size() && std::chrono::steady_clock::now() < deadline) {
    while (sent < payloads.size() && (qos == 0 || sent - done < 20)) {
      mqtt::publish_packet p;
      p.topic = topic;
      p.payload = payloads[sent];
      p.qos = qos;
      p.packet_id = qos ? ++next_id : 0;
      out.clear();
      v5::encode_publish(out, p, props);
      s.send(out);
      ++sent;
      if (qos == 0) ++done;
    }
    if (done == payloads.size() || !s.read(f, 100ms)) continue;
    v5::ack_packet a;
    if (v5::parse_ack(f, a) != mqtt::decode_status::ok) continue;
    if (f.type == mqtt::packet_type::pubrec) {
      out.clear();
      v5::encode_ack(out, mqtt::packet_type::pubrel, {a.packet_id, 0, {}});
      s.send(out);
    } else if (f.type == mqtt::packet_type::puback || f.type == mqtt::packet_type::pubcomp) {
      ++done;
    }
  }
  out.clear();
  v5::encode_disconnect(out, {});
  s.send(out);
  return done;
}

mqtt_options v5_options(const std::string& client_id) {
  mqtt_options o;
  o.client_id = client_id;
  o.extra = "protocol = \"5\"\nsession_expiry_s = 3600\n";
  return o;
}

TEST_F(MqttSource, Mqtt5StoresQos0And1And2PublishersExactlyOnce) {
  mosquitto_broker broker("v5_qos");
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, v5_options("evpipe-v5")), "mqtt5_qos");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);
  const int n = 300;
  for (uint8_t qos = 0; qos <= 2; ++qos) {
    std::string run = "v5q" + std::to_string(qos);
    ASSERT_EQ(publish_v5(broker.port(), "pub-" + run, "tracker/events/" + run, valid_messages(run, n), qos), size_t(n))
        << "QoS " << int(qos);
  }
  ASSERT_TRUE(eventually([&] { return settled(http_port, 3 * n); })) << evp.log();
  EXPECT_EQ(mirrored(), 3 * n);
  EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror"), 3 * n);
  // QoS 1 and 2 acknowledged (PUBACK, PUBREC) once committed.
  // Counted when the write completes, a moment after unacked reaches 0.
  EXPECT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_pubacks_total") >= 2 * n; }, 10s));
  EXPECT_EQ(mqtt_metric(http_port, "evpipe_mqtt_pubacks_total"), 2 * n);
  EXPECT_EQ(mqtt_metric(http_port, "evpipe_mqtt_protocol_errors_total"), 0) << evp.log();
  EXPECT_EQ(mqtt_metric(http_port, "evpipe_mqtt_reconnects_total"), 0) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(MqttSource, Mqtt5KilledBeforeCommitRedeliveredExactlyOnce) {
  mosquitto_broker broker("v5_kill");
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, v5_options("evpipe-v5k")), "mqtt5_kill");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);
  db.exec("BEGIN");
  db.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  ASSERT_EQ(publish_v5(broker.port(), "pub-v5k1", "tracker/events/k", valid_messages("v5k1", 200), 1), 200u);
  ASSERT_EQ(publish_v5(broker.port(), "pub-v5k2", "tracker/events/k", valid_messages("v5k2", 200), 2), 200u);
  ASSERT_TRUE(eventually([&] { return received(http_port) == 400; })) << evp.log();
  evp.kill(SIGKILL);
  db.exec("COMMIT");
  EXPECT_EQ(mirrored(), 0);
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] { return settled(http_port, 400); })) << evp.log();
  EXPECT_EQ(mirrored(), 400);
  EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror"), 400);
  EXPECT_TRUE(evp.log_has("connected"));
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(MqttSource, Mqtt5UserPropertiesAndContentTypeReachTheDeadLetter) {
  mosquitto_broker broker("v5_props");
  uint16_t http_port = free_port();
  mqtt_options o = v5_options("evpipe-v5p");
  o.dlq_publish = true;
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, o), "mqtt5_props");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);
  mqtt_test_client watcher(broker.port(), "v5-dlq-watcher");
  watcher.subscribe("tracker/dlq/#");
  v5::properties props;
  props.content_type = "application/json";
  props.user_properties = {{"tenant", "acme"}};
  ASSERT_EQ(publish_v5(broker.port(), "pub-v5p", "tracker/events/p", {"not json"}, 1, props), 1u);
  ASSERT_TRUE(eventually([&] { return db.count("SELECT count(*) FROM dlq_events") == 1 && unacked(http_port) == 0; }))
      << evp.log();
  auto got = watcher.receive(30s);
  ASSERT_TRUE(got) << evp.log();
  EXPECT_NE(got->second.find(R"("mqtt_properties":{"content_type":"application/json","user_properties":[["tenant","acme"]]})"),
            std::string::npos)
      << got->second;
}

// Publishes `payload` with Debian's mosquitto_pub at MQTT 5 and QoS 1,
// with `props` as its -D publish options. A real client, so the properties'
// bytes are not the codec's own idea of them.
int mosquitto_pub_v5(uint16_t port, const std::string& topic, const std::string& payload, const std::string& props) {
  std::string cmd = "timeout 20 mosquitto_pub -h 127.0.0.1 -p " + std::to_string(port) +
                    " -V mqttv5 -q 1 -i pub-v5h -t '" + topic + "' -m '" + payload + "' " + props;
  return std::system(cmd.c_str());
}

TEST_F(MqttSource, Mqtt5UserPropertiesAndContentTypeAreStoredWithTheEvent) {
  mosquitto_broker broker("v5_headers");
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, v5_options("evpipe-v5h")), "mqtt5_headers");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);
  // Repeated keys and their order are kept (MQTT 5 allows both).
  const std::string props =
      "-D publish user-property tenant acme -D publish user-property site 'north 1' "
      "-D publish user-property tenant beta -D publish content-type application/json";
  // A new session's SUBSCRIBE may still be on its way after CONNACK: publish
  // one event until it arrives (the same key each time: one row).
  ASSERT_TRUE(eventually([&] {
    return mosquitto_pub_v5(broker.port(), "tracker/events/h", valid_event("h-0"), "") == 0 && received(http_port) >= 1;
  })) << evp.log();
  const double warm = received(http_port);
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), "tracker/events/h", valid_event("h-1"), props), 0);
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), "tracker/events/h", valid_event("h-2"), ""), 0);
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), "tracker/events/h", valid_event("h-3"),
                             "-D publish user-property only-one x"), 0);
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), "tracker/events/h", "not json", props), 0);
  ASSERT_TRUE(eventually([&] { return settled(http_port, warm + 4); })) << evp.log();
  const std::string full =
      R"('{"content_type":"application/json","user_properties":[["tenant","acme"],["site","north 1"],["tenant","beta"]]}'::jsonb)";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'h-1' AND headers = " + full), 1)
      << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'h-2' AND headers IS NULL"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'h-3' AND headers = "
                     R"('{"user_properties":[["only-one","x"]]}'::jsonb)"),
            1);
  // A dead letter keeps them too.
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'invalid_json' AND headers = " + full), 1);
  EXPECT_EQ(mirrored(), 4);  // h-0 to h-3

  // A restart empties the dedup window: the resend of h-1 meets its stored
  // key in the database, and the batch goes through the staging table with
  // its headers (one row kept, acked as a duplicate).
  evp.kill(SIGKILL);
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_connections_active") == 1; })) << evp.log();
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), "tracker/events/h", valid_event("h-1"), props), 0);
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), "tracker/events/h", valid_event("h-4"), props), 0);
  ASSERT_TRUE(eventually([&] { return settled(http_port, 2); })) << evp.log();
  EXPECT_EQ(mirrored(), 5) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key IN ('h-1', 'h-4') AND headers = " + full),
            2);
}

// A batch that names a missing headers column could never commit: with an
// MQTT 5 source, `run` refuses a database migrated before the column, and
// says to migrate.
TEST_F(MqttSource, Mqtt5RunRefusesTablesWithoutTheHeadersColumn) {
  mosquitto_broker broker("v5_no_headers");
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, v5_options("evpipe-v5nh")), "mqtt5_no_headers");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec("ALTER TABLE events_mirror DROP COLUMN headers");
  EXPECT_EQ(evp.run_command("run"), 1) << evp.log("run.log");
  EXPECT_NE(evp.log("run.log").find("has no headers column"), std::string::npos) << evp.log("run.log");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  EXPECT_EQ(db.count("SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND "
                     "table_name = 'events_mirror' AND "
                     "column_name = 'headers'"),
            1);
}

}  // namespace
}  // namespace evpipe::testing
