// A server that can no longer write (a failed-over old primary): evpipe must
// drop the connection and reconnect through the DSN, so that a multi-host DSN
// with target_session_attrs=read-write reaches the new primary.

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "tests/support/harness.h"
#include "tests/support/pg_scratch.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

class PostgresFailover : public ::testing::Test {
 protected:
  void SetUp() override {
    if (env_or("EVPIPE_TEST_DSN").empty()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
  }
};

// The keys stored on one cluster, its row count, and one statement run there.
std::set<std::string> keys_in(const std::string& dsn) {
  PGconn* c = PQconnectdb(dsn.c_str());
  PGresult* r = PQexec(c, "SELECT idempotency_key FROM events_mirror");
  std::set<std::string> out;
  bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
  std::string err = PQerrorMessage(c);
  for (int i = 0; ok && i < PQntuples(r); ++i) out.insert(PQgetvalue(r, i, 0));
  PQclear(r);
  PQfinish(c);
  if (!ok) throw std::runtime_error(err);
  return out;
}
long rows_in(const std::string& dsn) {
  PGconn* c = PQconnectdb(dsn.c_str());
  PGresult* r = PQexec(c, "SELECT count(*) FROM events_mirror");
  long n = PQresultStatus(r) == PGRES_TUPLES_OK ? std::stol(PQgetvalue(r, 0, 0)) : -1;
  PQclear(r);
  PQfinish(c);
  return n;
}
void run_on(const std::string& dsn, const std::string& sql) {
  PGconn* c = PQconnectdb(dsn.c_str());
  PGresult* r = PQexec(c, sql.c_str());
  auto st = PQresultStatus(r);
  std::string err = PQerrorMessage(c);
  PQclear(r);
  PQfinish(c);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) throw std::runtime_error(sql + ": " + err);
}

TEST_F(PostgresFailover, ReadOnlyPrimaryMakesEvpipeReconnectToTheWritableHost) {
  scratch_cluster a("failover_a"), b("failover_b");
  uint16_t port = free_port();
  auto config = [&](const std::string& dsn) {
    return "[pipeline]\nshards = 2\n[batch]\nmax_rows = 200\nlinger_ms = 2\n"
           "[postgres]\ndsn = \"" + dsn + "\"\nretry_base_ms = 20\nretry_max_ms = 200\n"
           "[http]\nlisten = \"\"\n[log]\nlevel = \"info\"\n"
           "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\ntopic = \"failover/it\"\n";
  };
  for (auto* cluster : {&a, &b}) {
    evpipe_process m(config(cluster->dsn()), "failover_migrate_" + std::to_string(cluster->port()));
    ASSERT_EQ(m.run_command("migrate"), 0) << m.log("migrate.log");
  }
  // A first: the primary. B answers as a writable server too, which is what
  // a promoted standby looks like to libpq.
  std::string both = "host=127.0.0.1,127.0.0.1 port=" + std::to_string(a.port()) + "," + std::to_string(b.port()) +
                     " dbname=postgres user=" + dsn_keywords(a.dsn()).at("user") + " target_session_attrs=read-write";
  evpipe_process evp(config(both), "failover_run");
  evp.start(port);

  std::set<std::string> sent;
  auto round = [&](const std::string& name, size_t n) {
    std::string data;
    for (size_t i = 0; i < n; ++i) {
      std::string key = name + "-" + std::to_string(i);
      data += valid_event(key) + "\n";
      sent.insert(key);
    }
    ndjson_client producer(port);
    producer.send_all(data);
    ASSERT_EQ(producer.read_acks_until(n, 60s), n) << name << ": " << evp.log();
  };
  ASSERT_NO_FATAL_FAILURE(round("primary", 2000));
  EXPECT_EQ(rows_in(a.dsn()), 2000);

  // A turns read-only for every session, including evpipe's open ones.
  run_on(a.dsn(), "ALTER SYSTEM SET default_transaction_read_only = on");
  run_on(a.dsn(), "SELECT pg_reload_conf()");
  // Once a new session sees it, the postmaster has reloaded and signalled the
  // open sessions, which apply it at their next statement.
  auto deadline = std::chrono::steady_clock::now() + 30s;
  bool read_only = false;
  while (!read_only && std::chrono::steady_clock::now() < deadline) {
    PGconn* c = PQconnectdb(a.dsn().c_str());
    PGresult* r = PQexec(c, "SHOW default_transaction_read_only");
    read_only = PQresultStatus(r) == PGRES_TUPLES_OK && std::string(PQgetvalue(r, 0, 0)) == "on";
    PQclear(r);
    PQfinish(c);
    if (!read_only) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(read_only);
  ASSERT_NO_FATAL_FAILURE(round("after_failover", 2000));

  auto on_a = keys_in(a.dsn()), on_b = keys_in(b.dsn());
  EXPECT_EQ(on_a.size() + on_b.size(), sent.size()) << "no key twice across A and B";
  EXPECT_EQ(rows_in(a.dsn()) + rows_in(b.dsn()), static_cast<long>(sent.size()));
  std::set<std::string> all(on_a);
  all.insert(on_b.begin(), on_b.end());
  EXPECT_EQ(all, sent);
  // Batches that committed before the reload reached evpipe's sessions may
  // be on A; the rest went to B.
  EXPECT_GT(on_b.size(), 0u) << "evpipe never reached B";
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
