#pragma once
// What the TCP pipeline tests share (tests/integration/tcp_*_integration_test.cc):
// the configuration they run evpipe with, and the fixture that needs the test
// database.

#include <gtest/gtest.h>

#include <string>

#include "tests/support/harness.h"

namespace evpipe::testing {

// What a test changes in the configuration config_for() writes.
struct tuning {
  uint32_t queue_capacity = 65536;
  uint32_t max_rows = 500;
  uint32_t linger_ms = 2;
  uint32_t max_attempts = 0;
  std::string dsn;        // default: the test schema's
  std::string tcp_extra;  // more keys for the [[sources.tcp]] section
};

inline std::string config_for(const test_db& db, uint16_t tcp_port, uint16_t http_port, const tuning& t = {}) {
  return "[pipeline]\nshards = 2\nqueue_capacity = " + std::to_string(t.queue_capacity) + "\n"
         "[batch]\nmax_rows = " + std::to_string(t.max_rows) + "\nlinger_ms = " + std::to_string(t.linger_ms) + "\n"
         "[events]\nmax_event_bytes = 4096\n"
         "[postgres]\ndsn = \"" + (t.dsn.empty() ? db.dsn() : t.dsn) + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
         "max_attempts = " + std::to_string(t.max_attempts) + "\n"
         "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
         "[metrics]\nprefix = \"taylor\"\n"
         "[log]\nlevel = \"warn\"\n"
         "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) + "\"\ntopic = \"tracker/events/it\"\n" +
         t.tcp_extra;
}

// The fixture of both files: the test's own schema; skipped without a test
// database (failed instead under EVPIPE_REQUIRE_DB).
class TcpPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
  }
  test_db db;
};

}  // namespace evpipe::testing
