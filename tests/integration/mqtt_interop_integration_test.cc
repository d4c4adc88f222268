// Issue 9's interoperability tests: the evpipe binary against MQTT brokers
// the project does not ship, each started here on loopback ports in the
// scratch directory (tests/support/mqtt_brokers.h), and the real PostgreSQL
// that scripts/test.sh starts.
//  - RabbitMQ's MQTT plugin (Debian rabbitmq-server): a backlog kept in the
//    persistent session while evpipe is stopped, and SIGKILL mid-stream;
//  - aedes (npm, installed by scripts/test.sh): a QoS 2 message delivered to
//    evpipe's QoS 1 subscription (aedes does not downgrade it), and a broker
//    restart that loses the session.
// ctest label `interop`: RabbitMQ takes 10 to 20 s to start.

#include <gtest/gtest.h>

#include <atomic>
#include <iostream>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/mqtt_brokers.h"
#include "tests/support/mqtt_peer.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

std::string interop_config(const test_db& db, const std::string& url, uint16_t http_port,
                           const std::string& client_id) {
  return "[pipeline]\nshards = 2\n"
         "[postgres]\ndsn = \"" + db.dsn() + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
         "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
         "[log]\nlevel = \"info\"\n"
         "[[sources.mqtt]]\nurl = \"" + url + "\"\nclient_id = \"" + client_id + "\"\n"
         "topics = [\"tracker/events/#\"]\n"
         "keepalive_s = 5\nbase_ms = 50\nmax_ms = 500\n";
}

double metric(uint16_t http_port, const std::string& sample) {
  return metric_value(http_get(http_port, "/metrics"), sample);
}
double received(uint16_t http_port) { return metric(http_port, "evpipe_events_received_total{source=\"mqtt\"}"); }
double unacked(uint16_t http_port) { return metric(http_port, "evpipe_unacked_events{source=\"mqtt\"}"); }
double connected(uint16_t http_port) { return metric(http_port, "evpipe_mqtt_connections_active"); }
double subscribed(uint16_t http_port) { return metric(http_port, "evpipe_mqtt_sessions_subscribed"); }

std::vector<std::string> events(const std::string& run, size_t from, size_t to) {
  std::vector<std::string> out;
  for (size_t i = from; i < to; ++i) out.push_back(valid_event(run + "-" + std::to_string(i)));
  return out;
}

class MqttInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
  }
  // Debian packages: scripts/test.sh installs them, so under its strictness
  // a missing one fails the test.
  bool rabbitmq_missing() {
    if (::access(rabbitmq_broker::script().c_str(), X_OK) == 0) return false;
    if (!env_or("EVPIPE_REQUIRE_DB").empty()) {
      ADD_FAILURE() << rabbitmq_broker::script() << " is missing (Debian rabbitmq-server)";
    }
    return true;
  }
  // aedes comes from npm, which a machine may not reach: skipped with the
  // reason unless EVPIPE_REQUIRE_AEDES=1 (CI with registry access sets it).
  bool aedes_missing() {
    if (aedes_broker::available()) return false;
    if (!env_or("EVPIPE_REQUIRE_AEDES").empty()) {
      ADD_FAILURE() << "aedes is not installed (EVPIPE_TEST_AEDES_MODULES='" << aedes_broker::modules() << "')";
    }
    return true;
  }
  // Subscribed, not only connected: RabbitMQ drops what is published before
  // the SUBSCRIBE binds a new session's queue (this test lost the first
  // messages that way, about 1 run in 13).
  void start_connected(evpipe_process& evp, uint16_t http_port) {
    evp.start(http_port);
    ASSERT_TRUE(eventually([&] { return subscribed(http_port) == 1; })) << evp.log();
  }
  long mirrored() { return db.count("SELECT count(*) FROM events_mirror"); }
  long distinct_keys() { return db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror"); }

  test_db db;
};

TEST_F(MqttInterop, RabbitmqKeepsTheBacklogOfAStoppedEvpipe) {
  if (rabbitmq_missing()) GTEST_SKIP() << "rabbitmq-server is not installed (scripts/test.sh installs it)";
  rabbitmq_broker broker("backlog");
  uint16_t http_port = free_port();
  evpipe_process evp(interop_config(db, broker.url(), http_port, "evpipe-rmq-backlog"), "rmq_backlog");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);  // creates the persistent session and its QoS 1 subscription
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();

  auto messages = events("rmq-backlog", 0, 2000);
  messages.push_back("not json, dead-lettered");
  {
    mqtt_test_client producer(broker.port(), "producer-rmq-backlog");
    ASSERT_EQ(producer.publish_all("tracker/events/backlog", messages), messages.size());
  }
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] { return received(http_port) >= 2001 && unacked(http_port) == 0; }, 120s))
      << evp.log() << broker.log();
  EXPECT_EQ(mirrored(), 2000);
  EXPECT_EQ(distinct_keys(), 2000);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 1);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

// SIGKILL while the stream flows, twice, then a restart: RabbitMQ redelivers
// what evpipe never acknowledged, and each message is in events_mirror once.
TEST_F(MqttInterop, RabbitmqSigkillMidStreamThenRestartStoresEveryMessageOnce) {
  if (rabbitmq_missing()) GTEST_SKIP() << "rabbitmq-server is not installed (scripts/test.sh installs it)";
  rabbitmq_broker broker("sigkill");
  uint16_t http_port = free_port();
  evpipe_process evp(interop_config(db, broker.url(), http_port, "evpipe-rmq-kill"), "rmq_kill");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);

  const size_t total = 20000, chunk = 1000;
  std::atomic<size_t> published{0};
  std::atomic<bool> short_chunk{false};
  std::thread producer([&] {
    mqtt_test_client client(broker.port(), "producer-rmq-kill");
    for (size_t from = 0; from < total; from += chunk) {
      auto part = events("rmq-kill", from, from + chunk);
      size_t acked = client.publish_all("tracker/events/kill", part, 120s);
      published += acked;
      if (acked != part.size()) {
        short_chunk = true;
        return;
      }
    }
  });
  // Each kill lands while rows are being committed and more are arriving.
  for (long at : {3000L, 9000L}) {
    if (!eventually([&] { return mirrored() >= at; }, 120s)) {
      ADD_FAILURE() << "fewer than " << at << " rows stored\n" << evp.log();
      break;
    }
    evp.kill(SIGKILL);
    std::cout << "SIGKILL with " << mirrored() << " rows stored, " << published.load() << " published\n";
    evp.start(http_port);
  }
  producer.join();
  ASSERT_FALSE(short_chunk.load()) << "RabbitMQ did not acknowledge a chunk in time";
  ASSERT_EQ(published.load(), total);
  EXPECT_TRUE(eventually([&] { return mirrored() >= long(total) && unacked(http_port) == 0; }, 120s))
      << evp.earlier_logs() << "--- this run ---\n" << evp.log() << broker.log() << "\nmissing keys: "
      << db.column("SELECT coalesce(string_agg(i::text, ','), '') FROM generate_series(0, " + std::to_string(total - 1) +
                   ") i WHERE NOT EXISTS (SELECT 1 FROM events_mirror WHERE idempotency_key = 'rmq-kill-' || i)")
             .at(0)
      << "\ndead letters: "
      << db.column("SELECT coalesce(string_agg(reason_code || ' ' || n || ' (' || why || ')', ', '), 'none') FROM "
                   "(SELECT reason_code, count(*) n, min(failure_reason) why FROM dlq_events GROUP BY reason_code) r")
             .at(0)
      << "\nreceived by this process: " << received(http_port) << "\nbroker queues:\n" << broker.queues();
  EXPECT_EQ(mirrored(), long(total));
  EXPECT_EQ(distinct_keys(), long(total));
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

// Issue 9 defect 2 against the broker that showed it: aedes delivers a QoS 2
// publication at QoS 2 to a QoS 1 subscriber. evpipe used to drop the
// connection, get it redelivered, and loop about 11 times a second; now it
// completes the QoS 2 receive flow. (The fake-broker test
// MqttProtocol.ABrokerThatKeepsViolatingTheProtocolGetsBoundedReconnects
// keeps the loop defence covered without npm.)
TEST_F(MqttInterop, AedesQos2DeliveryToAQos1SubscriberIsStoredOnceWithoutALoop) {
  if (aedes_missing()) GTEST_SKIP() << "aedes is not installed: npm could not install it (see scripts/test.sh's log)";
  aedes_broker broker("qos2");
  uint16_t http_port = free_port();
  evpipe_process evp(interop_config(db, broker.url(), http_port, "evpipe-aedes-qos2"), "aedes_qos2");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);
  {
    qos2_publisher publisher(broker.port(), "producer-aedes-qos2");
    ASSERT_TRUE(publisher.publish("tracker/events/critical", valid_event("aedes-qos2-1"))) << broker.log();
    ASSERT_TRUE(publisher.publish("tracker/events/critical", valid_event("aedes-qos2-2"))) << broker.log();
  }
  {
    // A QoS 1 message behind them on the same session is not stuck.
    mqtt_test_client producer(broker.port(), "producer-aedes-qos1");
    ASSERT_EQ(producer.publish_all("tracker/events/after", {valid_event("aedes-qos1-after")}), 1u);
  }
  ASSERT_TRUE(eventually([&] { return mirrored() >= 3 && unacked(http_port) == 0; })) << evp.log() << broker.log();
  // A loop would redeliver and reconnect many times a second: give it 2 s.
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(mirrored(), 3);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'aedes-qos2-%'"), 2);
  EXPECT_EQ(received(http_port), 3) << "redelivered: " << evp.log();
  EXPECT_EQ(metric(http_port, "evpipe_mqtt_reconnects_total"), 0) << evp.log();
  EXPECT_EQ(metric(http_port, "evpipe_mqtt_protocol_errors_total"), 0) << evp.log();
  EXPECT_EQ(connected(http_port), 1);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

// Throttled for several keep alives at QoS 0, a link keeps its connection.
// The first 50 messages take its tenant 40 over its quota of 10/s: it pauses
// for about 4 s without reading. It has no PUBACK to write at QoS 0, and the
// PINGRESP to its last PINGREQ waits unread, so it pings again without
// waiting for one. aedes drops a client it has heard nothing from for 1.5
// keep alives, and keeps no QoS 0 message for a session that is away: the
// link before this was dropped 1.5 s into the pause, and the 40 messages
// published 2.5 s into it were lost. (Mosquitto 2.0 waited some 19 s before
// it dropped that link, at a keep alive of 1 s.)
TEST_F(MqttInterop, AedesKeepsAQos0LinkThrottledForSeveralKeepAlives) {
  if (aedes_missing()) GTEST_SKIP() << "aedes is not installed: npm could not install it (see scripts/test.sh's log)";
  aedes_broker broker("throttled");
  uint16_t http_port = free_port();
  std::string cfg = interop_config(db, broker.url(), http_port, "evpipe-aedes-throttled");
  cfg.replace(cfg.find("keepalive_s = 5"), 15, "keepalive_s = 1");
  cfg += "qos = 0\ntenant = \"alpha\"\n[tenants]\nenabled = true\n[tenants.quotas.alpha]\nevents_per_s = 10\nburst = 10\n";
  evpipe_process evp(cfg, "aedes_throttled");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);
  mqtt_test_client producer(broker.port(), "producer-aedes-throttled");
  ASSERT_EQ(producer.publish_all("tracker/events/t", events("aedes-throttled", 0, 50)), 50u);
  ASSERT_TRUE(eventually([&] { return received(http_port) >= 50; })) << evp.log();
  std::this_thread::sleep_for(2500ms);
  ASSERT_EQ(producer.publish_all("tracker/events/t", events("aedes-throttled", 50, 90)), 40u);
  EXPECT_TRUE(eventually([&] { return received(http_port) >= 90 && unacked(http_port) == 0; }, 30s))
      << "received " << received(http_port) << "\n" << evp.log();
  EXPECT_EQ(evp.log().find("connection lost"), std::string::npos) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE tenant_id = 'alpha'"), 90);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

// aedes keeps sessions in memory: after its restart evpipe finds no session
// (session present = 0), subscribes again, and stores what comes after.
TEST_F(MqttInterop, AedesRestartLosesTheSessionAndEvpipeSubscribesAgain) {
  if (aedes_missing()) GTEST_SKIP() << "aedes is not installed: npm could not install it (see scripts/test.sh's log)";
  aedes_broker broker("restart");
  uint16_t http_port = free_port();
  evpipe_process evp(interop_config(db, broker.url(), http_port, "evpipe-aedes-restart"), "aedes_restart");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);
  {
    mqtt_test_client producer(broker.port(), "producer-aedes-a");
    ASSERT_EQ(producer.publish_all("tracker/events/a", events("aedes-before", 0, 300)), 300u);
  }
  ASSERT_TRUE(eventually([&] { return mirrored() == 300; })) << evp.log();

  broker.stop();
  ASSERT_TRUE(eventually([&] { return connected(http_port) == 0; })) << evp.log();
  broker.start();
  ASSERT_TRUE(eventually([&] { return connected(http_port) == 1; })) << evp.log() << broker.log();
  // Subscribed again: aedes logs the SUBSCRIBE (aedes_broker.mjs) after the restart.
  auto subscribes = [&] {
    std::string text = broker.log(), line = "subscribe evpipe-aedes-restart";
    size_t n = 0;
    for (auto at = text.find(line); at != std::string::npos; at = text.find(line, at + 1)) ++n;
    return n;
  };
  ASSERT_TRUE(eventually([&] { return subscribes() == 2; })) << broker.log();
  {
    mqtt_test_client producer(broker.port(), "producer-aedes-b");
    ASSERT_EQ(producer.publish_all("tracker/events/b", events("aedes-after", 0, 300)), 300u);
  }
  EXPECT_TRUE(eventually([&] { return mirrored() >= 600 && unacked(http_port) == 0; })) << evp.log();
  EXPECT_EQ(mirrored(), 600);
  EXPECT_GE(metric(http_port, "evpipe_mqtt_reconnects_total"), 1);
  EXPECT_GE(metric(http_port, "evpipe_mqtt_session_lost_total"), 1);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
