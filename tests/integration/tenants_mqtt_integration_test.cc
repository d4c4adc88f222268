// Tenants on MQTT sources (issue 13, docs/tenants.md): the tenant from a
// topic level (tenant_topic) and from a fixed tenant per connection; a
// message claiming another tenant is dead-lettered as tenant_mismatch as
// its sender's, never mirrored; the same key from three tenants is three rows.

#include "tests/integration/mqtt_source_fixture.h"

namespace evpipe::testing {
namespace mqtt_it {
namespace {

std::string message(const std::string& key, const std::string& top_extra = "") {
  return "{\"trace_id\":\"" + uuid_for(static_cast<uint32_t>(std::hash<std::string>{}(key))) +
         "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"project_created\",\"idempotency_key\":\"" + key + "\"" +
         top_extra + ",\"payload\":{}}";
}
std::string claim(const std::string& tenant) { return ",\"tenant_id\":\"" + tenant + "\""; }

TEST_F(MqttSource, TenantsFromATopicLevelOrAFixedTenantPerConnection) {
  mosquitto_broker broker("tenants");
  uint16_t http_port = free_port();
  mqtt_options o;
  o.topics = R"(["tenants/#"])";
  o.extra = "tenant_topic = \"tenants/+/events/#\"\n"
            "[[sources.mqtt]]\nurl = \"" + broker.url() + "\"\nclient_id = \"evpipe-it-fixed\"\ntopics = [\"fixed/#\"]\n"
            "tenant = \"gamma\"\nkeepalive_s = 5\nbase_ms = 50\nmax_ms = 500\n"
            "[tenants]\nenabled = true\n";
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, o), "mqtt_tenants");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_sessions_subscribed") == 2; })) << evp.log();
  {
    mqtt_test_client producer(broker.port(), "producer-tenants");
    ASSERT_EQ(producer.publish_all("tenants/alpha/events/x", {message("k1"), message("k2", claim("beta"))}), 2u);
    ASSERT_EQ(producer.publish_all("tenants/beta/events/x", {message("k1"), message("k1", claim("beta"))}), 2u);
    ASSERT_EQ(producer.publish_all("fixed/x", {message("k1"), message("k3", claim("alpha"))}), 2u);
    ASSERT_EQ(producer.publish_all("tenants/other", {message("k4", claim("delta"))}), 1u);
  }
  ASSERT_TRUE(eventually([&] { return settled(http_port, 7); })) << evp.log();
  EXPECT_EQ(db.column("SELECT tenant_id || '|' || idempotency_key FROM events_mirror ORDER BY 1"),
            (std::vector<std::string>{"alpha|k1", "beta|k1", "delta|k4", "gamma|k1"}));
  EXPECT_EQ(db.column("SELECT payload->>'idempotency_key' || '|' || tenant_id || '|' || reason_code FROM dlq_events ORDER BY 1"),
            (std::vector<std::string>{"k2|alpha|tenant_mismatch", "k3|gamma|tenant_mismatch"}));
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

}  // namespace
}  // namespace mqtt_it
}  // namespace evpipe::testing
