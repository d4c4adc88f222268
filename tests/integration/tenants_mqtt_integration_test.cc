// Tenants on MQTT sources (issue 13, docs/tenants.md): the tenant from a
// topic level (tenant_topic) and from a fixed tenant per connection; a
// message claiming another tenant is dead-lettered as tenant_mismatch as
// its sender's, never mirrored; the same key from three tenants is three rows.
// And from an MQTT 5 user property (tenant_property), published by Debian's
// mosquitto_pub at protocol 5. A connection over its tenant's quota pauses.

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

// Over its quota, a tenant's MQTT connection pauses, and it takes a few
// messages a cycle while it is over (docs/tenants.md, "Quotas"): the broker
// (no in-flight limit here) hands evpipe the 2,000 messages as fast as it
// reads, and a link taking every buffered one (up to some 450 of these a
// read) would pause a handful of times; it pauses after every 16 instead,
// so what it takes trickles in at the quota's pace. The quota holds either way.
TEST_F(MqttSource, OverItsQuotaAConnectionPausesAndTakesAFewMessagesAtATime) {
  mosquitto_broker broker("tenants_quota");
  uint16_t http_port = free_port();
  mqtt_options o;
  o.topics = R"(["quota/#"])";
  o.extra = "tenant = \"alpha\"\n[tenants]\nenabled = true\n[tenants.quotas.alpha]\nevents_per_s = 400\nburst = 100\n";
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, o), "mqtt_tenants_quota");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_sessions_subscribed") == 1; })) << evp.log();
  const size_t n = 2000;
  std::vector<std::string> messages;
  for (size_t i = 0; i < n; ++i) messages.push_back(message("q" + std::to_string(i)));
  const auto sent_at = std::chrono::steady_clock::now();
  {
    mqtt_test_client producer(broker.port(), "producer-quota");
    ASSERT_EQ(producer.publish_all("quota/x", messages), n);
  }
  ASSERT_TRUE(eventually([&] { return settled(http_port, n); }, 120s)) << evp.log();
  // 1,900 past the burst at 400/s: 4.75 s (a lower bound of 4 s: a slow machine only takes longer).
  const auto took = std::chrono::steady_clock::now() - sent_at;
  EXPECT_GE(took, std::chrono::seconds(4)) << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE tenant_id = 'alpha'"), long(n));
  // Past the first cycle (up to some 450 messages), a pause every 16: near
  // 100; taking all it had buffered paused it a handful of times.
  EXPECT_GE(metric_family_sum(http_get(http_port, "/metrics"), "evpipe_tenant_throttled_total"), 20) << evp.log();
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// Publishes `payload` with Debian's mosquitto_pub at MQTT 5 and QoS 1, with
// `props` as its -D publish options: a real client's property bytes.
int mosquitto_pub_v5(uint16_t port, const std::string& payload, const std::string& props) {
  std::string cmd = "timeout 20 mosquitto_pub -h 127.0.0.1 -p " + std::to_string(port) +
                    " -V mqttv5 -q 1 -i pub-tenant-property -t tracker/events/t -m '" + payload + "' " + props;
  return std::system(cmd.c_str());
}
std::string property(const std::string& name, const std::string& value) {
  return "-D publish user-property " + name + " '" + value + "' ";
}

TEST_F(MqttSource, TenantsFromAnMqtt5UserProperty) {
  mosquitto_broker broker("tenant_property");
  uint16_t http_port = free_port();
  mqtt_options o;
  o.client_id = "evpipe-it-tenant-property";
  o.extra = "protocol = \"5\"\nsession_expiry_s = 3600\ntenant_property = \"tenant\"\n[tenants]\nenabled = true\n";
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, o), "mqtt_tenant_property");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);
  // A new session's SUBSCRIBE may still be on its way after CONNACK: publish
  // one event (no property, no claim: no tenant) until it arrives.
  ASSERT_TRUE(eventually([&] {
    return mosquitto_pub_v5(broker.port(), message("w0"), "") == 0 && received(http_port) >= 1;
  })) << evp.log();
  const double warm = received(http_port);
  // The property is the credential: stored as its tenant, a claim may only repeat it.
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), message("k1"), property("tenant", "alpha")), 0);
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), message("k2", claim("alpha")), property("tenant", "alpha")), 0);
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), message("k3", claim("beta")), property("tenant", "alpha")), 0);
  // The first property of that name counts; other properties do not.
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), message("k1"),
                             property("site", "gamma") + property("tenant", "beta") + property("tenant", "alpha")),
            0);
  // Without the property the claim decides, as with no credentials.
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), message("k4", claim("delta")), property("site", "x")), 0);
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), message("k5", claim("delta")), ""), 0);
  // A value that is no tenant name is nobody's tenant: invalid_tenant.
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), message("k6", claim("alpha")), property("tenant", "a b")), 0);
  // Too large: over max_event_bytes, and over the packet limit (streamed
  // past, its properties read from the packet's head): still the sender's.
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), std::string(5000, 'x'), property("tenant", "alpha")), 0);
  ASSERT_EQ(mosquitto_pub_v5(broker.port(), std::string(100'000, 'y'), property("tenant", "beta")), 0);
  ASSERT_TRUE(eventually([&] { return settled(http_port, warm + 9); })) << evp.log();
  EXPECT_EQ(db.column("SELECT tenant_id || '|' || idempotency_key FROM events_mirror ORDER BY tenant_id, idempotency_key"),
            (std::vector<std::string>{"|w0", "alpha|k1", "alpha|k2", "beta|k1", "delta|k4", "delta|k5"}))
      << evp.log();
  EXPECT_EQ(db.column("SELECT payload->>'idempotency_key' || '|' || tenant_id || '|' || reason_code FROM dlq_events "
                      "WHERE reason_code <> 'too_large' ORDER BY 1"),
            (std::vector<std::string>{"k3|alpha|tenant_mismatch", "k6||invalid_tenant"}));
  EXPECT_EQ(db.column("SELECT tenant_id || '|' || length(raw) FROM dlq_events WHERE reason_code = 'too_large' ORDER BY 1"),
            (std::vector<std::string>{"alpha|4096", "beta|4096"}));
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

}  // namespace
}  // namespace mqtt_it
}  // namespace evpipe::testing
