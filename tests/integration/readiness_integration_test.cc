// /health/ready tells the truth about writes (issue 17 §6): a shard whose
// batch has waited longer than [health] max_commit_stall_ms for its commit,
// or that retries a failed write, makes it 503 with the shard, the SQLSTATE
// and since when; its next commit makes it 200 again. An idle shard is ready.
// The evpipe binary runs as a child process against the real PostgreSQL that
// scripts/test.sh starts.

#include <gtest/gtest.h>

#include "tests/support/harness.h"
#include "tests/support/tcp_proxy.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

std::string ready_config(const std::string& dsn, uint16_t tcp_port, uint16_t http_port) {
  return "[pipeline]\nshards = 2\n"
         "[postgres]\ndsn = \"" + dsn + "\"\nretry_base_ms = 50\nretry_max_ms = 200\n"
         "[health]\nmax_commit_stall_ms = 500\n"
         "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
         "[log]\nlevel = \"warn\"\n"
         "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) + "\"\ntopic = \"ready/it\"\n";
}

std::string batch_of(const std::string& run, int n) {
  std::string data;
  for (int i = 0; i < n; ++i) data += valid_event(run + "-" + std::to_string(i)) + "\n";
  return data;
}

std::string status_of(const std::string& reply) { return reply.substr(0, reply.find("\r\n")); }

class Readiness : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
  }
  test_db db;
};

// A migration's ACCESS EXCLUSIVE lock holds every COPY: the connection is up,
// but nothing commits. Past max_commit_stall_ms readiness is 503 "commit
// stalled" with the shard and since when; once the lock goes and the batch
// commits, 200, and the shard's last-commit timestamp has moved.
TEST_F(Readiness, StalledCommitsMakeItNotReadyUntilTheNextCommit) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(ready_config(db.dsn(), port, http_port), "ready_stall");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  EXPECT_TRUE(eventually([&] { return status_of(http_get(http_port, "/health/ready")) == "HTTP/1.1 200 OK"; }, 60s))
      << http_get(http_port, "/health/ready");
  double committed_before = metric_value(http_get(http_port, "/metrics"),
                                         "evpipe_shard_last_commit_timestamp_seconds{shard=\"0\"}");
  ASSERT_GT(committed_before, 0);
  side_session locker(db.dsn());
  locker.exec("BEGIN");
  locker.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  ndjson_client c(port);
  c.send_all(batch_of("stall", 200));
  std::string reply;
  ASSERT_TRUE(eventually([&] {
    reply = http_get(http_port, "/health/ready");
    return reply.find("commit stalled") != std::string::npos;
  }, 60s)) << reply;
  EXPECT_EQ(status_of(reply), "HTTP/1.1 503 Service Unavailable");
  EXPECT_NE(reply.find("\"shard\":"), std::string::npos) << reply;
  EXPECT_NE(reply.find("\"since\":\"20"), std::string::npos) << reply;
  EXPECT_EQ(status_of(http_get(http_port, "/health/live")), "HTTP/1.1 200 OK");
  locker.exec("ROLLBACK");
  EXPECT_EQ(c.read_acks_until(200, 60s), 200u);
  EXPECT_TRUE(eventually([&] { return status_of(http_get(http_port, "/health/ready")) == "HTTP/1.1 200 OK"; }, 60s))
      << http_get(http_port, "/health/ready");
  auto metrics = http_get(http_port, "/metrics");
  double committed_after = std::max(metric_value(metrics, "evpipe_shard_last_commit_timestamp_seconds{shard=\"0\"}"),
                                    metric_value(metrics, "evpipe_shard_last_commit_timestamp_seconds{shard=\"1\"}"));
  EXPECT_GT(committed_after, committed_before);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// Started while a migration holds events_mirror (ACCESS EXCLUSIVE): evpipe
// checks its tables in the catalog, so it listens and answers its health
// checks at once (it waited for the lock before, silent, without /health);
// its writes wait for the lock, readiness says so, and they commit once the
// lock goes.
TEST_F(Readiness, AStartDuringAMigrationsLockListensAndItsWritesWaitForTheLock) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(ready_config(db.dsn(), port, http_port), "ready_locked_start");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  side_session locker(db.dsn());
  locker.exec("BEGIN");
  locker.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  ASSERT_NO_THROW(evp.start(port)) << "it did not listen while the table was locked";
  EXPECT_EQ(status_of(http_get(http_port, "/health/live")), "HTTP/1.1 200 OK");
  ndjson_client c(port);
  c.send_all(batch_of("locked-start", 100));
  std::string reply;
  EXPECT_TRUE(eventually([&] {
    reply = http_get(http_port, "/health/ready");
    return reply.find("commit stalled") != std::string::npos;
  }, 60s)) << reply;
  EXPECT_EQ(c.read_acks_until(1, 500ms), 0u) << "acked while the table was locked";
  locker.exec("COMMIT");
  EXPECT_EQ(c.read_acks_until(100, 60s), 100u) << evp.log();
  EXPECT_TRUE(eventually([&] { return status_of(http_get(http_port, "/health/ready")) == "HTTP/1.1 200 OK"; }, 60s))
      << http_get(http_port, "/health/ready");
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// Writes that fail and are retried (here: evpipe's lock_timeout of 200 ms
// against a held lock, SQLSTATE 55P03) make readiness 503 "retrying a failed
// write" with that SQLSTATE, while the connection itself is fine.
TEST_F(Readiness, RetriedWritesNameTheSqlstate) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(ready_config(db.dsn("%20-clock_timeout%3D200"), port, http_port), "ready_retry");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  side_session locker(db.dsn());
  locker.exec("BEGIN");
  locker.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  ndjson_client c(port);
  c.send_all(batch_of("retry", 100));
  std::string reply;
  ASSERT_TRUE(eventually([&] {
    reply = http_get(http_port, "/health/ready");
    return reply.find("retrying a failed write") != std::string::npos;
  }, 60s)) << reply;
  EXPECT_EQ(status_of(reply), "HTTP/1.1 503 Service Unavailable");
  EXPECT_NE(reply.find("\"sqlstate\":\"55P03\""), std::string::npos) << reply;
  locker.exec("ROLLBACK");
  EXPECT_EQ(c.read_acks_until(100, 60s), 100u);
  EXPECT_TRUE(eventually([&] { return status_of(http_get(http_port, "/health/ready")) == "HTTP/1.1 200 OK"; }, 60s))
      << http_get(http_port, "/health/ready");
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'retry-%'"), 100);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// Started before its database (issue 17 §3): with the default startup =
// "wait" the listeners and /metrics come up, /health/live is 200 and
// /health/ready 503, sources read nothing, and once the database answers the
// events sent meanwhile are stored and acknowledged. With "fail" it exits 1.
TEST_F(Readiness, StartedBeforeTheDatabaseItWaitsThenIngests) {
  uint16_t port = free_port(), http_port = free_port();
  {
    evpipe_process migrate(ready_config(db.dsn(), port, http_port), "ready_wait_migrate");
    ASSERT_EQ(migrate.run_command("migrate"), 0) << migrate.log("migrate.log");
  }
  tcp_proxy proxy(db.server_port());
  ASSERT_NE(db.server_port(), 0);
  proxy.cut();  // the database is unreachable
  {
    std::string cfg = ready_config(db.dsn_via(proxy.port()), port, http_port);
    cfg.insert(cfg.find("[health]"), "startup = \"fail\"\n");  // still in [postgres]
    evpipe_process fail_fast(cfg, "ready_fail_fast");
    EXPECT_EQ(fail_fast.run_command("run"), 1) << fail_fast.log("run.log");
  }
  evpipe_process evp(ready_config(db.dsn_via(proxy.port()), port, http_port), "ready_wait");
  evp.start(port);
  EXPECT_TRUE(eventually([&] { return evp.log().find("waiting for it") != std::string::npos; }, 60s)) << evp.log();
  // start() waited for the status that says so, sent once every listener is up.
  EXPECT_EQ(status_of(http_get(http_port, "/health/live")), "HTTP/1.1 200 OK") << evp.log();
  EXPECT_EQ(status_of(http_get(http_port, "/health/ready")), "HTTP/1.1 503 Service Unavailable");
  ndjson_client c(port);
  c.send_all(batch_of("wait", 100));
  // A source that reads would count them within milliseconds; it must not.
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(metric_value(http_get(http_port, "/metrics"), "evpipe_events_received_total{source=\"tcp\"}"), 0);
  proxy.restore();
  EXPECT_EQ(c.read_acks_until(100, 120s), 100u) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'wait-%'"), 100);
  EXPECT_TRUE(eventually([&] { return status_of(http_get(http_port, "/health/ready")) == "HTTP/1.1 200 OK"; }, 60s))
      << http_get(http_port, "/health/ready");
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
