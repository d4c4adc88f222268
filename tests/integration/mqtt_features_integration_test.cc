// The MQTT source end to end, its configuration features: shared_group across
// processes, several connections of one process, dead-letter republishing,
// mqtts:// and password files (against Mosquitto, see mqtt_source_fixture.h).

#include <gtest/gtest.h>

#include "tests/integration/mqtt_source_fixture.h"

namespace evpipe::testing {
namespace {

using namespace mqtt_it;

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
  EXPECT_TRUE(untrusting.log_has("TLS handshake")) << untrusting.log();
  EXPECT_TRUE(untrusting.log_has("certificate verify failed")) << untrusting.log();
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

}  // namespace
}  // namespace evpipe::testing
