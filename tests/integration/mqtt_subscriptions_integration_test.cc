// The MQTT source's subscriptions follow the configuration (issue 9, defect
// 4): a filter removed from `topics` is unsubscribed from the persistent
// session on the next start (evpipe remembers what each client id subscribed
// in evpipe_mqtt_subscriptions), and a client id change that leaves an old
// session behind on the broker is reported by check-config and at start.
// Against Debian's Mosquitto and the test PostgreSQL (mqtt_source_fixture.h).

#include <gtest/gtest.h>

#include "tests/integration/mqtt_source_fixture.h"

namespace evpipe::testing {
namespace {

using namespace mqtt_it;

long stored_on(test_db& db, const std::string& topic_like) {
  return db.count("SELECT count(*) FROM events_mirror WHERE topic LIKE '" + topic_like + "'");
}

TEST_F(MqttSource, RemovedTopicFilterStopsDeliveringAfterRestart) {
  mosquitto_broker broker("unsubscribe");
  uint16_t http_port = free_port();
  mqtt_options before;
  before.client_id = "evpipe-unsub";
  evpipe_process first(mqtt_config(db, broker.url(), http_port, before), "mqtt_unsub_before");
  ASSERT_EQ(first.run_command("migrate"), 0) << first.log("migrate.log");
  start_connected(first, http_port);
  {
    mqtt_test_client producer(broker.port(), "producer-unsub-1");
    ASSERT_EQ(producer.publish_all("autocore/a/telemetry", {valid_event("old-1")}), 1u);
    ASSERT_EQ(producer.publish_all("tracker/events/x", {valid_event("keep-1")}), 1u);
  }
  ASSERT_TRUE(eventually([&] { return mirrored() == 2 && settled(http_port, 2); })) << first.log();
  EXPECT_EQ(stored_on(db, "autocore/%"), 1);
  // Both filters are remembered once their SUBACK came.
  ASSERT_TRUE(eventually([&] {
    return db.count("SELECT count(*) FROM evpipe_mqtt_subscriptions WHERE client_id = 'evpipe-unsub'") == 2;
  })) << first.log();
  first.kill(SIGTERM);
  ASSERT_EQ(first.wait(), 0) << first.log();

  // The config no longer has autocore/+/telemetry.
  mqtt_options after = before;
  after.topics = R"(["tracker/events/#"])";
  evpipe_process second(mqtt_config(db, broker.url(), http_port, after), "mqtt_unsub_after");
  {
    // Queued by the broker for the old subscription while evpipe is down.
    mqtt_test_client producer(broker.port(), "producer-unsub-2");
    ASSERT_EQ(producer.publish_all("autocore/b/telemetry", {valid_event("old-queued")}), 1u);
  }
  start_connected(second, http_port);
  // UNSUBACK received: the row is forgotten.
  EXPECT_TRUE(eventually([&] {
    return db.count("SELECT count(*) FROM evpipe_mqtt_subscriptions WHERE client_id = 'evpipe-unsub'") == 1;
  })) << second.log();
  EXPECT_TRUE(second.log_has("unsubscribing from filters no longer configured: \"autocore/+/telemetry\""))
      << second.log();
  {
    mqtt_test_client producer(broker.port(), "producer-unsub-3");
    ASSERT_EQ(producer.publish_all("autocore/c/telemetry", {valid_event("old-after")}), 1u);
    ASSERT_EQ(producer.publish_all("tracker/events/y", {valid_event("keep-2")}), 1u);
  }
  // The broker delivers in publish order: once keep-2 is stored and
  // everything read is acknowledged, old-after would be stored too.
  ASSERT_TRUE(eventually([&] { return mirrored() >= 3 && unacked(http_port) == 0; })) << second.log();
  EXPECT_EQ(stored_on(db, "tracker/events/%"), 2);
  EXPECT_EQ(stored_on(db, "autocore/%"), 1) << "a message of the removed filter was stored\n" << second.log();
  second.kill(SIGTERM);
  ASSERT_EQ(second.wait(), 0) << second.log();
}

TEST_F(MqttSource, ChangedClientIdLeavesAnOldSessionThatIsReported) {
  mosquitto_broker broker("left_behind");
  uint16_t http_port = free_port();
  mqtt_options old_id;
  old_id.client_id = "evpipe-old-id";
  evpipe_process first(mqtt_config(db, broker.url(), http_port, old_id), "mqtt_old_id");
  ASSERT_EQ(first.run_command("migrate"), 0) << first.log("migrate.log");
  start_connected(first, http_port);
  ASSERT_TRUE(eventually([&] {
    return db.count("SELECT count(*) FROM evpipe_mqtt_subscriptions WHERE client_id = 'evpipe-old-id'") == 2;
  })) << first.log();
  first.kill(SIGTERM);
  ASSERT_EQ(first.wait(), 0) << first.log();

  mqtt_options new_id;
  new_id.client_id = "evpipe-new-id";
  evpipe_process second(mqtt_config(db, broker.url(), http_port, new_id), "mqtt_new_id");
  ASSERT_EQ(second.run_command("check-config"), 0);
  std::string check = second.log("check-config.log");
  EXPECT_NE(check.find("client id \"evpipe-old-id\""), std::string::npos) << check;
  EXPECT_NE(check.find("left behind"), std::string::npos) << check;
  EXPECT_EQ(check.find("evpipe-new-id\" ("), std::string::npos) << check;
  start_connected(second, http_port);
  EXPECT_TRUE(eventually([&] { return second.log().find("\"evpipe-old-id\"") != std::string::npos; }))
      << second.log();
  second.kill(SIGTERM);
  EXPECT_EQ(second.wait(), 0) << second.log();
}

TEST_F(MqttSource, CheckConfigSaysWhenItCannotLookForOldSessions) {
  uint16_t http_port = free_port();
  mqtt_options o;
  o.dsn = "postgresql://evpipe@127.0.0.1:1/nothing?connect_timeout=2";
  evpipe_process evp(mqtt_config(db, "mqtt://127.0.0.1:1883", http_port, o), "mqtt_check_nodb");
  ASSERT_EQ(evp.run_command("check-config"), 0);
  EXPECT_NE(evp.log("check-config.log").find("cannot reach the database to check for MQTT sessions left behind"),
            std::string::npos)
      << evp.log("check-config.log");
}

}  // namespace
}  // namespace evpipe::testing
