// SIGKILL during a mixed AutoCore stream through Mosquitto, then a restart:
// every table holds exactly what a reference computation says. Nothing
// acknowledged is lost (PUBACK after commit), and what the broker redelivers
// (unacknowledged when evpipe died) is stored once (evpipe_route_keys).

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
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
  char ts[40];
  std::snprintf(ts, sizeof ts, "2025-01-28T%02d:%02d:%02dZ", t / 3600, (t / 60) % 60, t % 60);
  return ts;
}

class RoutesSigkill : public ::testing::Test {
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

TEST_F(RoutesSigkill, RestartAfterSigkillLeavesExactlyTheReference) {
  mosquitto_broker broker("routes_sigkill");
  uint16_t http_port = free_port();
  ::setenv("EVPIPE_DSN", db.dsn().c_str(), 1);
  ::setenv("AUTOCORE_BROKER", broker.url().c_str(), 1);
  std::string cfg = "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n[batch]\nmax_rows = 32\n" +
                    read_file(std::string(EVPIPE_SOURCE_DIR) + "/config/examples/autocore.toml");
  evpipe_process evp(cfg, "routes_sigkill");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(read_file(std::string(EVPIPE_SOURCE_DIR) + "/schemas/examples/autocore.sql"));
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] { return broker.subscriptions("evpipe-autocore", "autocore/+/system/+") >= 1; }))
      << evp.log() << broker.log();

  // The stream: per device, telemetry readings, status updates (out of
  // order) and relay flips, interleaved by a seeded shuffle.
  constexpr int devices = 8, readings = 300, statuses = 40, flips = 30;
  struct msg {
    std::string topic, payload;
  };
  std::vector<msg> stream;
  std::vector<std::string> expected_history;  // per device "state<previous" sequences, joined
  for (int d = 0; d < devices; ++d) {
    std::string id = "DEV_" + std::to_string(d);
    for (int t = 0; t < readings; ++t) {
      stream.push_back({"autocore/" + id + "/telemetry", "{\"temperature\":" + std::to_string(t % 40) +
                                                             ".25,\"humidity\":50,\"timestamp\":\"" + at(t) + "\"}"});
    }
    for (int t = 1; t <= statuses; ++t) {
      stream.push_back({"autocore/" + id + "/status", "{\"status\":\"s" + std::to_string(t) + "\",\"uptime\":" +
                                                          std::to_string(t) + ",\"timestamp\":\"" + at(t) + "\"}"});
    }
    for (int t = 1; t <= flips; ++t) {
      // State is on for t % 3 != 0: a change at every multiple of 3 and just after.
      stream.push_back({"autocore/" + id + "/relay/1/status", std::string("{\"state\":") +
                                                                  (t % 3 ? "true" : "false") +
                                                                  ",\"timestamp\":\"" + at(t) + "\"}"});
    }
  }
  std::mt19937 rng(23);
  std::shuffle(stream.begin(), stream.end(), rng);
  // Reference: telemetry once each; devices at s<statuses>; relays at the
  // state of the last flip; history: the first state, then each change.
  long history_rows = 1;
  for (int t = 2; t <= flips; ++t) history_rows += ((t % 3) != 0) != (((t - 1) % 3) != 0);

  mqtt_test_client device(broker.port(), "sigkill-devices");
  auto publish = [&](size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) ASSERT_EQ(device.publish_all(stream[i].topic, {stream[i].payload}), 1u);
  };
  const size_t half = stream.size() / 2;
  publish(0, half);
  // Killed while it works through the first half (small batches keep it busy).
  ASSERT_TRUE(eventually([&] { return db.count("SELECT count(*) FROM telemetry") > 50; }, 60s, 2ms)) << evp.log();
  evp.kill(SIGKILL);
  const long at_kill = db.count("SELECT count(*) FROM telemetry");
  publish(half, stream.size());  // queued by the broker for evpipe's session
  evp.start(http_port);

  const long total_readings = long(devices) * readings;
  ASSERT_TRUE(eventually(
      [&] {
        return db.count("SELECT count(*) FROM telemetry") >= total_readings &&
               metric_value(http_get(http_port, "/metrics"), "evpipe_unacked_events{source=\"mqtt\"}") == 0 &&
               db.count("SELECT count(*) FROM devices WHERE status = 's" + std::to_string(statuses) + "'") == devices &&
               db.count("SELECT count(*) FROM relay_events") >= long(devices) * flips;
      },
      120s))
      << evp.log() << "\ntelemetry rows when killed: " << at_kill;
  std::this_thread::sleep_for(500ms);  // anything still redelivered would show now

  EXPECT_LT(at_kill, total_readings) << "the kill was meant to come mid-stream";
  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry"), total_readings);
  EXPECT_EQ(db.count("SELECT count(DISTINCT (device_id, measured_at)) FROM telemetry"), total_readings);
  EXPECT_EQ(db.count("SELECT count(*) FROM devices WHERE status = 's" + std::to_string(statuses) + "' AND uptime_s = " +
                     std::to_string(statuses)),
            devices);
  EXPECT_EQ(db.count("SELECT count(*) FROM relay_events"), long(devices) * flips);
  EXPECT_EQ(db.count("SELECT count(*) FROM relays WHERE current_state = " + std::string(flips % 3 ? "true" : "false")),
            devices);
  EXPECT_EQ(db.count("SELECT count(*) FROM relay_state_history"), long(devices) * history_rows);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
