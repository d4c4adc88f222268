// The database as users set it up: the DSN (and the PG* environment) decide
// over evpipe's defaults, and the startup check and `migrate` look at the
// tables the session will really write, whatever their indexes are named.

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "tests/support/harness.h"
#include "tests/support/pg_scratch.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

class PostgresSetup : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
    schema = db.column("SELECT current_schema()").at(0);
  }
  std::string config(const std::string& dsn, uint16_t port) {
    return "[pipeline]\nshards = 2\n[batch]\nlinger_ms = 2\n[postgres]\ndsn = \"" + dsn +
           "\"\nretry_base_ms = 50\nretry_max_ms = 300\n[http]\nlisten = \"\"\n[log]\nlevel = \"info\"\n"
           "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\ntopic = \"setup/it\"\n";
  }
  // Stores one event through a running evpipe and waits for its ack.
  static void store(uint16_t port, const std::string& key) {
    ndjson_client producer(port);
    producer.send_all(valid_event(key) + "\n");
    ASSERT_EQ(producer.read_acks_until(1, 60s), 1u);
  }
  // Waits (bounded) until the count query answers `expected`; returns its last answer.
  long count_becomes(const std::string& sql, long expected) {
    auto deadline = std::chrono::steady_clock::now() + 30s;
    long n = db.count(sql);
    while (n != expected && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(50ms);
      n = db.count(sql);
    }
    return n;
  }
  long unique_indexes(const std::string& table) {
    return db.count("SELECT count(*) FROM pg_index WHERE indrelid = '" + table +
                    "'::regclass AND indisunique AND NOT indisprimary");
  }
  // "(a, b)": an index's key columns in its order, from its definition.
  std::string index_columns(const std::string& index) {
    auto def = db.column("SELECT pg_get_indexdef('" + index + "'::regclass)").at(0);
    auto open = def.rfind('(');
    return open == std::string::npos ? def : def.substr(open);
  }
  test_db db;
  std::string schema;
};

TEST_F(PostgresSetup, TablesFirstInSearchPathWithoutUniqueIndexAreRefused) {
  uint16_t port = free_port();
  evpipe_process migrated(config(db.dsn(), port), "migrated");
  ASSERT_EQ(migrated.run_command("migrate"), 0) << migrated.log("migrate.log");
  // The seed's original tables, without evpipe's unique indexes, in a schema
  // that comes first in the search_path.
  std::string staging = schema + "_staging";
  db.exec("DROP SCHEMA IF EXISTS " + staging + " CASCADE");
  db.exec("CREATE SCHEMA " + staging);
  db.exec("CREATE TABLE " + staging +
          ".events_mirror (id BIGSERIAL PRIMARY KEY, topic VARCHAR(255) NOT NULL, payload JSONB NOT NULL, "
          "created_at TIMESTAMPTZ DEFAULT now())");
  db.exec("CREATE TABLE " + staging +
          ".dlq_events (id BIGSERIAL PRIMARY KEY, original_topic VARCHAR(255) NOT NULL, failure_reason TEXT NOT NULL, "
          "payload JSONB, created_at TIMESTAMPTZ NOT NULL DEFAULT now())");
  std::string both = env_or("EVPIPE_TEST_DSN") + "?options=-csearch_path%3D" + staging + "%2C" + schema;
  evpipe_process shadowed(config(both, port), "shadowed");
  EXPECT_THROW(shadowed.start(port), std::runtime_error) << "must refuse to start";
  auto log = shadowed.log();
  EXPECT_NE(log.find(staging + ".events_mirror"), std::string::npos) << log;
  EXPECT_NE(log.find("run `evpipe migrate"), std::string::npos) << log;
  db.exec("DROP SCHEMA " + staging + " CASCADE");
}

TEST_F(PostgresSetup, DeadLetterTableWithoutItsUniqueIndexIsRefused) {
  uint16_t port = free_port();
  evpipe_process evp(config(db.dsn(), port), "nodlqkey");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec("DROP INDEX dlq_events_topic_digest_key");
  EXPECT_THROW(evp.start(port), std::runtime_error) << "must refuse to start";
  EXPECT_TRUE(evp.log_has("dlq_events")) << evp.log();
  EXPECT_TRUE(evp.log_has("run `evpipe migrate")) << evp.log();
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  EXPECT_EQ(unique_indexes("dlq_events"), 1);
}

TEST_F(PostgresSetup, OnlineIndexSwapIsAcceptedAndMigrateBuildsConcurrently) {
  uint16_t port = free_port();
  evpipe_process evp(config(db.dsn(), port), "swap");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  ASSERT_NO_FATAL_FAILURE(store(port, "swap-1"));
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();

  // migrate builds the key before the tenant (schemas/schema.h) and so has
  // nothing to suggest.
  EXPECT_EQ(index_columns("events_mirror_tenant_idempotency_key_key"), "(idempotency_key, tenant_id)");
  EXPECT_EQ(evp.log("migrate.log").find("in another order"), std::string::npos) << evp.log("migrate.log");

  // The usual online swap: a new unique index under another name, the old one
  // dropped; here with the columns in the order an earlier evpipe used.
  db.exec("CREATE UNIQUE INDEX CONCURRENTLY events_mirror_key_v2 ON events_mirror (tenant_id, idempotency_key)");
  db.exec("DROP INDEX CONCURRENTLY events_mirror_tenant_idempotency_key_key");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  EXPECT_EQ(unique_indexes("events_mirror"), 1) << "migrate must not build a second identical index";
  // It says how to rebuild it in the faster order, and leaves it.
  auto hint = evp.log("migrate.log");
  EXPECT_NE(hint.find("events_mirror_key_v2 lists the columns of (idempotency_key, tenant_id) in another order"),
            std::string::npos)
      << hint;
  EXPECT_NE(hint.find("DROP INDEX CONCURRENTLY"), std::string::npos) << hint;
  EXPECT_EQ(index_columns("events_mirror_key_v2"), "(tenant_id, idempotency_key)");
  evp.start(port);  // the startup check accepts it
  ASSERT_NO_FATAL_FAILURE(store(port, "swap-1"));
  ASSERT_NO_FATAL_FAILURE(store(port, "swap-2"));
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 2);

  // Missing on a table with rows: built without blocking writers.
  db.exec("DROP INDEX events_mirror_key_v2");
  db.exec("DROP INDEX idx_events_mirror_topic");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  auto log = evp.log("migrate.log");
  EXPECT_NE(log.find("events_mirror_tenant_idempotency_key_key concurrently"), std::string::npos) << log;
  EXPECT_NE(log.find("idx_events_mirror_topic concurrently"), std::string::npos) << log;
  EXPECT_EQ(unique_indexes("events_mirror"), 1);
  EXPECT_EQ(index_columns("events_mirror_tenant_idempotency_key_key"), "(idempotency_key, tenant_id)");
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_index WHERE indrelid = 'events_mirror'::regclass AND NOT indisvalid"), 0);
}

TEST_F(PostgresSetup, RoleWithoutTemporaryPrivilegeIsRefusedAtStart) {
  // A database of its own: the privilege is per database, and PUBLIC has it.
  scratch_database sdb(env_or("EVPIPE_TEST_DSN"), "evpipe_notemp_" + std::to_string(::getpid()));
  uint16_t port = free_port();
  evpipe_process owner(config(sdb.dsn(), port), "notemp_migrate");
  ASSERT_EQ(owner.run_command("migrate"), 0) << owner.log("migrate.log");
  std::string role = "evpipe_notemp_" + std::to_string(::getpid());
  sdb.exec("DROP ROLE IF EXISTS " + role);
  sdb.exec("CREATE ROLE " + role + " LOGIN");
  sdb.exec("REVOKE TEMPORARY ON DATABASE " + sdb.name() + " FROM PUBLIC");
  sdb.exec("GRANT SELECT, INSERT ON events_mirror, dlq_events TO " + role);
  sdb.exec("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO " + role);
  std::string as_role = sdb.dsn();
  as_role.replace(as_role.find(" user=") + 6, sdb.user().size(), role);
  evpipe_process evp(config(as_role, port), "notemp");
  std::string started;
  try {
    evp.start(port);
  } catch (const std::exception& e) {
    started = e.what();
  }
  sdb.exec("DROP OWNED BY " + role);
  EXPECT_NE(started.find("GRANT TEMPORARY ON DATABASE " + sdb.name()), std::string::npos) << started << evp.log();
  evp.kill(SIGKILL);
  sdb.drop_role(role);
}

TEST_F(PostgresSetup, ConfiguredSchemaIsUsedWhateverTheSearchPath) {
  // The connection's search_path names the test schema only; the config names another.
  std::string ingest = schema + "_ingest";
  db.exec("DROP SCHEMA IF EXISTS " + ingest + " CASCADE");
  uint16_t port = free_port();
  std::string cfg = config(db.dsn(), port);
  cfg.replace(cfg.find("[postgres]\n") + 11, 0, "schema = \"" + ingest + "\"\n");
  evpipe_process evp(cfg, "schema_opt");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_tables WHERE schemaname = '" + schema + "'"), 0);
  // events_mirror, dlq_events, evpipe_mqtt_subscriptions (issue 9: what each MQTT client id subscribed)
  // and evpipe_retention_marks (what retention dropped, for readers).
  EXPECT_EQ(db.column("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = '" +
                      ingest + "'"),
            std::vector<std::string>{"dlq_events,events_mirror,evpipe_mqtt_subscriptions,evpipe_retention_marks"});
  evp.start(port);
  ASSERT_NO_FATAL_FAILURE(store(port, "schema-1"));
  {
    ndjson_client producer(port);
    producer.send_all("{not json\n");
    ASSERT_EQ(producer.read_acks_until(1, 60s), 1u);
  }
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  // After a restart the key is only in the table: the resend goes through the staging path.
  evp.start(port);
  ASSERT_NO_FATAL_FAILURE(store(port, "schema-1"));
  ASSERT_NO_FATAL_FAILURE(store(port, "schema-2"));
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM " + ingest + ".events_mirror"), 2);
  EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM " + ingest + ".events_mirror"), 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM " + ingest + ".dlq_events"), 1);
  db.exec("DROP SCHEMA " + ingest + " CASCADE");
}

TEST_F(PostgresSetup, DsnKeywordsWinOverEvpipeDefaults) {
  uint16_t port = free_port();
  evpipe_process evp(config(db.dsn() + "&application_name=evpipe-prod", port), "appname");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  ASSERT_NO_FATAL_FAILURE(store(port, "app-1"));
  // Both shards' sessions carry the DSN's name. (Other tests' shards, in the
  // same database, are named evpipe-shard-N.)
  EXPECT_EQ(count_becomes("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'evpipe-prod'", 2), 2);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(PostgresSetup, EmptyDsnMeansLibpqEnvironment) {
  // Everything through PG* variables, which the evpipe child inherits.
  auto keys = dsn_keywords(env_or("EVPIPE_TEST_DSN"));
  ::setenv("PGHOST", keys["host"].c_str(), 1);
  ::setenv("PGPORT", keys["port"].c_str(), 1);
  ::setenv("PGUSER", keys["user"].c_str(), 1);
  ::setenv("PGDATABASE", keys.count("dbname") ? keys["dbname"].c_str() : "evpipe", 1);
  ::setenv("PGOPTIONS", ("-csearch_path=" + schema).c_str(), 1);
  ::setenv("PGAPPNAME", "evpipe-from-env", 1);
  uint16_t port = free_port();
  evpipe_process evp(config("", port), "envdsn");
  int migrated = evp.run_command("migrate");
  std::string error;
  try {
    evp.start(port);
    store(port, "env-1");
    EXPECT_EQ(count_becomes("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'evpipe-from-env'", 2), 2);
  } catch (const std::exception& e) {
    error = e.what();
  }
  for (const char* v : {"PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGOPTIONS", "PGAPPNAME"}) ::unsetenv(v);
  ASSERT_EQ(migrated, 0) << evp.log("migrate.log");
  ASSERT_EQ(error, "");
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'env-1'"), 1);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
