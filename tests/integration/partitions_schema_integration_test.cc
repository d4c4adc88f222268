// Partitioned tables under `[postgres] schema` (docs/partitions.md,
// docs/postgres.md "[postgres] schema"), end to end through the evpipe binary
// and the PostgreSQL of scripts/test.sh: events_mirror, dlq_events and an
// append route's table with partition_by, all in the configured schema, get
// their partitions made ahead, their DEFAULT rows moved out and their old
// partitions dropped by the retention; `check-config --check-db` judges the
// route table of that schema; the rows of an append and of an upsert route
// with bare table names go there. Tables of the same names, partitioned the same
// way, sit in the schema the connection's search_path finds (the `public` of
// a default setup, where an unqualified name would land): nothing in them is
// created, moved, deleted or dropped.

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <utility>
#include <vector>

#include "io/postgres/partitions.h"
#include "tests/support/check_config.h"
#include "tests/support/harness.h"
#include "tests/support/metrics_wait.h"
#include "tests/support/readings_route.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

// Bare readings on the first TCP listener's topic, partitioned on their own
// time (readings_route), and each device's latest value upserted (both bare
// names: in [postgres] schema).
constexpr const char* latest_route = R"(
[[routes]]
name = "latest"
topics = ["tracker/events/it"]
envelope = "none"
table = "latest"
mode = "upsert"
key = ["device_id"]
columns = [
  { name = "device_id", type = "text", required = true },
  { name = "value", type = "float8" },
]
)";

std::string reading(const std::string& device, const std::string& ts) { return reading_line(device, ts); }

class PartitionsSchema : public TcpPipeline {
 protected:
  void SetUp() override {
    TcpPipeline::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    search_path_schema = db.column("SELECT current_schema()").at(0);
    x = search_path_schema + "_x";
    db.exec("DROP SCHEMA IF EXISTS " + x + " CASCADE");
  }
  void TearDown() override {
    if (!x.empty() && env_or("EVPIPE_TEST_KEEP").empty()) db.exec("DROP SCHEMA IF EXISTS " + x + " CASCADE");
  }
  void send(uint16_t port, const std::string& data, evpipe_process& evp) { send_acked(port, data, evp); }
  std::string day_of(const std::string& expr) { return utc_day(db, expr); }
  std::string at(const std::string& expr) { return utc_iso(db, expr); }
  bool exists(const std::string& table) {
    return db.column("SELECT to_regclass('" + table + "') IS NOT NULL").at(0) == "t";
  }
  long rows(const std::string& table) { return db.count("SELECT count(*) FROM " + table); }
  // Every partition of `parent` with its bounds and row count: what a
  // maintainer that took the wrong table would change.
  std::vector<std::string> layout(const std::string& parent) {
    std::vector<std::string> out;
    for (const auto& line : db.column("SELECT c.oid::regclass::text || ' ' || pg_get_expr(c.relpartbound, c.oid) "
                                      "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                      "WHERE i.inhparent = '" + parent + "'::regclass ORDER BY 1")) {
      out.push_back(line + " rows " + std::to_string(rows(line.substr(0, line.find(' ')))));
    }
    return out;
  }
  // A same-named table in the search_path's schema, partitioned on `column`
  // like evpipe's: a DEFAULT partition holding rows of a year ago (which a
  // round would move, or delete as past the retention) and a partition of
  // 40 days ago (which the retention would drop).
  void decoy(const std::string& name, const std::string& column) {
    const std::string old = "date_trunc('day', now() - interval '40 days', 'UTC')";
    db.exec("CREATE TABLE " + name + " (device_id text, " + column + " timestamptz NOT NULL) PARTITION BY RANGE (" +
            column + "); CREATE TABLE " + name + "_default PARTITION OF " + name + " DEFAULT; CREATE TABLE " + name +
            "_p" + day_of(old) + " PARTITION OF " + name + " FOR VALUES FROM (" + old + ") TO (" + old +
            " + interval '1 day'); INSERT INTO " + name + " SELECT 'decoy' || g, now() - g * interval '1 year' "
            "FROM generate_series(1, 3) g; INSERT INTO " + name + " SELECT 'decoy', " + old +
            " + interval '1 hour' FROM generate_series(1, 3)");
  }

  std::string search_path_schema;  // the test's schema, which the DSN's search_path names
  std::string x;                   // [postgres] schema
};

TEST_F(PartitionsSchema, MaintenanceAndTheRouteCheckActOnTheConfiguredSchemaOnly) {
  for (const char* t : {"events_mirror", "dlq_events"}) decoy(t, "created_at");
  decoy("readings", "measured_at");
  db.exec("CREATE TABLE latest (device_id text PRIMARY KEY)");  // no value column: a write there would fail
  const std::vector<std::string> tables = {"events_mirror", "dlq_events", "readings"};
  std::map<std::string, std::vector<std::string>> before;
  for (const auto& t : tables) before[t] = layout(t);
  ASSERT_EQ(before["readings"].size(), 2u);

  uint16_t port = free_port(), mirror_port = free_port(), http_port = free_port();
  tuning tune;  // a second listener whose topic no route takes: envelope events for events_mirror
  tune.tcp_extra = "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(mirror_port) +
                   "\"\ntopic = \"tracker/mirror/it\"\n";
  std::string cfg = config_for(db, port, http_port, tune) +
                    "[storage]\npartition = \"day\"\nretention = \"30d\"\ncheck_interval_s = 1\n" +
                    readings_route(/*also=*/true) + latest_route;
  cfg.replace(cfg.find("[postgres]\n") + 11, 0, "schema = \"" + x + "\"\n");
  cfg.replace(cfg.find("level = \"warn\""), 14, "level = \"info\"");  // creations and drops are logged at info
  evpipe_process evp(cfg, "partschema");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  // evpipe's tables in the configured schema: partitioned, today and 3 days
  // ahead and their DEFAULT partitions.
  for (const char* t : {"events_mirror", "dlq_events"}) {
    EXPECT_EQ(db.count("SELECT count(*) FROM pg_class WHERE oid = to_regclass('" + x + "." + t + "') AND relkind = 'p'"),
              1) << t;
    EXPECT_EQ(layout(x + "." + t).size(), 5u) << t;
    EXPECT_TRUE(exists(x + "." + t + "_p" + day_of("now()"))) << t;
  }
  EXPECT_TRUE(exists(x + ".evpipe_mirror_keys"));
  EXPECT_TRUE(exists(x + ".evpipe_route_keys"));
  db.exec("CREATE TABLE " + x + ".latest (device_id text PRIMARY KEY, value float8)");

  // check-config --check-db looks at <x>.readings, not at the well-made
  // readings the search_path finds: missing, then plain, then partitioned.
  std::string err;
  EXPECT_EQ(check_config_db(cfg, "partschema_check", err), 2) << err;
  EXPECT_NE(err.find("[[routes]] \"readings\" table: \"" + x + ".readings\" does not exist"), std::string::npos) << err;
  db.exec("CREATE TABLE " + x + ".readings (device_id text NOT NULL, value float8, measured_at timestamptz NOT NULL)");
  EXPECT_EQ(check_config_db(cfg, "partschema_check", err), 2) << err;
  EXPECT_NE(err.find("partition_by: table \"" + x + ".readings\" is not partitioned; create it as CREATE TABLE " + x +
                     ".readings (...) PARTITION BY RANGE (measured_at)"),
            std::string::npos)
      << err;
  db.exec("DROP TABLE " + x + ".readings; CREATE TABLE " + x + ".readings (device_id text NOT NULL, value float8, "
          "measured_at timestamptz NOT NULL) PARTITION BY RANGE (measured_at)");
  EXPECT_EQ(check_config_db(cfg, "partschema_check", err), 0) << err;

  // A round in <x> gives <x>.readings its DEFAULT partition and partitions
  // ahead; rows of 40 days ago in each table of <x> then go to DEFAULT, and
  // a round without retention makes partitions of their day for them.
  auto maintain_x = [&] {
    io::pg_connection conn;
    EXPECT_TRUE(conn.connect(db.dsn(), "partschema-test").ok);
    io::partition_options o;
    o.schema = x;
    o.unit = "day";
    o.route_tables = {{"readings", "measured_at"}};
    io::partition_round done;
    auto st = io::partition_maintainer::maintain_once(conn, o, done);
    EXPECT_TRUE(st.ok) << st.sqlstate << " " << st.message;
    return done;
  };
  EXPECT_EQ(maintain_x().created.size(), 4u) << "<x>.readings: today and 3 days ahead";
  EXPECT_TRUE(exists(x + ".readings_default"));
  db.exec("INSERT INTO " + x + ".readings (device_id, measured_at) SELECT 'old' || g, now() - interval '40 days' "
          "FROM generate_series(1, 10) g");
  db.exec("INSERT INTO " + x + ".events_mirror (topic, payload, created_at) SELECT 'old', jsonb_build_object('n', g), "
          "now() - interval '40 days' FROM generate_series(1, 10) g");
  db.exec("INSERT INTO " + x + ".dlq_events (original_topic, failure_reason, created_at) SELECT 'old', 'test', "
          "now() - interval '40 days' FROM generate_series(1, 10) g");
  EXPECT_EQ(maintain_x().rows_moved, 30u);
  const std::string old_day = day_of("now() - interval '40 days'");
  for (const auto& t : tables) {
    ASSERT_EQ(rows(x + "." + t + "_p" + old_day), 10) << t;
    EXPECT_EQ(layout(t), before[t]) << t << ": the search_path's table is untouched";
  }
  // Rows of 20 days ago, written by another writer: they go to <x>'s DEFAULT partitions.
  db.exec("INSERT INTO " + x + ".events_mirror (topic, payload, created_at) SELECT 'recent', jsonb_build_object('n', g), "
          "now() - interval '20 days' FROM generate_series(1, 10) g");
  db.exec("INSERT INTO " + x + ".dlq_events (original_topic, failure_reason, created_at) SELECT 'recent', 'test', "
          "now() - interval '20 days' FROM generate_series(1, 10) g");

  evp.start(port);
  ASSERT_TRUE(eventually([&] {
    try {
      ::close(connect_loopback(mirror_port));
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }, 30s, 50ms));
  // Through evpipe: readings of now and of 20 days ago (that one to <x>.readings'
  // DEFAULT), envelope events and a dead letter.
  send(port, reading("now", at("now()")) + reading("recent", at("now() - interval '20 days'")), evp);
  send(mirror_port, valid_event("m1") + "\n" + valid_event("m2") + "\n{\"not\": \"an envelope\"}\n", evp);
  // The rounds (every second) drop the partitions of 40 days ago and move the
  // DEFAULT rows into partitions of their day, all in <x>.
  const std::string recent_day = day_of("now() - interval '20 days'");
  ASSERT_TRUE(eventually([&] {
    for (const auto& t : tables) {
      if (exists(x + "." + t + "_p" + old_day) || rows(x + "." + t + "_default") != 0) return false;
    }
    return true;
  }, 30s, 50ms)) << evp.log();
  for (const auto& t : tables) {
    EXPECT_TRUE(exists(x + "." + t + "_p" + recent_day)) << t;
    EXPECT_TRUE(exists(x + "." + t + "_p" + day_of("now() + interval '3 days'"))) << t;
  }
  EXPECT_EQ(rows(x + ".events_mirror_p" + recent_day), 10);
  EXPECT_EQ(rows(x + ".dlq_events_p" + recent_day), 10);
  EXPECT_EQ(rows(x + ".readings_p" + recent_day), 1);
  EXPECT_EQ(rows(x + ".readings"), 2) << evp.log();
  EXPECT_EQ(rows(x + ".latest WHERE value = 1.5"), 2) << "the upsert route writes <x>.latest";
  EXPECT_EQ(rows(x + ".events_mirror WHERE idempotency_key IN ('m1', 'm2')"), 2) << evp.log();
  EXPECT_EQ(rows(x + ".dlq_events"), 11) << evp.log();
  {
    std::vector<std::pair<std::string, double>> expected;
    for (const auto& t : tables) {
      expected.emplace_back("taylor_partitions_dropped_total{table=\"" + x + "." + t + "\"}", 1);
      expected.emplace_back("taylor_partition_rows_dropped_total{table=\"" + x + "." + t + "\"}", 10);
    }
    const std::string m = metrics_when(http_port, expected);
    for (const auto& t : tables) {
      EXPECT_EQ(metric_value(m, "taylor_partitions_dropped_total{table=\"" + x + "." + t + "\"}"), 1) << t << m;
      EXPECT_EQ(metric_value(m, "taylor_partition_rows_dropped_total{table=\"" + x + "." + t + "\"}"), 10) << t << m;
      EXPECT_EQ(metric_value(m, "taylor_partition_maintenance_errors_total{table=\"" + x + "." + t + "\"}"), 0) << m;
    }
  }
  EXPECT_TRUE(evp.log_has("partition " + x + ".readings_p" + old_day + " dropped")) << "logged";
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();

  // Nothing was made, moved, deleted or dropped in the search_path's tables:
  // their year-old DEFAULT rows and the partition of 40 days ago are there.
  for (const auto& t : tables) EXPECT_EQ(layout(t), before[t]) << t;
  EXPECT_EQ(rows("readings"), 6);
  EXPECT_EQ(rows("latest"), 0);
}

}  // namespace
}  // namespace evpipe::testing
