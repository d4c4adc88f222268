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
         "[log]\nlevel = \"warn\"\n" +
         // No stream unless the test asks for one (in tcp_extra): tests run in
         // parallel, and each evpipe would try the default 127.0.0.1:9465.
         std::string(t.tcp_extra.find("[stream]") == std::string::npos ? "[stream]\nlisten = \"\"\n" : "") +
         "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) + "\"\ntopic = \"tracker/events/it\"\n" +
         t.tcp_extra;
}

// What send_with_table_locked saw: the sessions that waited for the lock,
// the lines acked while they waited, and those acked after the commit.
struct acks_around_lock {
  long waiters = 0;
  uint64_t while_locked = 0;
  uint64_t after = 0;
};

// Acked only after commit, for whatever table the events go to: sends
// `lines` lines of `data` on a new connection to `port` while `db` holds
// `table` in ACCESS EXCLUSIVE mode, waits until evpipe's write waits for that
// lock, reads acks for a second, then commits and reads every ack.
inline acks_around_lock send_with_table_locked(test_db& db, uint16_t port, const std::string& table,
                                               const std::string& data, uint64_t lines) {
  using namespace std::chrono_literals;
  acks_around_lock r;
  db.exec("BEGIN");
  db.exec("LOCK TABLE " + table + " IN ACCESS EXCLUSIVE MODE");
  ndjson_client c(port);
  c.send_all(data);
  (void)eventually([&] { return (r.waiters = db.lock_waiters(table)) > 0; }, 30s);
  r.while_locked = c.read_acks_until(1, 1s);
  db.exec("COMMIT");
  r.after = c.read_acks_until(lines, 60s);
  return r;
}

// send_with_table_locked's promise: evpipe's write waited for the lock,
// nothing was acked meanwhile, and every line was after the commit.
inline ::testing::AssertionResult acked_only_after_commit(const acks_around_lock& a, uint64_t lines) {
  if (a.waiters <= 0) return ::testing::AssertionFailure() << "evpipe never waited for the lock: nothing was tested";
  if (a.while_locked != 0) return ::testing::AssertionFailure() << a.while_locked << " acked while the table was locked";
  if (a.after != lines) return ::testing::AssertionFailure() << a.after << " of " << lines << " acked after the commit";
  return ::testing::AssertionSuccess();
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
