// An append route's table kept partitioned by evpipe ([[routes]]
// partition_by with [storage] partition, docs/partitions.md "Route tables"),
// end to end through the evpipe binary and the PostgreSQL of scripts/test.sh:
// its partitions are made ahead; rows on both sides of a period boundary and
// one a year old are all stored (the old one through the DEFAULT partition,
// then moved into a partition made for it); retention drops an old partition
// while ingest goes on, losing no newer row; a redelivery after a restart is
// still one row (evpipe_route_keys); a table not range-partitioned on the
// named column is refused with the statement that makes it.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <fstream>
#include <thread>

#include "io/postgres/partitions.h"
#include "tests/support/check_config.h"
#include "tests/support/harness.h"
#include "tests/support/metrics_wait.h"
#include "tests/support/readings_route.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

const std::string partitioned_table = std::string(readings_partitioned_table) + "; CREATE INDEX ON readings (measured_at)";

// Now as ISO 8601 UTC, computed here (the load thread must not share the test's database connection).
std::string now_iso() {
  const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string reading(const std::string& device, const std::string& ts, double value = 21.5) {
  return reading_line(device, ts, value);
}

class RoutesPartitions : public TcpPipeline {
 protected:
  std::string config(uint16_t port, uint16_t http_port, const std::string& storage_extra = "") {
    std::string cfg = config_for(db, port, http_port) + "[storage]\npartition = \"day\"\ncheck_interval_s = 1\n" +
                      storage_extra + readings_route();
    cfg.replace(cfg.find("level = \"warn\""), 14, "level = \"info\"");  // creations and drops are logged at info
    return cfg;
  }
  void send(uint16_t port, const std::string& data, evpipe_process& evp) { send_acked(port, data, evp); }
  std::string at(const std::string& expr) { return utc_iso(db, expr); }
  std::string day_of(const std::string& expr) { return utc_day(db, expr); }
  long partitions_of(const std::string& table) {
    return db.count("SELECT count(*) FROM pg_inherits WHERE inhparent = '" + table + "'::regclass");
  }
  long rows_stored_twice() {
    return db.count("SELECT count(*) FROM (SELECT 1 FROM readings GROUP BY device_id, measured_at HAVING count(*) > 1) d");
  }
  int check_db(const std::string& cfg, std::string& err) { return check_config_db(cfg, "routeparts_check", err); }
};

TEST_F(RoutesPartitions, PartitionsAheadRowsOfAnyTimeStoredAndRedeliveriesOnce) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config(port, http_port), "routeparts_ahead");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(partitioned_table);  // the user's table, made after migrate as docs/routes.md says
  ASSERT_EQ(evp.run_command("check-config"), 0) << evp.log("check-config.log");
  evp.start(port);
  // The first round at start: today, 3 days ahead, and a DEFAULT partition evpipe adds.
  const std::string today = day_of("now()");
  ASSERT_TRUE(eventually([&] { return partitions_of("readings") == 5; }, 30s, 50ms)) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_class WHERE relname IN ('readings_p" + today + "', 'readings_default', "
                     "'readings_p" + day_of("now() + interval '3 days'") + "') "
                     "AND relnamespace = current_schema()::regnamespace"),
            3);

  // Both sides of tomorrow's boundary (both partitions exist), the last
  // microsecond of yesterday (no partition: DEFAULT) and a year ago (DEFAULT).
  const std::string midnight = "date_trunc('day', now(), 'UTC') + interval '1 day'";
  std::string data;
  for (int i = 0; i < 50; ++i) data += reading("d" + std::to_string(i), at("now()"));
  data += reading("edge", at(midnight + " - interval '1 microsecond'"));
  data += reading("edge", at(midnight));
  data += reading("yesterday", at("date_trunc('day', now(), 'UTC') - interval '1 microsecond'"));
  data += reading("old", at("now() - interval '1 year'"));
  send(port, data, evp);
  EXPECT_EQ(db.count("SELECT count(*) FROM readings"), 54) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM readings_p" + today + " WHERE device_id = 'edge'"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM readings_p" + day_of(midnight) + " WHERE device_id = 'edge'"), 1);

  // The next rounds (every second) make partitions for the DEFAULT rows and move them there.
  ASSERT_TRUE(eventually([&] { return db.count("SELECT count(*) FROM readings_default") == 0; }, 30s, 50ms))
      << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM readings_p" + day_of("now() - interval '1 year'") +
                     " WHERE device_id = 'old'"),
            1);
  EXPECT_EQ(db.count("SELECT count(*) FROM readings_p" + day_of("now() - interval '1 day'") +
                     " WHERE device_id = 'yesterday'"),
            1);
  EXPECT_EQ(db.count("SELECT count(*) FROM readings"), 54) << "moved, not lost";
  {
    const std::string m = metrics_when(http_port, {{"taylor_partition_rows_moved_total{table=\"readings\"}", 2},
                                                   {"taylor_partitions_created_total{table=\"readings\"}", 6}});
    EXPECT_EQ(metric_value(m, "taylor_partition_rows_moved_total{table=\"readings\"}"), 2) << m;
    EXPECT_EQ(metric_value(m, "taylor_partitions_created_total{table=\"readings\"}"), 6) << m;
    EXPECT_EQ(metric_value(m, "taylor_partitions_created_total{table=\"events_mirror\"}"), 0)
        << "migrate made events_mirror's (another process): " << m;
    EXPECT_EQ(metric_value(m, "taylor_partition_maintenance_errors_total{table=\"readings\"}"), 0) << m;
  }
  EXPECT_TRUE(evp.log_has("partition readings_p" + today + " created")) << "logged";

  // A restart empties the dedup window: only evpipe_route_keys recognizes
  // these, across partitions (a unique index could not, without the time).
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(port);
  send(port, data, evp);
  EXPECT_EQ(db.count("SELECT count(*) FROM readings"), 54) << evp.log();
  EXPECT_EQ(rows_stored_twice(), 0);
}

TEST_F(RoutesPartitions, RetentionDropsAnOldPartitionUnderIngestAndNothingNewer) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config(port, http_port, "retention = \"30d\"\n"), "routeparts_retention");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(partitioned_table);
  // Readings of 40 and of 20 days ago, each in a partition of its day (moved
  // there from DEFAULT by a round without retention).
  db.exec("CREATE TABLE readings_default PARTITION OF readings DEFAULT");
  db.exec("INSERT INTO readings SELECT 'old' || g, 1, now() - interval '40 days' FROM generate_series(1, 100) g");
  db.exec("INSERT INTO readings SELECT 'recent' || g, 1, now() - interval '20 days' FROM generate_series(1, 100) g");
  {
    io::pg_connection conn;
    ASSERT_TRUE(conn.connect(db.dsn(), "routeparts-test").ok);
    io::partition_round done;
    io::partition_options o;
    o.unit = "day";
    o.route_tables = {{"readings", "measured_at"}};
    auto st = io::partition_maintainer::maintain_once(conn, o, done);
    ASSERT_TRUE(st.ok) << st.sqlstate << " " << st.message;
    ASSERT_EQ(done.rows_moved, 200u);
  }
  const std::string old_day = day_of("now() - interval '40 days'");
  ASSERT_EQ(db.count("SELECT count(*) FROM readings_p" + old_day), 100);

  evp.start(port);
  // Ingest while maintenance (every second) drops the old partition.
  std::atomic<bool> stop{false};
  std::atomic<int> acked{0};
  std::thread load([&] {
    for (int round = 0; round < 300 && !stop; ++round) {
      std::string data;
      const std::string ts = now_iso();
      for (int i = 0; i < 100; ++i) data += reading("load" + std::to_string(round * 100 + i), ts);
      ndjson_client producer(port);
      producer.send_all(data);
      if (producer.read_acks_until(100, 60s) != 100) return;
      acked += 100;
    }
  });
  const bool dropped = eventually([&] {
    return db.count("SELECT count(*) FROM pg_class WHERE relname = 'readings_p" + old_day +
                    "' AND relnamespace = current_schema()::regnamespace") == 0;
  }, 30s, 50ms);
  std::this_thread::sleep_for(1s);  // more ingest after the drop
  stop = true;
  load.join();
  EXPECT_TRUE(dropped) << evp.log();
  EXPECT_GT(acked.load(), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM readings WHERE device_id LIKE 'old%'"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM readings WHERE device_id LIKE 'recent%'"), 100) << "inside the retention";
  EXPECT_EQ(db.count("SELECT count(*) FROM readings WHERE device_id LIKE 'load%'"), acked.load())
      << "every acked reading is there once: " << evp.log();
  EXPECT_EQ(rows_stored_twice(), 0);
  const std::string m = metrics_when(http_port, {{"taylor_partitions_dropped_total{table=\"readings\"}", 1},
                                                 {"taylor_partition_rows_dropped_total{table=\"readings\"}", 100}});
  EXPECT_EQ(metric_value(m, "taylor_partitions_dropped_total{table=\"readings\"}"), 1) << m;
  EXPECT_EQ(metric_value(m, "taylor_partition_rows_dropped_total{table=\"readings\"}"), 100) << m;
  EXPECT_TRUE(evp.log_has("partition readings_p" + old_day + " dropped")) << "logged";
}

// An identity that includes the partition column can be a unique index of
// the partitioned table itself: evpipe then settles redeliveries by it, as
// for any table-keyed route (docs/routes.md), and writes no route keys.
TEST_F(RoutesPartitions, AUniqueIndexWithThePartitionKeySettlesRedeliveries) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config(port, http_port), "routeparts_unique");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(partitioned_table);
  db.exec("CREATE UNIQUE INDEX ON readings (device_id, measured_at)");
  evp.start(port);
  ASSERT_TRUE(eventually([&] { return partitions_of("readings") == 5; }, 30s, 50ms)) << evp.log();
  std::string data;
  for (int i = 0; i < 50; ++i) data += reading("d" + std::to_string(i), at("now()"));
  data += reading("old", at("now() - interval '1 year'"));  // DEFAULT, then its own partition
  send(port, data, evp);
  ASSERT_TRUE(eventually([&] { return db.count("SELECT count(*) FROM readings_default") == 0; }, 30s, 50ms))
      << evp.log();
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(port);
  send(port, data, evp);
  EXPECT_EQ(db.count("SELECT count(*) FROM readings"), 51) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys"), 0) << "the table's own index settled them";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0) << evp.log();
}

// A reload that adds partition_by: the running maintainer takes the table
// from its next round on.
TEST_F(RoutesPartitions, AReloadThatAddsPartitionByIsFollowed) {
  uint16_t port = free_port(), http_port = free_port();
  std::string without = config(port, http_port);
  without.erase(without.find("partition_by = \"measured_at\"\n"), 29);
  evpipe_process evp(without, "routeparts_reload");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(partitioned_table);
  evp.start(port);
  std::this_thread::sleep_for(1500ms);  // a round or two at check_interval_s = 1
  EXPECT_EQ(partitions_of("readings"), 0) << "not evpipe's without partition_by";
  evp.write_config(config(port, http_port));
  evp.kill(SIGHUP);
  ASSERT_TRUE(eventually([&] { return partitions_of("readings") == 5; }, 30s, 50ms)) << evp.log();
  send(port, reading("after", at("now()")) + reading("old", at("now() - interval '1 year'")), evp);
  ASSERT_TRUE(eventually([&] { return db.count("SELECT count(*) FROM readings_default") == 0; }, 30s, 50ms))
      << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM readings"), 2);
}

TEST_F(RoutesPartitions, ATableNotPartitionedOnTheColumnIsRefused) {
  uint16_t port = free_port(), http_port = free_port();
  const std::string cfg = config(port, http_port);
  evpipe_process evp(cfg, "routeparts_refused");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  const std::string how = "create it as CREATE TABLE readings (...) PARTITION BY RANGE (measured_at)";

  db.exec("CREATE TABLE readings (device_id text NOT NULL, value float8, measured_at timestamptz NOT NULL, "
          "received timestamptz)");
  std::string err;
  EXPECT_EQ(check_db(cfg, err), 2) << err;
  EXPECT_NE(err.find("[[routes]] \"readings\" partition_by: table \"readings\" is not partitioned; " + how),
            std::string::npos)
      << err;
  EXPECT_THROW(evp.start(port), std::runtime_error) << "run refuses it too";
  EXPECT_TRUE(evp.log_has("is not partitioned; " + how)) << evp.log();

  // Partitioned, but on another column.
  db.exec("DROP TABLE readings; CREATE TABLE readings (device_id text NOT NULL, value float8, measured_at timestamptz "
          "NOT NULL, received timestamptz NOT NULL) PARTITION BY RANGE (received)");
  EXPECT_EQ(check_db(cfg, err), 2) << err;
  EXPECT_NE(err.find("partition_by: table \"readings\" is not partitioned BY RANGE (measured_at) alone; " + how),
            std::string::npos)
      << err;

  db.exec("DROP TABLE readings");
  db.exec(partitioned_table);
  EXPECT_EQ(check_db(cfg, err), 0) << err;
}

}  // namespace
}  // namespace evpipe::testing
