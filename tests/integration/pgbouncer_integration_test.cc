// evpipe through Debian's PgBouncer in transaction pooling mode, which lends a
// server connection for one transaction only and recycles server connections
// (RECONNECT, server_lifetime): evpipe must keep no session state, start with
// any number of shards, and store every key exactly once.

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "tests/support/harness.h"
#include "tests/support/pg_scratch.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

class PgBouncer : public ::testing::Test {
 protected:
  void SetUp() override {
    if (env_or("EVPIPE_TEST_DSN").empty()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
    if (!pgbouncer_process::available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << pgbouncer_process::binary() << " is missing";
      GTEST_SKIP() << "no pgbouncer";
    }
  }
};

// What the producer sent so far, and what the tables must hold for it.
struct ledger {
  std::vector<std::string> stored_keys;  // every valid key sent, once
  std::vector<std::string> bad_lines;    // every distinct invalid event
};

// A round: `fresh` new keys, about 5 % invalid events, and resends of keys
// and bad events from earlier rounds (the dedup window holds one key, so the
// resends reach PostgreSQL's unique index: the staging-table path).
std::string build_round(const std::string& name, size_t fresh, ledger& l, uint64_t& lines) {
  std::string data;
  size_t earlier_keys = l.stored_keys.size(), earlier_bad = l.bad_lines.size();
  for (size_t i = 0; i < fresh; ++i) {
    std::string key = name + "-" + std::to_string(i);
    data += valid_event(key) + "\n";
    l.stored_keys.push_back(key);
    ++lines;
    if (i % 20 == 7) {
      std::string bad = "{\"kind\":\"k\",\"bad\":\"" + key + "\"}";  // lacks trace_id, ts, key: missing_field
      data += bad + "\n";
      l.bad_lines.push_back(bad);
      ++lines;
    }
    if (i % 4 == 1 && earlier_keys > 0) {
      data += valid_event(l.stored_keys[(i * 7919) % earlier_keys], "resent") + "\n";
      ++lines;
    }
    if (i % 50 == 9 && earlier_bad > 0) {
      data += l.bad_lines[(i * 31) % earlier_bad] + "\n";
      ++lines;
    }
  }
  return data;
}

// The server connections PgBouncer holds to the database now.
std::set<long> server_pids(scratch_database& db) {
  std::set<long> out;
  const std::string servers =
      "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
      "AND backend_type = 'client backend'";
  long n = db.count("SELECT count(*) " + servers);
  for (long i = 0; i < n; ++i) {
    try {
      out.insert(db.count("SELECT pid " + servers + " ORDER BY pid OFFSET " + std::to_string(i) + " LIMIT 1"));
    } catch (const std::exception&) {
      break;  // one went away meanwhile
    }
  }
  return out;
}

// Waits (bounded) until none of `old` serves the database any more.
bool wait_recycled(scratch_database& db, const std::set<long>& old, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    bool any = false;
    for (long pid : server_pids(db)) any = any || old.count(pid) > 0;
    if (!any) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

TEST_F(PgBouncer, TransactionPoolingTwoShardsExactThroughReconnectAndServerLifetime) {
  scratch_database db(env_or("EVPIPE_TEST_DSN"), "evpipe_pgb_" + std::to_string(::getpid()));
  // One server connection for both shards: each transaction may land on the
  // connection the other shard used last, so any session state would clash.
  pgbouncer_process bouncer(db, "pool_mode = transaction\ndefault_pool_size = 1\nserver_lifetime = 3600\n");
  uint16_t port = free_port();
  auto config = [&](const std::string& dsn) {
    return "[pipeline]\nshards = 2\n[batch]\nmax_rows = 200\nlinger_ms = 2\n[dedup]\nwindow_keys = 1\n"
           "[postgres]\ndsn = \"" + dsn + "\"\nretry_base_ms = 20\nretry_max_ms = 200\n"
           "[http]\nlisten = \"\"\n[log]\nlevel = \"warn\"\n"
           "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\ntopic = \"pgb/it\"\n";
  };
  // Migrations take a session lock and build indexes concurrently: they go
  // straight to the server (docs/postgres.md).
  evpipe_process direct(config(db.dsn()), "pgb_migrate");
  ASSERT_EQ(direct.run_command("migrate"), 0) << direct.log("migrate.log");

  evpipe_process evp(config(bouncer.dsn(db.name())), "pgb_run");
  ASSERT_NO_THROW(evp.start(port)) << bouncer.log();

  ledger l;
  auto round = [&](const std::string& name) {
    uint64_t lines = 0;
    std::string data = build_round(name, 2000, l, lines);
    ndjson_client producer(port);
    producer.send_all(data);
    ASSERT_EQ(producer.read_acks_until(lines, 120s), lines) << name << ": " << evp.log();
    EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), static_cast<long>(l.stored_keys.size())) << name;
    EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror"),
              static_cast<long>(l.stored_keys.size()))
        << name;
    EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), static_cast<long>(l.bad_lines.size())) << name;
    EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code <> 'missing_field'"), 0) << name;
  };

  round("before");
  // Resends of keys that are stored went through the staging path.
  EXPECT_NO_FATAL_FAILURE(round("resends"));

  // The pooler drops every server connection evpipe's transactions used.
  auto before = server_pids(db);
  bouncer.admin("RECONNECT " + db.name());
  EXPECT_TRUE(wait_recycled(db, before, 60s)) << bouncer.log();
  EXPECT_NO_FATAL_FAILURE(round("after_reconnect"));

  // Server connections live one second: they are replaced during the round.
  before = server_pids(db);
  bouncer.admin("SET server_lifetime = 1");
  EXPECT_TRUE(wait_recycled(db, before, 60s)) << bouncer.log();
  EXPECT_NO_FATAL_FAILURE(round("short_lifetime"));
  before = server_pids(db);
  EXPECT_TRUE(wait_recycled(db, before, 60s)) << bouncer.log();
  EXPECT_NO_FATAL_FAILURE(round("after_lifetime"));

  EXPECT_EQ(evp.log().find("does not exist"), std::string::npos) << evp.log();
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
