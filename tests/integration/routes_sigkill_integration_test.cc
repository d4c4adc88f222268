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
  auto subscribed = [&] { return broker.subscriptions("evpipe-autocore", "autocore/+/system/+") >= 1; };
  evp.start(http_port);
  ASSERT_TRUE(eventually(subscribed)) << evp.log() << broker.log();

  // The stream: per device, telemetry readings, status updates (out of
  // order), relay flips, display interactions and system messages,
  // interleaved by a seeded shuffle: every route of the example.
  constexpr int devices = 8, readings = 300, statuses = 40, flips = 30, taps = 20, system = 5;
  struct msg {
    std::string topic, payload;
  };
  std::vector<msg> stream;
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
    for (int t = 0; t < taps; ++t) {
      stream.push_back({"autocore/" + id + "/display/interaction",
                        "{\"screen\":\"home\",\"element\":\"relay" + std::to_string(t % 4) +
                            "\",\"action\":\"tap\",\"timestamp\":\"" + at(t) + "\"}"});
    }
    for (int t = 0; t < system; ++t) {
      stream.push_back({"autocore/" + id + "/system/heartbeat", "{\"seq\":" + std::to_string(t) + "}"});
    }
  }
  std::mt19937 rng(23);
  std::shuffle(stream.begin(), stream.end(), rng);
  // Reference: every message once; devices at s<statuses>; relays at the
  // state of the last flip; history: the first state, then each change.
  std::string history;
  for (int t = 1; t <= flips; ++t) {
    const bool on = t % 3 != 0, before = (t - 1) % 3 != 0;
    if (t == 1 || on != before) history += std::string(history.empty() ? "" : ",") + (on ? "t" : "f") + at(t);
  }

  mqtt_test_client device(broker.port(), "sigkill-devices");
  auto publish = [&](size_t from, size_t to, size_t step = 1) {
    for (size_t i = from; i < to; i += step) {
      ASSERT_EQ(device.publish_all(stream[i].topic, {stream[i].payload}), 1u);
    }
  };
  const size_t half = stream.size() / 2;
  publish(0, half);
  // Killed while it holds messages it has not committed: once some rows are
  // in, telemetry is locked, and evpipe is killed while its write waits for
  // the lock (what it read is neither committed nor acknowledged then).
  ASSERT_TRUE(eventually([&] { return db.count("SELECT count(*) FROM telemetry") > 50; }, 60s, 2ms)) << evp.log();
  db.exec("BEGIN");
  db.exec("LOCK TABLE telemetry IN ACCESS EXCLUSIVE MODE");
  ASSERT_TRUE(eventually([&] { return db.lock_waiters("telemetry") > 0; }, 60s, 2ms)) << evp.log();
  const double held = metric_value(http_get(http_port, "/metrics"), "evpipe_unacked_events{source=\"mqtt\"}");
  evp.kill(SIGKILL);
  db.exec("COMMIT");
  EXPECT_GT(held, 0) << "evpipe held no unacknowledged message when killed: the test proved nothing";
  publish(half, stream.size());  // queued by the broker for evpipe's session
  evp.start(http_port);

  const long total_readings = long(devices) * readings;
  auto stored_all = [&] {
    return db.count("SELECT count(*) FROM telemetry") >= total_readings &&
           metric_value(http_get(http_port, "/metrics"), "evpipe_unacked_events{source=\"mqtt\"}") == 0 &&
           db.count("SELECT count(*) FROM devices WHERE status = 's" + std::to_string(statuses) + "'") == devices &&
           db.count("SELECT count(*) FROM relay_events") >= long(devices) * flips &&
           db.count("SELECT count(*) FROM display_interactions") >= long(devices) * taps &&
           db.count("SELECT count(*) FROM events_mirror WHERE topic LIKE 'autocore/%/system/%'") >= long(devices) * system;
  };
  ASSERT_TRUE(eventually(stored_all, 120s)) << evp.log();

  // Redelivered after another restart (the dedup window is empty then): a
  // tenth of the whole stream again, every route's messages among them.
  evp.kill(SIGKILL);
  evp.start(http_port);
  ASSERT_TRUE(eventually(subscribed)) << evp.log() << broker.log();
  size_t again = 0;
  for (size_t i = 0; i < stream.size(); i += 10) ++again;
  publish(0, stream.size(), 10);
  ASSERT_TRUE(eventually([&] {
    const std::string m = http_get(http_port, "/metrics");
    return metric_value(m, "evpipe_events_received_total{source=\"mqtt\"}") >= double(again) &&
           metric_value(m, "evpipe_unacked_events{source=\"mqtt\"}") == 0;
  }, 60s)) << evp.log();

  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry"), total_readings);
  EXPECT_EQ(db.count("SELECT count(DISTINCT (device_id, measured_at)) FROM telemetry"), total_readings);
  EXPECT_EQ(db.count("SELECT count(*) FROM devices WHERE status = 's" + std::to_string(statuses) + "' AND uptime_s = " +
                     std::to_string(statuses)),
            devices);
  EXPECT_EQ(db.count("SELECT count(*) FROM relay_events"), long(devices) * flips);
  EXPECT_EQ(db.count("SELECT count(*) FROM relays WHERE current_state = " + std::string(flips % 3 ? "true" : "false")),
            devices);
  // Each device's history, state and time, in the device's order.
  EXPECT_EQ(db.column("SELECT string_agg(CASE WHEN state THEN 't' ELSE 'f' END || to_char(changed_at AT TIME ZONE "
                      "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ',' ORDER BY changed_at) FROM relay_state_history "
                      "GROUP BY device_id ORDER BY device_id"),
            std::vector<std::string>(devices, history));
  EXPECT_EQ(db.count("SELECT count(*) FROM display_interactions"), long(devices) * taps);
  EXPECT_EQ(db.count("SELECT count(DISTINCT (device_id, occurred_at)) FROM display_interactions"), long(devices) * taps);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic LIKE 'autocore/%/system/%'"), long(devices) * system);
  EXPECT_EQ(db.count("SELECT count(DISTINCT (topic, payload)) FROM events_mirror"), long(devices) * system);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
