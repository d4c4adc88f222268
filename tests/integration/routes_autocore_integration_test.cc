// AutoCore end to end (issue 10): the shipped config/examples/autocore.toml
// and schemas/examples/autocore.sql, simulated devices publishing through
// Mosquitto out of order and with redeliveries, and every table compared
// with what a reference computation says it must hold.

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <random>

#include "tests/support/harness.h"
#include "tests/support/mqtt_peer.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string at(int t) {
  char ts[32];
  std::snprintf(ts, sizeof ts, "2025-01-28T10:%02d:%02dZ", t / 60, t % 60);
  return ts;
}

class RoutesAutoCore : public ::testing::Test {
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
  test_db db;
};

TEST_F(RoutesAutoCore, DevicesRelaysTelemetryInteractionsAndSystemMessages) {
  mosquitto_broker broker("routes_autocore");
  uint16_t http_port = free_port();
  // The example as shipped; its ${...} defaults are given by the environment,
  // and the metrics listener gets a port of its own.
  ::setenv("EVPIPE_DSN", db.dsn().c_str(), 1);
  ::setenv("AUTOCORE_BROKER", broker.url().c_str(), 1);
  std::string cfg = "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n[batch]\nmax_rows = 16\n" +
                    read_file(std::string(EVPIPE_SOURCE_DIR) + "/config/examples/autocore.toml");
  evpipe_process evp(cfg, "routes_autocore");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(read_file(std::string(EVPIPE_SOURCE_DIR) + "/schemas/examples/autocore.sql"));
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] { return broker.subscriptions("evpipe-autocore", "autocore/+/system/+") >= 1; }))
      << evp.log() << broker.log();

  std::mt19937 rng(5);
  mqtt_test_client device(broker.port(), "simulated-devices");
  size_t published = 0;
  auto publish = [&](const std::string& topic, std::vector<std::string> msgs) {
    published += device.publish_all(topic, msgs);
  };
  constexpr int devices = 4;
  // Status: times 1..8 out of order, each sent twice; the newest wins.
  for (int d = 0; d < devices; ++d) {
    std::string id = "ESP32_00" + std::to_string(d);
    std::vector<std::string> msgs;
    for (int t = 1; t <= 8; ++t) {
      // Device 3 goes offline at its newest time.
      const std::string status = d == 3 && t == 8 ? "offline" : "online";
      msgs.push_back("{\"device_id\":\"" + id + "\",\"status\":\"" + status + "\",\"ip_address\":\"192.168.1." +
                     std::to_string(100 + d) + "\",\"firmware_version\":\"1.2." + std::to_string(t) +
                     "\",\"uptime\":" + std::to_string(t * 60) + ",\"timestamp\":\"" + at(t) + "\"}");
    }
    std::vector<std::string> twice = msgs;
    twice.insert(twice.end(), msgs.begin(), msgs.end());
    std::shuffle(twice.begin(), twice.end(), rng);
    publish("autocore/" + id + "/status", twice);
  }
  // Telemetry: 10 readings per device, one redelivered; one the table's CHECK refuses.
  for (int d = 0; d < devices; ++d) {
    std::string id = "ESP32_00" + std::to_string(d);
    std::vector<std::string> msgs;
    for (int t = 0; t < 10; ++t) {
      msgs.push_back("{\"device_id\":\"" + id + "\",\"temperature\":" + std::to_string(20 + t) +
                     ".5,\"humidity\":45.2,\"voltage\":3.28,\"memory_free\":45120,\"timestamp\":\"" + at(100 + t) +
                     "\"}");
    }
    msgs.push_back(msgs[3]);
    if (d == 0) msgs.push_back("{\"humidity\":150,\"timestamp\":\"" + at(200) + "\"}");
    publish("autocore/" + id + "/telemetry", msgs);
  }
  // Relay 0 of device 1: true, true, false, false, true, false at t = 1..6,
  // sent newest first and each twice: 4 changes, current state false.
  {
    const bool states[] = {true, true, false, false, true, false};
    std::vector<std::string> msgs;
    for (int t = 6; t >= 1; --t) {
      msgs.push_back(std::string("{\"device_id\":\"ESP32_001\",\"relay_index\":0,\"state\":") +
                     (states[t - 1] ? "true" : "false") + ",\"triggered_by\":\"manual\",\"timestamp\":\"" + at(t) +
                     "\"}");
    }
    std::vector<std::string> twice = msgs;
    twice.insert(twice.end(), msgs.begin(), msgs.end());
    publish("autocore/ESP32_001/relay/0/status", twice);
    publish("autocore/ESP32_002/relay/3/status",
            {"{\"state\":true,\"timestamp\":\"" + at(1) + "\"}", "{\"state\":\"on\",\"timestamp\":\"" + at(2) + "\"}"});
  }
  publish("autocore/ESP32_000/display/interaction",
          {"{\"screen\":\"home\",\"element\":\"relay0\",\"action\":\"tap\",\"details\":{\"x\":10,\"y\":20},"
           "\"timestamp\":\"" + at(1) + "\"}",
           "{\"screen\":\"home\",\"action\":\"swipe\",\"timestamp\":\"" + at(2) + "\"}",
           "{\"screen\":\"home\",\"timestamp\":\"" + at(3) + "\"}"});  // no action: route_mismatch
  publish("autocore/ESP32_000/system/boot", {"{\"reason\":\"power_on\",\"timestamp\":\"" + at(0) + "\"}"});
  publish("autocore/ESP32_003/system/error", {"{\"code\":17}"});

  ASSERT_TRUE(eventually([&] {
    return metric_value(http_get(http_port, "/metrics"), "evpipe_events_received_total{source=\"mqtt\"}") >= published &&
           metric_value(http_get(http_port, "/metrics"), "evpipe_unacked_events{source=\"mqtt\"}") == 0;
  })) << evp.log();

  {
    // The seed's health fields for the MQTT source (issue 10).
    const std::string ready = http_get(http_port, "/health/ready");
    EXPECT_NE(ready.find("\"source\":\"mqtt\",\"address\":\"" + broker.url() +
                         " as evpipe-autocore\",\"broker_connected\":true,\"connections\":1,\"last_message_time\":\"20"),
              std::string::npos)
        << ready;
    const size_t at = ready.find("\"messages_processed\":");
    ASSERT_NE(at, std::string::npos) << ready;
    EXPECT_GE(std::stoull(ready.substr(at + 21)), published) << ready;
  }

  // Reference: every device at its newest status (time 8).
  for (int d = 0; d < devices; ++d) {
    std::string id = "ESP32_00" + std::to_string(d);
    EXPECT_EQ(db.column("SELECT concat_ws('|', status, is_online, ip_address, firmware_version, uptime_s, "
                        "last_seen = '" + at(8) + "'::timestamptz) FROM devices WHERE device_id = '" + id + "'"),
              std::vector<std::string>{(d == 3 ? "offline|f" : "online|t") + std::string("|192.168.1.") +
                                       std::to_string(100 + d) + "|1.2.8|480|t"})
        << id << "\n" << evp.log();
  }
  EXPECT_EQ(db.count("SELECT count(*) FROM devices"), devices);
  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry"), devices * 10);
  EXPECT_EQ(db.count("SELECT count(DISTINCT (device_id, measured_at)) FROM telemetry"), devices * 10);
  EXPECT_EQ(db.column("SELECT concat_ws('|', current_state, changed_at = '" + at(6) +
                      "'::timestamptz) FROM relays WHERE device_id = 'ESP32_001' AND relay_index = 0"),
            std::vector<std::string>{"f|t"});
  EXPECT_EQ(db.column("SELECT string_agg(state::text || '<' || coalesce(previous_state::text, '-'), ',' ORDER BY "
                      "changed_at) FROM relay_state_history WHERE device_id = 'ESP32_001'"),
            std::vector<std::string>{"true<-,false<true,true<false,false<true"});
  EXPECT_EQ(db.count("SELECT count(*) FROM relay_events WHERE device_id = 'ESP32_001'"), 6) << "redeliveries kept out";
  EXPECT_EQ(db.column("SELECT concat_ws('|', device_id, relay_index, current_state) FROM relays WHERE device_id = "
                      "'ESP32_002'"),
            std::vector<std::string>{"ESP32_002|3|t"});
  EXPECT_EQ(db.column("SELECT string_agg(action || ':' || coalesce(details->>'x', '-'), ',' ORDER BY occurred_at) "
                      "FROM display_interactions"),
            std::vector<std::string>{"tap:10,swipe:-"});
  EXPECT_EQ(db.column("SELECT string_agg(topic, ',' ORDER BY topic) FROM events_mirror"),
            std::vector<std::string>{"autocore/ESP32_000/system/boot,autocore/ESP32_003/system/error"});

  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'route_mismatch'"), 2)
      << "the relay state \"on\" and the interaction without an action";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'route_mismatch' AND failure_reason LIKE "
                     "'route \"relay_events\": column \"state\" (source \"state\"): expected true or false, got a string'"),
            1);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'db_rejected' AND original_topic = "
                     "'autocore/ESP32_000/telemetry'"),
            1)
      << "humidity 150 breaks the CHECK";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 3);
}

}  // namespace
}  // namespace evpipe::testing
