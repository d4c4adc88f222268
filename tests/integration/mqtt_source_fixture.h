#pragma once
// What the MQTT source's integration tests share: the evpipe configuration
// they run, metric readers, the fixture (a test database, Mosquitto present)
// and message generators. Included by the mqtt_*_integration_test.cc files.

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
namespace mqtt_it {

struct mqtt_options {
  std::string client_id = "evpipe-it";
  std::string extra;         // more keys of [[sources.mqtt]]
  std::string shared_group;
  std::string dsn;           // default: the test schema
  bool dlq_publish = false;
  uint32_t max_inflight = 16384;
  uint32_t keepalive_s = 5;
  std::string topics = R"(["tracker/events/#", "autocore/+/telemetry"])";
};

inline std::string mqtt_config(const test_db& db, const std::string& url, uint16_t http_port, const mqtt_options& o = {}) {
  return "[pipeline]\nshards = 2\n"
         "[events]\nmax_event_bytes = 4096\n"
         "[postgres]\ndsn = \"" + (o.dsn.empty() ? db.dsn() : o.dsn) + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
         "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
         "[log]\nlevel = \"info\"\n"
         "[[sources.mqtt]]\nurl = \"" + url + "\"\nclient_id = \"" + o.client_id + "\"\n"
         "topics = " + o.topics + "\n"
         "keepalive_s = " + std::to_string(o.keepalive_s) + "\nbase_ms = 50\nmax_ms = 500\n"
         "max_inflight = " + std::to_string(o.max_inflight) + "\n" +
         (o.shared_group.empty() ? "" : "shared_group = \"" + o.shared_group + "\"\n") +
         (o.dlq_publish ? "dlq_publish = true\n" : "") + o.extra;
}

inline double mqtt_metric(uint16_t http_port, const std::string& sample) {
  return metric_value(http_get(http_port, "/metrics"), sample);
}
inline double received(uint16_t http_port) { return mqtt_metric(http_port, "evpipe_events_received_total{source=\"mqtt\"}"); }
inline double unacked(uint16_t http_port) { return mqtt_metric(http_port, "evpipe_unacked_events{source=\"mqtt\"}"); }

// True once the evpipe behind `http_port` has read at least `n` messages and
// every one it read has a committed outcome and its PUBACK: the tables are
// final for those messages, so an exact count checked now is meaningful on
// any machine (a sleep after "at least n rows" only hoped so).
inline bool settled(uint16_t http_port, double n) { return received(http_port) >= n && unacked(http_port) == 0; }

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

  // Starts evpipe and waits until its session is subscribed: connected is
  // not enough, a message published between CONNACK and SUBACK matches no
  // subscription of a new session (the broker drops it).
  void start_connected(evpipe_process& evp, uint16_t http_port) {
    evp.start(http_port);
    ASSERT_TRUE(eventually([&] { return mqtt_metric(http_port, "evpipe_mqtt_sessions_subscribed") == 1; }))
        << evp.log();
  }

  long mirrored() { return db.count("SELECT count(*) FROM events_mirror"); }

  test_db db;
};

// Message i of a run: valid and unique, with every 10th a resend of the key
// before it and every 25th not JSON at all.
inline std::vector<std::string> mixed_messages(const std::string& run, int n, long& unique, long& invalid) {
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

inline std::vector<std::string> valid_messages(const std::string& run, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(valid_event(run + "-" + std::to_string(i)));
  return out;
}

}  // namespace mqtt_it
}  // namespace evpipe::testing
