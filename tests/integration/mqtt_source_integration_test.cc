// The MQTT source end to end: the evpipe binary against the real PostgreSQL
// that scripts/test.sh starts, and either Debian's Mosquitto (started here per
// test, persistence on) or a fake broker that shows exactly which PUBACKs
// evpipe sends and when.

#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <random>
#include <set>

#include "tests/support/harness.h"
#include "tests/support/mqtt_peer.h"
#include "tests/support/tcp_proxy.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

struct mqtt_options {
  std::string client_id = "evpipe-it";
  std::string extra;         // more keys of [[sources.mqtt]]
  std::string shared_group;
  std::string dsn;           // default: the test schema
  bool dlq_publish = false;
  uint32_t max_inflight = 16384;
};

std::string mqtt_config(const test_db& db, const std::string& url, uint16_t http_port, const mqtt_options& o = {}) {
  return "[pipeline]\nshards = 2\n"
         "[events]\nmax_event_bytes = 4096\n"
         "[postgres]\ndsn = \"" + (o.dsn.empty() ? db.dsn() : o.dsn) + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
         "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
         "[log]\nlevel = \"info\"\n"
         "[[sources.mqtt]]\nurl = \"" + url + "\"\nclient_id = \"" + o.client_id + "\"\n"
         "topics = [\"tracker/events/#\", \"autocore/+/telemetry\"]\n"
         "keepalive_s = 5\nbase_ms = 50\nmax_ms = 500\n"
         "max_inflight = " + std::to_string(o.max_inflight) + "\n" +
         (o.shared_group.empty() ? "" : "shared_group = \"" + o.shared_group + "\"\n") +
         (o.dlq_publish ? "dlq_publish = true\n" : "") + o.extra;
}

double mqtt_metric(uint16_t http_port, const std::string& sample) {
  return metric_value(http_get(http_port, "/metrics"), sample);
}
double received(uint16_t http_port) { return mqtt_metric(http_port, "evpipe_events_received_total{source=\"mqtt\"}"); }
double unacked(uint16_t http_port) { return mqtt_metric(http_port, "evpipe_unacked_events{source=\"mqtt\"}"); }

// True once the evpipe behind `http_port` has read at least `n` messages and
// every one it read has a committed outcome and its PUBACK: the tables are
// final for those messages, so an exact count checked now is meaningful on
// any machine (a sleep after "at least n rows" only hoped so).
bool settled(uint16_t http_port, double n) { return received(http_port) >= n && unacked(http_port) == 0; }

class MqttSource : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
    if (::access(env_or("EVPIPE_TEST_MOSQUITTO", "/usr/sbin/mosquitto").c_str(), X_OK) != 0) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "mosquitto is not installed";
      GTEST_SKIP() << "mosquitto is not installed (scripts/test.sh installs it)";
    }
  }

  // Starts evpipe and waits until its session is connected to the broker.
  void start_connected(evpipe_process& evp, uint16_t http_port) {
    evp.start(http_port);
    ASSERT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_connections_active") == 1; }))
        << evp.log();
  }

  long mirrored() { return db.count("SELECT count(*) FROM events_mirror"); }

  test_db db;
};

// Message i of a run: valid and unique, with every 10th a resend of the key
// before it and every 25th not JSON at all.
std::vector<std::string> mixed_messages(const std::string& run, int n, long& unique, long& invalid) {
  std::vector<std::string> out;
  unique = invalid = 0;
  for (int i = 0; i < n; ++i) {
    if (i % 25 == 24) {
      out.push_back("not json " + run + " " + std::to_string(i));
      ++invalid;
    } else if (i % 10 == 9) {
      out.push_back(valid_event(run + "-" + std::to_string(i - 1), "resent"));
    } else {
      out.push_back(valid_event(run + "-" + std::to_string(i)));
      ++unique;
    }
  }
  return out;
}

std::vector<std::string> valid_messages(const std::string& run, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(valid_event(run + "-" + std::to_string(i)));
  return out;
}

TEST_F(MqttSource, PubacksWaitForTheCommitAndKeepArrivalOrder) {
  fake_broker broker;
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, "mqtt://127.0.0.1:" + std::to_string(broker.port()), http_port), "mqtt_order");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  auto connect = broker.accept_client();
  EXPECT_EQ(connect.client_id, "evpipe-it");
  EXPECT_FALSE(connect.clean_session) << "a persistent session keeps messages while evpipe is away";
  ASSERT_EQ(broker.filters().size(), 2u);
  EXPECT_EQ(broker.filters()[0], (std::pair<std::string, uint8_t>{"tracker/events/#", 1}));

  // Hold commits: the test's transaction locks events_mirror.
  db.exec("BEGIN");
  db.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  std::vector<uint16_t> ids;
  for (uint16_t i = 1; i <= 40; ++i) {
    uint16_t id = static_cast<uint16_t>(1000 + i * 7);  // any order of ids; the arrival order counts
    ids.push_back(id);
    std::string payload = i % 13 == 0   ? "{\"broken\": " + std::to_string(i)   // invalid_json
                          : i % 17 == 0 ? valid_event("order-" + std::to_string(i - 1))  // duplicate
                          : i == 30     ? std::string(5000, 'x')                // over max_event_bytes
                          : i == 35     ? std::string(100'000, 'y')             // over the packet limit: skipped as it streams
                                        : valid_event("order-" + std::to_string(i));
    broker.publish(i % 2 ? "tracker/events/projects/created" : "autocore/ESP32_001/telemetry", payload, id);
  }
  // No PUBACK while the commit is held. Checked once evpipe has read all 40
  // and a batch is waiting for the lock, so the 1.5 s below watch a PUBACK
  // that could go out now, on any machine.
  ASSERT_TRUE(eventually([&] { return received(http_port) >= 40 && db.lock_waiters("events_mirror") >= 1; }))
      << "received " << received(http_port) << "\n" << evp.log();
  EXPECT_TRUE(broker.read_pubacks(1, 1500ms).empty()) << "a PUBACK left before its message committed";
  db.exec("COMMIT");
  auto acked = broker.read_pubacks(ids.size(), 60s);
  EXPECT_EQ(acked, ids) << "every message acknowledged once, in arrival order\n" << evp.log();

  EXPECT_EQ(mirrored(), 40 - 3 - 2 - 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic = 'autocore/ESP32_001/telemetry'"), 17);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'invalid_json'"), 3);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'too_large'"), 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'too_large' AND length(raw) = 4096"), 2)
      << "a too_large dead letter keeps the first 4 KiB";
  // The MQTT topic is the event's topic.
  EXPECT_EQ(db.column("SELECT topic FROM events_mirror WHERE idempotency_key = 'order-1'").at(0),
            "tracker/events/projects/created");
  EXPECT_EQ(mqtt_metric(http_port, "evpipe_mqtt_pubacks_total"), 40);
}

// evpipe bounds its own unacknowledged messages (max_inflight) instead of
// trusting the broker's limit: past it, it stops reading the socket.
TEST_F(MqttSource, StopsReadingAtMaxInflight) {
  fake_broker broker;
  uint16_t http_port = free_port();
  mqtt_options o;
  o.max_inflight = 10;
  evpipe_process evp(mqtt_config(db, "mqtt://127.0.0.1:" + std::to_string(broker.port()), http_port, o), "mqtt_inflight");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  broker.accept_client();
  db.exec("BEGIN");
  db.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  std::vector<uint16_t> ids;
  for (uint16_t i = 1; i <= 100; ++i) {
    ids.push_back(i);
    broker.publish("tracker/events/inflight", valid_event("inflight-" + std::to_string(i)), i);
  }
  // First the pause itself (10 read, reading stopped and counted), then that
  // it holds: the other 90 wait in the socket, readable at once, so a reader
  // that went on would show within the 1.5 s.
  auto paused = [&] {
    return received(http_port) >= 10 &&
           mqtt_metric(http_port, "evpipe_backpressure_waits_total{source=\"mqtt\"}") >= 1;
  };
  ASSERT_TRUE(eventually(paused)) << "received " << received(http_port) << "\n" << evp.log();
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(received(http_port), 10);
  EXPECT_EQ(unacked(http_port), 10);
  db.exec("COMMIT");
  EXPECT_EQ(broker.read_pubacks(ids.size(), 60s), ids) << evp.log();
  EXPECT_EQ(mirrored(), 100);
}

// A broker that stops answering (no PINGRESP within the keep alive) is
// declared gone, and evpipe connects again.
TEST_F(MqttSource, SilentBrokerIsDetectedByKeepAliveAndReconnected) {
  fake_broker broker;
  uint16_t http_port = free_port();
  std::string cfg = mqtt_config(db, "mqtt://127.0.0.1:" + std::to_string(broker.port()), http_port);
  cfg.replace(cfg.find("keepalive_s = 5"), 15, "keepalive_s = 1");
  evpipe_process evp(cfg, "mqtt_keepalive");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  auto first = broker.accept_client();
  EXPECT_EQ(first.keepalive_s, 1);
  // Never answer: read_pubacks would answer PINGREQs, so just wait.
  auto second = broker.accept_client(60s);
  EXPECT_EQ(second.client_id, "evpipe-it");
  EXPECT_NE(evp.log().find("no PINGRESP within the keep alive"), std::string::npos) << evp.log();
  EXPECT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_reconnects_total") == 1; }));
}

TEST_F(MqttSource, DatabaseDownSendsNoPubackAndEverythingLandsAfter) {
  fake_broker broker;
  tcp_proxy proxy(db.server_port());
  uint16_t http_port = free_port();
  mqtt_options o;
  o.dsn = db.dsn_via(proxy.port());
  evpipe_process evp(mqtt_config(db, "mqtt://127.0.0.1:" + std::to_string(broker.port()), http_port, o), "mqtt_dbdown");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  broker.accept_client();
  broker.publish("tracker/events/a", valid_event("down-0"), 1);
  ASSERT_EQ(broker.read_pubacks(1, 60s), std::vector<uint16_t>{1});

  proxy.cut();
  std::vector<uint16_t> ids;
  for (uint16_t i = 1; i <= 200; ++i) {
    ids.push_back(static_cast<uint16_t>(i + 1));
    broker.publish("tracker/events/a", valid_event("down-" + std::to_string(i)), static_cast<uint16_t>(i + 1));
  }
  // No PUBACK while the database is down. Checked once evpipe has read all
  // 201 and a write of them has failed, so the 2.5 s below watch PUBACKs that
  // a broken evpipe would send now, on any machine.
  ASSERT_TRUE(eventually([&] {
    return received(http_port) >= 201 && mqtt_metric(http_port, "evpipe_db_errors_total") >= 1;
  })) << "received " << received(http_port) << "\n" << evp.log();
  EXPECT_TRUE(broker.read_pubacks(1, 2500ms).empty()) << "PUBACK sent while the database was down";
  proxy.restore();
  EXPECT_EQ(broker.read_pubacks(ids.size(), 60s), ids) << evp.log();
  EXPECT_EQ(mirrored(), 201);
}

TEST_F(MqttSource, BacklogPublishedWhileStoppedLandsOnStart) {
  mosquitto_broker broker("backlog");
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, broker.url(), http_port), "mqtt_backlog");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);  // the broker now holds the session and its subscriptions
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();

  long unique = 0, invalid = 0;
  auto messages = mixed_messages("backlog", 3000, unique, invalid);
  {
    mqtt_test_client producer(broker.port(), "producer-backlog");
    ASSERT_EQ(producer.publish_all("tracker/events/projects/created", messages), messages.size());
  }
  evp.start(http_port);
  EXPECT_TRUE(eventually([&] { return mirrored() >= unique; })) << evp.log();
  EXPECT_TRUE(eventually([&] { return db.count("SELECT count(*) FROM dlq_events") >= invalid; }));
  ASSERT_TRUE(eventually([&] { return settled(http_port, 3000); })) << evp.log();
  EXPECT_EQ(mirrored(), unique);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), invalid);
}

TEST_F(MqttSource, KilledBeforeCommitRedeliveredExactlyOnce) {
  mosquitto_broker broker("sigkill");
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, broker.url(), http_port), "mqtt_sigkill");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);

  db.exec("BEGIN");
  db.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  auto messages = valid_messages("kill", 500);
  {
    mqtt_test_client producer(broker.port(), "producer-kill");
    ASSERT_EQ(producer.publish_all("tracker/events/x", messages), messages.size());
  }
  // evpipe has every message and cannot commit any.
  ASSERT_TRUE(eventually([&] { return received(http_port) == 500; }));
  evp.kill(SIGKILL);
  db.exec("COMMIT");
  EXPECT_EQ(mirrored(), 0);

  evp.start(http_port);
  EXPECT_TRUE(eventually([&] { return mirrored() >= 500; })) << evp.log();
  ASSERT_TRUE(eventually([&] { return settled(http_port, 500); })) << evp.log();
  EXPECT_EQ(mirrored(), 500);
  EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror"), 500);
}

TEST_F(MqttSource, BrokerRestartReconnectsAndLosesNothing) {
  mosquitto_broker broker("restart");
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, broker.url(), http_port), "mqtt_restart");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);
  {
    mqtt_test_client producer(broker.port(), "producer-a");
    ASSERT_EQ(producer.publish_all("tracker/events/a", valid_messages("before", 300)), 300u);
  }
  ASSERT_TRUE(eventually([&] { return mirrored() == 300; })) << evp.log();

  broker.stop(SIGTERM);  // saves the sessions
  // evpipe has seen the connection go before the broker returns.
  ASSERT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_connections_active") == 0; })) << evp.log();
  broker.start();
  {
    // Published while evpipe is still reconnecting: queued in its session.
    mqtt_test_client producer(broker.port(), "producer-b");
    ASSERT_EQ(producer.publish_all("tracker/events/b", valid_messages("after", 300)), 300u);
  }
  EXPECT_TRUE(eventually([&] { return mirrored() >= 600; })) << evp.log();
  ASSERT_TRUE(eventually([&] {
    return unacked(http_port) == 0 && mqtt_metric(http_port, "evpipe_mqtt_connections_active") == 1;
  })) << evp.log();
  EXPECT_EQ(mirrored(), 600);
  EXPECT_GE(mqtt_metric(http_port, "evpipe_mqtt_reconnects_total"), 1);
  EXPECT_EQ(mqtt_metric(http_port, "evpipe_mqtt_connections_active"), 1);
  EXPECT_NE(evp.log().find("connection lost"), std::string::npos);
}

TEST_F(MqttSource, SharedGroupSplitsOneStreamBetweenTwoProcesses) {
  mosquitto_broker broker("shared");
  uint16_t http_a = free_port(), http_b = free_port();
  mqtt_options a, b;
  a.client_id = "evpipe-a";
  b.client_id = "evpipe-b";
  a.shared_group = b.shared_group = "ingest";
  evpipe_process evp_a(mqtt_config(db, broker.url(), http_a, a), "mqtt_shared_a");
  evpipe_process evp_b(mqtt_config(db, broker.url(), http_b, b), "mqtt_shared_b");
  ASSERT_EQ(evp_a.run_command("migrate"), 0) << evp_a.log("migrate.log");
  start_connected(evp_a, http_a);
  start_connected(evp_b, http_b);
  // Both subscriptions in place before the first message (else one process
  // could get the whole stream before the other subscribes).
  ASSERT_TRUE(eventually([&] {
    return broker.subscriptions("evpipe-a", "$share/ingest/tracker/events/#") >= 1 &&
           broker.subscriptions("evpipe-b", "$share/ingest/tracker/events/#") >= 1;
  })) << broker.log();

  {
    mqtt_test_client producer(broker.port(), "producer-shared");
    ASSERT_EQ(producer.publish_all("tracker/events/shared", valid_messages("shared", 2000)), 2000u);
  }
  EXPECT_TRUE(eventually([&] { return mirrored() >= 2000; })) << evp_a.log() << evp_b.log();
  ASSERT_TRUE(eventually([&] { return received(http_a) + received(http_b) >= 2000 && unacked(http_a) == 0 && unacked(http_b) == 0; }));
  EXPECT_EQ(mirrored(), 2000);
  double got_a = received(http_a);
  double got_b = received(http_b);
  EXPECT_GT(got_a, 0);
  EXPECT_GT(got_b, 0);
  EXPECT_EQ(got_a + got_b, 2000) << "each message goes to one member of the group";
}

TEST_F(MqttSource, SeveralConnectionsOfOneProcessShareTheStream) {
  mosquitto_broker broker("connections");
  uint16_t http_port = free_port();
  mqtt_options o;
  o.client_id = "evpipe-multi";
  o.shared_group = "multi";
  o.extra = "connections = 3\n";
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, o), "mqtt_connections");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_connections_active") == 3; }))
      << evp.log();
  ASSERT_TRUE(eventually([&] {
    for (const char* id : {"evpipe-multi-1", "evpipe-multi-2", "evpipe-multi-3"}) {
      if (broker.subscriptions(id, "$share/multi/tracker/events/#") == 0) return false;
    }
    return true;
  })) << broker.log();
  {
    mqtt_test_client producer(broker.port(), "producer-multi");
    ASSERT_EQ(producer.publish_all("tracker/events/multi", valid_messages("multi", 3000)), 3000u);
  }
  EXPECT_TRUE(eventually([&] { return mirrored() >= 3000; })) << evp.log();
  ASSERT_TRUE(eventually([&] { return settled(http_port, 3000); })) << evp.log();
  EXPECT_EQ(mirrored(), 3000);
  EXPECT_EQ(received(http_port), 3000)
      << "each message reaches one of the three sessions";
  auto log = evp.log();
  for (const char* id : {"evpipe-multi-1", "evpipe-multi-2", "evpipe-multi-3"}) {
    EXPECT_NE(log.find(std::string("(") + id + "): connected"), std::string::npos) << id;
  }
}

TEST_F(MqttSource, DeadLettersAreRepublishedAfterTheirRowCommits) {
  mosquitto_broker broker("dlqpub");
  uint16_t http_port = free_port();
  mqtt_options o;
  o.dlq_publish = true;
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, o), "mqtt_dlqpub");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);

  mqtt_test_client watcher(broker.port(), "dlq-watcher");
  watcher.subscribe("tracker/dlq/#");
  {
    mqtt_test_client producer(broker.port(), "producer-dlq");
    std::string missing_kind = "{\"trace_id\":\"" + uuid_for(1) +
                               "\",\"ts\":\"2025-01-15T10:30:00Z\",\"idempotency_key\":\"dlq-1\",\"payload\":{}}";
    ASSERT_EQ(producer.publish_all("tracker/events/projects/created", {missing_kind}), 1u);
    ASSERT_EQ(producer.publish_all("autocore/ESP32_001/telemetry", {"temp=21.5"}), 1u);
  }
  auto first = watcher.receive(60s);
  auto second = watcher.receive(60s);
  ASSERT_TRUE(first && second) << evp.log();
  EXPECT_EQ(first->first, "tracker/dlq/tracker_events_projects_created");
  EXPECT_NE(first->second.find("\"original_topic\":\"tracker/events/projects/created\""), std::string::npos);
  EXPECT_NE(first->second.find("\"failure_reason\":\"missing_field\""), std::string::npos);
  EXPECT_NE(first->second.find("\"payload\":{\"trace_id\""), std::string::npos) << "a parsed payload is embedded";
  EXPECT_NE(first->second.find("\"failure_timestamp\":\"20"), std::string::npos);
  EXPECT_EQ(second->first, "tracker/dlq/autocore_ESP32_001_telemetry");
  EXPECT_NE(second->second.find("\"payload\":\"temp=21.5\""), std::string::npos) << "unparsable text as a string";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 2);
}

TEST_F(MqttSource, MqttsVerifiesTheBrokerCertificate) {
  mosquitto_broker broker("tls", /*tls=*/true);
  uint16_t http_port = free_port(), other_http = free_port();
  mqtt_options o;
  o.extra = "ca_file = \"" + broker.ca_file() + "\"\n";
  evpipe_process evp(mqtt_config(db, broker.tls_url(), http_port, o), "mqtt_tls");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);
  {
    mqtt_test_client producer(broker.port(), "producer-tls");  // the plain listener of the same broker
    ASSERT_EQ(producer.publish_all("tracker/events/tls", valid_messages("tls", 200)), 200u);
  }
  EXPECT_TRUE(eventually([&] { return mirrored() == 200; })) << evp.log();

  // A broker whose certificate does not chain to the configured CA is refused.
  mqtt_options wrong;
  wrong.client_id = "evpipe-wrong-ca";
  wrong.extra = "ca_file = \"" + broker.dir() + "/other-ca.crt\"\n";
  evpipe_process untrusting(mqtt_config(db, broker.tls_url(), other_http, wrong), "mqtt_tls_wrong");
  untrusting.start(other_http);
  // Wait for the refusal itself, then check that it left no session.
  EXPECT_TRUE(eventually([&] { return untrusting.log().find("certificate verify failed") != std::string::npos; }))
      << untrusting.log();
  EXPECT_EQ(mqtt_metric(other_http, "evpipe_mqtt_connections_active"), 0);
  EXPECT_NE(untrusting.log().find("TLS handshake"), std::string::npos) << untrusting.log();
  EXPECT_NE(untrusting.log().find("certificate verify failed"), std::string::npos) << untrusting.log();
}

TEST_F(MqttSource, LogsInWithThePasswordFileAndNeverShowsThePassword) {
  const std::string password = "pw-" + std::to_string(::getpid()) + "-secret";
  mosquitto_broker broker("auth", /*tls=*/false, "ingest", password);
  std::string pw_file = env_or("TMPDIR", "/tmp") + "/mqtt_pw_" + std::to_string(::getpid());
  std::ofstream(pw_file) << password << "\n";
  std::string wrong_file = pw_file + ".wrong";
  std::ofstream(wrong_file) << "not-" << password << "\n";

  uint16_t http_port = free_port(), wrong_http = free_port();
  mqtt_options o;
  o.extra = "username = \"ingest\"\npassword_file = \"" + pw_file + "\"\n";
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, o), "mqtt_auth");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  ASSERT_EQ(evp.run_command("check-config"), 0);
  EXPECT_EQ(evp.log("check-config.log").find(password), std::string::npos) << "check-config printed the password";
  start_connected(evp, http_port);
  {
    mqtt_test_client producer(broker.port(), "producer-auth", true, "ingest", password);
    ASSERT_EQ(producer.publish_all("tracker/events/auth", valid_messages("auth", 50)), 50u);
  }
  EXPECT_TRUE(eventually([&] { return mirrored() == 50; })) << evp.log();

  mqtt_options bad;
  bad.client_id = "evpipe-wrong-pw";
  bad.extra = "username = \"ingest\"\npassword_file = \"" + wrong_file + "\"\n";
  evpipe_process refused(mqtt_config(db, broker.url(), wrong_http, bad), "mqtt_auth_wrong");
  refused.start(wrong_http);
  // "Logged once, not once per retry" means something only after retries:
  // wait until the broker has refused three attempts (only this process
  // uses a wrong password).
  auto refusals = [&] {
    std::string text = broker.log();
    size_t n = 0;
    for (auto at = text.find("disconnected, not authorised"); at != std::string::npos;
         at = text.find("disconnected, not authorised", at + 1)) {
      ++n;
    }
    return n;
  };
  ASSERT_TRUE(eventually([&] { return refusals() >= 3; })) << broker.log();
  EXPECT_EQ(mqtt_metric(wrong_http, "evpipe_mqtt_connections_active"), 0);
  std::string log = refused.log();
  EXPECT_NE(log.find("not authorized"), std::string::npos) << log;
  // Logged once, not once per retry (retries go to debug).
  EXPECT_EQ(log.find("not authorized"), log.rfind("not authorized")) << log;
  EXPECT_EQ(log.find(password), std::string::npos);
  EXPECT_EQ(evp.log().find(password), std::string::npos);
}

// SIGKILL at random moments while evpipe drains a stream from Mosquitto, ten
// times; after the last restart every message is stored exactly once (the
// broker redelivers what evpipe never acknowledged; dedup drops the copies of
// what it had committed but not yet acknowledged).
//
// The kills are paced by progress, not by the clock: each comes once a random
// 1,000 to 5,000 more rows are stored than when the process started, so every
// kill lands mid-drain and ten of them fit in the stream whether the disk
// commits 150,000 rows in a few seconds or a sanitizer build crawls. The
// producer keeps at most `ahead` messages more than are stored and publishes
// until the tenth kill, at most max_n messages: the stream goes on through
// every kill and the drain after the last one stays short.
TEST_F(MqttSource, RepeatedSigkillLosesAndDuplicatesNothing) {
  mosquitto_broker broker("repeated_kill");
  uint16_t http_port = free_port();
  mqtt_options o;
  o.client_id = "evpipe-kill";
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, o), "mqtt_repeated_kill");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);

  const int want_kills = 10;
  const long min_step = 1000, max_step = 5000;
  // Ten kills need at most 50,000 rows and what a commit overshoots each step
  // by (a batch is up to 4,096 rows a shard): max_n is far past that.
  const size_t chunk = 5000, ahead = 20000, max_n = 300000;
  std::atomic<bool> enough{false};
  std::atomic<size_t> published{0};
  std::atomic<long> stored{0};  // the last row count the kill loop saw
  std::atomic<bool> short_chunk{false};
  std::thread producer([&] {
    mqtt_test_client client(broker.port(), "producer-kill");
    for (size_t from = 0; from < max_n && !enough.load(); from += chunk) {
      while (!enough.load() && published.load() > static_cast<size_t>(stored.load()) + ahead) {
        std::this_thread::sleep_for(5ms);
      }
      std::vector<std::string> messages;
      for (size_t i = from; i < from + chunk; ++i) messages.push_back(valid_event("mk-" + std::to_string(i)));
      size_t acked = client.publish_all("tracker/events/kill", messages, 120s);
      published += acked;
      if (acked != messages.size()) {
        short_chunk = true;  // some may still arrive: the final count would mean nothing
        return;
      }
    }
  });
  std::mt19937 rng(777);
  int kills = 0;
  long rows_at_start = 0;  // stored when the running process started
  while (kills < want_kills) {
    long step = min_step + static_cast<long>(rng() % (max_step - min_step + 1));
    auto grown = [&] {
      stored = mirrored();
      return stored.load() >= rows_at_start + step;
    };
    if (!eventually(grown, 120s)) {
      ADD_FAILURE() << "no " << step << " rows stored after restart " << kills << " (" << rows_at_start << " before, "
                    << published.load() << " published)\n" << evp.log();
      break;
    }
    evp.kill(SIGKILL);
    ++kills;
    // One snapshot (a commit the killed process had sent may still land).
    auto counts = db.column("SELECT count(*) || ' ' || count(DISTINCT idempotency_key) FROM events_mirror").at(0);
    long rows = std::stol(counts);
    std::cout << "kill " << kills << " with " << rows << " rows (" << rows - rows_at_start << " since the start), "
              << published.load() << " published and acknowledged by the broker\n";
    EXPECT_EQ(counts, std::to_string(rows) + " " + std::to_string(rows)) << "a key stored twice";
    rows_at_start = rows;
    evp.start(http_port);
  }
  enough = true;
  producer.join();
  EXPECT_EQ(kills, want_kills);
  ASSERT_FALSE(short_chunk.load()) << "the broker did not acknowledge a chunk in time";
  const long n = static_cast<long>(published.load());
  std::cout << n << " messages published\n";
  EXPECT_TRUE(eventually([&] { return mirrored() >= n; }, 120s)) << evp.log();
  EXPECT_TRUE(eventually([&] { return unacked(http_port) == 0; })) << evp.log();
  EXPECT_EQ(mirrored(), n);
  EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror"), n);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

// SIGTERM while messages stream in: evpipe stops reading, commits what it
// read, sends those PUBACKs, says DISCONNECT and exits 0; every message it
// acknowledged is stored, and the acknowledged ones are a prefix of the
// stream (the rest stays with the broker for the next start).
TEST_F(MqttSource, SigtermAcknowledgesWhatItCommittedAndDisconnects) {
  fake_broker broker;
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, "mqtt://127.0.0.1:" + std::to_string(broker.port()), http_port), "mqtt_sigterm");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  broker.accept_client();
  const int n = 20000;
  std::vector<uint16_t> ids;
  for (int i = 0; i < n; ++i) {
    try {
      broker.publish("tracker/events/term", valid_event("term-" + std::to_string(i)), static_cast<uint16_t>(i % 65535 + 1));
    } catch (const std::exception&) {
      break;  // evpipe is done and has closed the connection (a slow build gets there first)
    }
    ids.push_back(static_cast<uint16_t>(i % 65535 + 1));
    if (i == n / 4) {
      // Mid-stream for evpipe too: it has read messages (a slow build may not
      // have read any of the 5,000 yet), and more keep coming.
      ASSERT_TRUE(eventually([&] { return received(http_port) >= 1; })) << evp.log();
      evp.kill(SIGTERM);
    }
  }
  auto acked = broker.read_pubacks(n, 60s);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
  EXPECT_TRUE(broker.saw_disconnect());
  ASSERT_GT(acked.size(), 0u);
  EXPECT_TRUE(std::equal(acked.begin(), acked.end(), ids.begin())) << "PUBACKs are a prefix, in order";
  long acked_stored = db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = ANY (ARRAY(SELECT 'term-' || g "
                               "FROM generate_series(0, " + std::to_string(acked.size() - 1) + ") g))");
  EXPECT_EQ(acked_stored, static_cast<long>(acked.size()));
  std::cout << acked.size() << " of " << ids.size() << " published acknowledged before the exit\n";
}

}  // namespace
}  // namespace evpipe::testing
