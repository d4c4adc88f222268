// `[storage] partition = "week"` and `"month"` (docs/partitions.md), for
// events_mirror (keyed on created_at) and an append route's table with
// partition_by (keyed on the event's own time), end to end through the
// evpipe binary and the PostgreSQL of scripts/test.sh: a week runs from
// Monday 00:00 UTC for 7 days and a month from its first day 00:00 UTC to the
// next month's; partitions are named <table>_pYYYYMMDD after their first day;
// a row on either side of a week or month boundary lands in the partition of
// its side; and the retention drops a partition only once its whole period
// ended more than the retention ago. evpipe's sessions run in a time zone 14
// hours east of UTC, so that a bound computed in the session's zone would
// show.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>

#include "io/postgres/partitions.h"
#include "tests/support/harness.h"
#include "tests/support/metrics_wait.h"
#include "tests/support/readings_route.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

// The server option that puts a session in UTC+14, URL-encoded for the DSN.
constexpr const char* far_east = "%20-ctimezone%3DPacific%2FKiritimati";

class PartitionsPeriods : public TcpPipeline {
 protected:
  std::string config(uint16_t port, uint16_t http_port, const std::string& unit, const std::string& retention) {
    tuning t;
    t.dsn = db.dsn(far_east);
    std::string cfg = config_for(db, port, http_port, t) + "[storage]\npartition = \"" + unit + "\"\nretention = \"" +
                      retention + "\"\ncheck_interval_s = 1\n" + readings_route();
    cfg.replace(cfg.find("level = \"warn\""), 14, "level = \"info\"");  // creations and drops are logged at info
    return cfg;
  }
  void send(uint16_t port, const std::string& data, evpipe_process& evp) { send_acked(port, data, evp); }
  // One round on a connection in the far zone, as another process would run it.
  io::partition_round maintain(const std::string& unit, uint64_t retention_s) {
    io::pg_connection conn;
    EXPECT_TRUE(conn.connect(db.dsn(far_east), "periods-test").ok);
    io::partition_options o;
    o.unit = unit;
    o.retention_s = retention_s;
    o.route_tables = {{"readings", "measured_at"}};
    io::partition_round done;
    auto st = io::partition_maintainer::maintain_once(conn, o, done);
    EXPECT_TRUE(st.ok) << st.sqlstate << " " << st.message;
    std::sort(done.dropped.begin(), done.dropped.end());
    return done;
  }
  // The start of the period `k` periods from the current one, as a timestamptz
  // expression computed in UTC by PostgreSQL (date_trunc('week') is ISO: Monday).
  static std::string start(const std::string& unit, int k) {
    return "((date_trunc('" + unit + "', now() AT TIME ZONE 'UTC') + " + std::to_string(k) + " * interval '1 " + unit +
           "') AT TIME ZONE 'UTC')";
  }
  // A reading of device `device` at the time `expr`.
  std::string reading(const std::string& device, const std::string& expr) {
    return reading_line(device, utc_iso(db, expr));
  }
  // "<table>_pYYYYMMDD" of the period starting at `expr`.
  std::string partition(const std::string& table, const std::string& expr) { return table + "_p" + utc_day(db, expr); }
  // Every partition of `parent` but DEFAULT, oldest first, as "name from to",
  // its bounds in UTC with their weekday.
  std::vector<std::string> bounds(const std::string& parent) {
    return db.column(
        "SELECT relname || ' ' || to_char(lo AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US Dy') || ' ' || "
        "to_char(hi AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US Dy') FROM (SELECT c.relname, "
        "substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \\(''([^'']+)''\\)')::timestamptz AS lo, "
        "substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \\(''([^'']+)''\\)')::timestamptz AS hi "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '" + parent + "'::regclass "
        "AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT') p ORDER BY lo");
  }
  // What docs/partitions.md promises for the periods `ks` (0 = the current one):
  // from the period's start in UTC to the next one's, named after its first day.
  std::vector<std::string> expected(const std::string& parent, const std::string& unit, const std::vector<int>& ks) {
    std::vector<std::string> out;
    for (int k : ks) {
      out.push_back(db.column("SELECT '" + parent + "_p' || to_char(s, 'YYYYMMDD') || ' ' || "
                              "to_char(s, 'YYYY-MM-DD HH24:MI:SS.US Dy') || ' ' || to_char(s + interval '1 " + unit +
                              "', 'YYYY-MM-DD HH24:MI:SS.US Dy') FROM (SELECT date_trunc('" + unit +
                              "', now() AT TIME ZONE 'UTC') + " + std::to_string(k) + " * interval '1 " + unit +
                              "' AS s) w").at(0));
    }
    return out;
  }
  bool exists(const std::string& table) {
    return db.column("SELECT to_regclass('" + table + "') IS NOT NULL").at(0) == "t";
  }
  long rows(const std::string& sql) { return db.count("SELECT count(*) FROM " + sql); }
  // A row of events_mirror (created_at set, as a backfill does) and a reading,
  // both at `expr`, tagged `tag`.
  void backfill(const std::string& tag, const std::string& expr) {
    db.exec("INSERT INTO events_mirror (topic, payload, created_at) VALUES ('" + tag + "', '{}', " + expr +
            "); INSERT INTO readings VALUES ('" + tag + "', 1, " + expr + ")");
  }
  // Where the row tagged `tag` of `table` is: its partition's name.
  std::vector<std::string> where(const std::string& table, const std::string& tag) {
    return db.column("SELECT tableoid::regclass::text FROM " + table + " WHERE " +
                     (table == "readings" ? "device_id" : "topic") + " = '" + tag + "' ORDER BY 1");
  }
};

TEST_F(PartitionsPeriods, WeeksRunFromMondayUtcAndTheRetentionDropsWholeWeeks) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config(port, http_port, "week", "2w"), "periods_week");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  // This week and 3 ahead, Monday 00:00 UTC to Monday 00:00 UTC.
  for (const char* t : {"events_mirror", "dlq_events"}) EXPECT_EQ(bounds(t), expected(t, "week", {0, 1, 2, 3})) << t;
  for (const auto& line : bounds("events_mirror")) {
    EXPECT_NE(line.find(" 00:00:00.000000 Mon "), std::string::npos) << line;
    EXPECT_TRUE(line.ends_with(" 00:00:00.000000 Mon")) << line;
  }
  db.exec(readings_partitioned_table);
  EXPECT_EQ(maintain("week", 0).created.size(), 4u) << "readings' 4 weeks (and its DEFAULT)";

  // Rows of 3 and of 2 weeks ago, and on both sides of this week's two
  // Mondays, in both tables; a round without retention makes partitions for
  // those in DEFAULT and moves them.
  const std::string monday = start("week", 0), next_monday = start("week", 1);
  backfill("w-3", start("week", -3) + " + interval '1 hour'");
  backfill("w-2", start("week", -2));
  backfill("sunday-last", monday + " - interval '1 microsecond'");
  backfill("monday", monday);
  backfill("sunday", next_monday + " - interval '1 microsecond'");
  backfill("monday-next", next_monday);
  auto done = maintain("week", 0);
  EXPECT_EQ(done.rows_moved, 6u) << "w-3, w-2 and sunday-last of both tables";
  for (const char* t : {"events_mirror", "readings"}) {
    EXPECT_EQ(bounds(t), expected(t, "week", {-3, -2, -1, 0, 1, 2, 3})) << t;
    EXPECT_EQ(where(t, "sunday-last"), std::vector<std::string>{partition(t, start("week", -1))}) << t;
    EXPECT_EQ(where(t, "monday"), std::vector<std::string>{partition(t, monday)}) << t;
    EXPECT_EQ(where(t, "sunday"), std::vector<std::string>{partition(t, monday)}) << t;
    EXPECT_EQ(where(t, "monday-next"), std::vector<std::string>{partition(t, next_monday)}) << t;
  }

  // retention = "2w": the week of 3 weeks ago ended 14 days or more ago and
  // goes. The week of 2 weeks ago stays although every row in it is more
  // than 14 days old: its period ended less than 14 days ago.
  evp.start(port);
  const std::string w3 = start("week", -3), w2 = start("week", -2);
  ASSERT_TRUE(eventually([&] { return !exists(partition("readings", w3)) && !exists(partition("events_mirror", w3)); },
                         30s, 50ms))
      << evp.log();
  // Readings through evpipe: either side of next Monday, the last microsecond
  // of last week, the first microsecond of the week of 2 weeks ago (kept)
  // and the last of 3 weeks ago (past the retention: stored in DEFAULT, then
  // deleted from it by the next round).
  send(port,
       reading("e-sunday", next_monday + " - interval '1 microsecond'") + reading("e-monday", next_monday) +
           reading("e-sunday-last", monday + " - interval '1 microsecond'") + reading("e-w-2", w2) +
           reading("e-w-3", w2 + " - interval '1 microsecond'"),
       evp);
  ASSERT_TRUE(eventually([&] { return rows("readings_default") == 0; }, 30s, 50ms)) << evp.log();
  EXPECT_EQ(where("readings", "e-sunday"), std::vector<std::string>{partition("readings", monday)});
  EXPECT_EQ(where("readings", "e-monday"), std::vector<std::string>{partition("readings", next_monday)});
  EXPECT_EQ(where("readings", "e-sunday-last"), std::vector<std::string>{partition("readings", start("week", -1))});
  EXPECT_EQ(where("readings", "e-w-2"), std::vector<std::string>{partition("readings", w2)});
  EXPECT_EQ(rows("readings WHERE device_id = 'e-w-3'"), 0) << "its week is past the retention";
  for (const char* t : {"events_mirror", "readings"}) {
    EXPECT_EQ(bounds(t), expected(t, "week", {-2, -1, 0, 1, 2, 3})) << t;
    EXPECT_EQ(where(t, "w-2"), std::vector<std::string>{partition(t, w2)}) << t << ": a whole week inside the retention";
    EXPECT_EQ(rows(std::string(t) + (t == std::string("readings") ? " WHERE device_id" : " WHERE topic") + " = 'w-3'"),
              0) << t;
  }
  const std::string m = metrics_when(http_port, {{"taylor_partitions_dropped_total{table=\"events_mirror\"}", 1},
                                                 {"taylor_partitions_dropped_total{table=\"readings\"}", 1},
                                                 {"taylor_partition_rows_dropped_total{table=\"readings\"}", 2}});
  EXPECT_EQ(metric_value(m, "taylor_partitions_dropped_total{table=\"events_mirror\"}"), 1) << m;
  EXPECT_EQ(metric_value(m, "taylor_partitions_dropped_total{table=\"readings\"}"), 1) << m;
  EXPECT_EQ(metric_value(m, "taylor_partition_rows_dropped_total{table=\"readings\"}"), 2)
      << "w-3 with its partition, e-w-3 from DEFAULT: " << m;
  EXPECT_TRUE(evp.log_has("partition " + partition("readings", w3) + " dropped")) << "logged";
}

TEST_F(PartitionsPeriods, MonthsRunFromTheFirstUtcAndTheRetentionDropsWholeMonths) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config(port, http_port, "month", "9w"), "periods_month");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  // This month and 3 ahead, each from its first day 00:00 UTC (_pYYYYMM01).
  for (const char* t : {"events_mirror", "dlq_events"}) EXPECT_EQ(bounds(t), expected(t, "month", {0, 1, 2, 3})) << t;
  for (const auto& line : bounds("events_mirror")) {
    const auto from = line.find("-01 00:00:00.000000 ");
    ASSERT_NE(from, std::string::npos) << line;
    EXPECT_NE(line.find("-01 00:00:00.000000 ", from + 1), std::string::npos) << line;
    EXPECT_EQ(line.substr(line.find("_p") + 8, 2), "01") << line;
  }
  db.exec(readings_partitioned_table);
  EXPECT_EQ(maintain("month", 0).created.size(), 4u) << "readings' 4 months";

  const std::string first = start("month", 0), next_first = start("month", 1);
  backfill("m-12", start("month", -12) + " + interval '1 hour'");
  backfill("m-2", start("month", -2) + " + interval '1 hour'");
  backfill("m-1", start("month", -1) + " + interval '1 hour'");
  backfill("last-day-last", first + " - interval '1 microsecond'");
  backfill("first", first);
  backfill("last-day", next_first + " - interval '1 microsecond'");
  backfill("first-next", next_first);
  auto done = maintain("month", 0);
  EXPECT_EQ(done.rows_moved, 8u) << "m-12, m-2, m-1 and last-day-last of both tables";
  for (const char* t : {"events_mirror", "readings"}) {
    EXPECT_EQ(bounds(t), expected(t, "month", {-12, -2, -1, 0, 1, 2, 3})) << t;
    EXPECT_EQ(where(t, "last-day-last"), std::vector<std::string>{partition(t, start("month", -1))}) << t;
    EXPECT_EQ(where(t, "first"), std::vector<std::string>{partition(t, first)}) << t;
    EXPECT_EQ(where(t, "last-day"), std::vector<std::string>{partition(t, first)}) << t;
    EXPECT_EQ(where(t, "first-next"), std::vector<std::string>{partition(t, next_first)}) << t;
  }

  // retention = "9w" (63 days): the month of a year ago goes; the month
  // before last ended at most 62 days ago and stays, whole.
  evp.start(port);
  const std::string m12 = start("month", -12);
  ASSERT_TRUE(eventually([&] { return !exists(partition("readings", m12)) && !exists(partition("events_mirror", m12)); },
                         30s, 50ms))
      << evp.log();
  send(port,
       reading("e-last-day", next_first + " - interval '1 microsecond'") + reading("e-first", next_first) +
           reading("e-last-day-last", first + " - interval '1 microsecond'") + reading("e-first-this", first),
       evp);
  ASSERT_TRUE(eventually([&] { return rows("readings WHERE device_id LIKE 'e-%'") == 4; }, 30s, 50ms)) << evp.log();
  EXPECT_EQ(where("readings", "e-last-day"), std::vector<std::string>{partition("readings", first)});
  EXPECT_EQ(where("readings", "e-first"), std::vector<std::string>{partition("readings", next_first)});
  EXPECT_EQ(where("readings", "e-last-day-last"), std::vector<std::string>{partition("readings", start("month", -1))});
  EXPECT_EQ(where("readings", "e-first-this"), std::vector<std::string>{partition("readings", first)});
  EXPECT_EQ(rows("readings_default"), 0);
  for (const char* t : {"events_mirror", "readings"}) EXPECT_EQ(bounds(t), expected(t, "month", {-2, -1, 0, 1, 2, 3})) << t;
  {
    const std::string m = metrics_when(http_port, {{"taylor_partitions_dropped_total{table=\"events_mirror\"}", 1},
                                                   {"taylor_partitions_dropped_total{table=\"readings\"}", 1}});
    EXPECT_EQ(metric_value(m, "taylor_partitions_dropped_total{table=\"events_mirror\"}"), 1) << m;
    EXPECT_EQ(metric_value(m, "taylor_partitions_dropped_total{table=\"readings\"}"), 1) << m;
  }
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();

  // At the edge, by rounds with a retention measured from this month's first
  // day: an hour more than the time since then keeps last month (it ended
  // less than the retention ago, though its row m-1 is older than that) and
  // drops the month before; exactly the time since then drops last month.
  const auto now = db.count("SELECT floor(extract(epoch FROM now()))::bigint");
  const auto since_first = now - db.count("SELECT extract(epoch FROM " + first + ")::bigint");
  done = maintain("month", static_cast<uint64_t>(since_first + 3600));
  EXPECT_EQ(done.dropped, (std::vector<std::string>{partition("events_mirror", start("month", -2)),
                                                    partition("readings", start("month", -2))}));
  EXPECT_EQ(where("readings", "m-1"), std::vector<std::string>{partition("readings", start("month", -1))});
  done = maintain("month", static_cast<uint64_t>(std::max<long>(since_first, 1)));
  EXPECT_EQ(done.dropped, (std::vector<std::string>{partition("events_mirror", start("month", -1)),
                                                    partition("readings", start("month", -1))}));
  for (const char* t : {"events_mirror", "readings"}) {
    EXPECT_EQ(bounds(t), expected(t, "month", {0, 1, 2, 3})) << t;
    EXPECT_EQ(where(t, "first"), std::vector<std::string>{partition(t, first)}) << t << ": this month's rows stay";
  }
}

}  // namespace
}  // namespace evpipe::testing
