// The MQTT source end to end, delivery and recovery: PUBACKs after commit and
// in order, max_inflight, keep alive, a database outage, a backlog, SIGKILL
// before commit and a broker restart. The evpipe binary runs against the real
// PostgreSQL that scripts/test.sh starts, and either Debian's Mosquitto
// (started here per test, persistence on) or a fake broker that shows exactly
// which PUBACKs evpipe sends and when.

#include <gtest/gtest.h>

#include "tests/integration/mqtt_source_fixture.h"
#include "tests/support/held_queues.h"

namespace evpipe::testing {
namespace {

using namespace mqtt_it;

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
  // Counted when the write completes, which can come a moment after the
  // broker has read the bytes: wait for it, then check it stops at 40.
  EXPECT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_pubacks_total") >= 40; }, 10s));
  EXPECT_EQ(mqtt_metric(http_port, "evpipe_mqtt_pubacks_total"), 40);
}

// With events_mirror locked (in `db`'s open transaction), the broker
// publishes 100 messages, packet ids 1 to 100 (returned), to a link of
// max_inflight 10; returns once the link has read 10 and paused. COMMIT lets
// it go on.
void pause_at_max_inflight(test_db& db, fake_broker& broker, evpipe_process& evp, uint16_t http_port,
                           const std::string& key_prefix, std::vector<uint16_t>& ids) {
  db.exec("BEGIN");
  db.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  for (uint16_t i = 1; i <= 100; ++i) {
    ids.push_back(i);
    broker.publish("tracker/events/inflight", valid_event(key_prefix + std::to_string(i)), i);
  }
  ASSERT_TRUE(eventually([&] {
    return received(http_port) >= 10 && mqtt_metric(http_port, "evpipe_backpressure_waits_total{source=\"mqtt\"}") >= 1;
  })) << "received " << received(http_port) << "\n" << evp.log();
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
  // First the pause itself (10 read, reading stopped and counted), then that
  // it holds: the other 90 wait in the socket, readable at once, so a reader
  // that went on would show within the 1.5 s.
  std::vector<uint16_t> ids;
  pause_at_max_inflight(db, broker, evp, http_port, "inflight-", ids);
  if (HasFatalFailure()) return;
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(received(http_port), 10);
  EXPECT_EQ(unacked(http_port), 10);
  db.exec("COMMIT");
  EXPECT_EQ(broker.read_pubacks(ids.size(), 60s), ids) << evp.log();
  EXPECT_EQ(mirrored(), 100);
}

// A link that does not read still tells the broker it is alive. Here it is
// at max_inflight with its table locked: nothing commits, so it has no
// PUBACK to send, and the PINGRESP to its PINGREQ waits unread behind the 90
// messages in its socket. A broker drops a client it has heard nothing from
// for 1.5 keep alives, so the link sends a PINGREQ every half keep alive even
// with the last one unanswered; the link before this sent one and then
// nothing for as long as the pause lasted.
TEST_F(MqttSource, APausedLinkKeepsPingingTheBroker) {
  fake_broker broker;
  uint16_t http_port = free_port();
  mqtt_options o;
  o.max_inflight = 10;
  o.keepalive_s = 1;
  evpipe_process evp(mqtt_config(db, "mqtt://127.0.0.1:" + std::to_string(broker.port()), http_port, o), "mqtt_paused_ping");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  broker.accept_client();
  std::vector<uint16_t> ids;
  pause_at_max_inflight(db, broker, evp, http_port, "paused-ping-", ids);
  if (HasFatalFailure()) return;
  // 5 s of the pause, with every PINGREQ read then answered at once: one
  // every 0.5 to 0.75 s.
  const size_t before = broker.pingreqs();
  EXPECT_TRUE(broker.read_pubacks(1, 5s).empty()) << "PUBACK sent before the commit";
  EXPECT_GE(broker.pingreqs() - before, 4u) << evp.log();
  EXPECT_EQ(received(http_port), 10);
  db.exec("COMMIT");
  EXPECT_EQ(broker.read_pubacks(ids.size(), 60s), ids) << evp.log();
  // Its own verdict on the broker waited while it was not reading. Checked
  // at once: from here on nothing answers its PINGREQs, and a second after
  // the next one it gives this broker up, as it should.
  EXPECT_EQ(evp.log().find("no PINGRESP"), std::string::npos) << evp.log();
  EXPECT_EQ(mqtt_metric(http_port, "evpipe_mqtt_reconnects_total"), 0) << evp.log();
  EXPECT_EQ(mirrored(), 100);
}

// A link paused because a shard queue is full reads on once the shards have
// taken their queues: the shard rings the link's room bell (router::
// wait_for_room). Here nothing else can wake it: its one message in flight
// waits on a held key and stays unacknowledged, and it paused just before
// the release, so its 1 s back-up timer would fire about 950 ms after it.
TEST_F(MqttSource, ALinkPausedForRoomReadsOnOnceTheShardsTakeTheirQueues) {
  fake_broker broker;
  uint16_t http_port = free_port(), tcp_port = free_port();
  mqtt_options o;
  o.keepalive_s = 60;  // the fake broker answers no ping here
  o.extra = "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) + "\"\ntopic = \"tracker/events/it\"\n";
  std::string cfg = mqtt_config(db, "mqtt://127.0.0.1:" + std::to_string(broker.port()), http_port, o);
  const std::string pipeline = "[pipeline]\nshards = 2\n";
  cfg.replace(cfg.find(pipeline), pipeline.size(), pipeline + held_queues_tuning);
  evpipe_process evp(cfg, "mqtt_ring");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  broker.accept_client();
  held_queues queues(db, tcp_port, http_port, "evpipe", "mqtt-ring");
  queues.wait_full();
  if (HasFatalFailure()) return;
  held_keys first(db, "mqtt-ring-first-", 1);
  const double waits = mqtt_metric(http_port, "evpipe_backpressure_waits_total{source=\"mqtt\"}");
  broker.publish("tracker/events/ring", valid_event("mqtt-ring-first-0"), 1);
  ASSERT_TRUE(eventually([&] {
    return received(http_port) == 1 && mqtt_metric(http_port, "evpipe_backpressure_waits_total{source=\"mqtt\"}") > waits;
  })) << "the link should read one message and pause: received " << received(http_port) << ", "
         << queues.depths() << "\n" << evp.log();
  broker.publish("tracker/events/ring", valid_event("mqtt-ring-second"), 2);
  std::this_thread::sleep_for(50ms);
  ASSERT_EQ(received(http_port), 1) << "the link read on while the queues were full";
  const auto released = std::chrono::steady_clock::now();
  queues.release();
  ASSERT_TRUE(eventually([&] { return received(http_port) == 2; }, 30s, 5ms)) << evp.log();
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - released);
  std::cout << "the link read its next message " << waited.count() << " ms after the release\n";
  EXPECT_LT(waited, 600ms) << "the link read on " << waited.count() << " ms after the queues had room";
  first.release();
  EXPECT_EQ(broker.read_pubacks(2, 60s), (std::vector<uint16_t>{1, 2})) << evp.log();
  EXPECT_EQ(queues.acks(60s), uint64_t(held_queues::flood)) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'mqtt-ring-%'"), held_queues::flood + 2);
}

// A broker that stops answering (no PINGRESP within the keep alive) is
// declared gone, and evpipe connects again.
TEST_F(MqttSource, SilentBrokerIsDetectedByKeepAliveAndReconnected) {
  fake_broker broker;
  uint16_t http_port = free_port();
  mqtt_options o;
  o.keepalive_s = 1;
  evpipe_process evp(mqtt_config(db, "mqtt://127.0.0.1:" + std::to_string(broker.port()), http_port, o),
                     "mqtt_keepalive");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  auto first = broker.accept_client();
  EXPECT_EQ(first.keepalive_s, 1);
  // Never answer: read_pubacks would answer PINGREQs, so just wait.
  auto second = broker.accept_client(60s);
  EXPECT_EQ(second.client_id, "evpipe-it");
  EXPECT_TRUE(evp.log_has("no PINGRESP within the keep alive")) << evp.log();
  EXPECT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_reconnects_total") == 1; }));
}

// Connected is not subscribed: between CONNACK and SUBACK a new session
// receives nothing, so a producer (or a test) waiting for "connected" can
// publish into the void. The sessions_subscribed gauge says when the
// subscription holds, and drops with the connection.
TEST_F(MqttSource, SubscribedGaugeFollowsTheSubackNotTheConnack) {
  fake_broker broker;
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, "mqtt://127.0.0.1:" + std::to_string(broker.port()), http_port), "mqtt_subscribed");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  broker.accept_connect();
  ASSERT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_connections_active") == 1; })) << evp.log();
  std::this_thread::sleep_for(300ms);  // evpipe's SUBSCRIBE is out; no SUBACK yet
  EXPECT_EQ(mqtt_metric(http_port, "evpipe_mqtt_sessions_subscribed"), 0);
  broker.answer_subscribe();
  EXPECT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_sessions_subscribed") == 1; })) << evp.log();
  broker.drop_client();
  EXPECT_TRUE(eventually([&] {
    return mqtt_metric(http_port, "evpipe_mqtt_connections_active") == 0 &&
           mqtt_metric(http_port, "evpipe_mqtt_sessions_subscribed") == 0;
  })) << evp.log();
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
  EXPECT_TRUE(evp.log_has("connection lost")) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
