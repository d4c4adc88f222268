// read/table_reader against PostgreSQL: the position column's migration, and
// the promise that a reader resuming from its last position never skips a
// row and never repeats one, although transactions commit out of id order.
#include "read/table_reader.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "io/postgres/schema_check.h"
#include "stages/topic_filter.h"
#include "tests/stages/topic_filter_cases.h"
#include "tests/support/harness.h"

namespace evpipe::read {
namespace {

using testing::test_db;

// A row copied out of the reader's callback (its views die with the callback).
struct owned_row {
  position pos;
  std::string topic, payload;
};
using namespace std::chrono_literals;

class TableReader : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) GTEST_SKIP() << "EVPIPE_TEST_DSN not set";
    ASSERT_TRUE(conn.connect(db.dsn(), "reader-test").ok);
    ASSERT_EQ(io::migrate_schema(conn, ""), "");
    ASSERT_EQ(reader.check(), "");
  }
  // Every row after `from`, in the reader's order.
  std::vector<owned_row> read_all(position from, read_window w = {}) {
    w.after = from;
    std::vector<owned_row> out;
    auto st = reader.read(w, [&](const event_row& r) {
      out.push_back({r.pos, std::string(r.topic), std::string(r.payload)});
      return row_action::next;
    });
    EXPECT_TRUE(st.ok) << st.message;
    return out;
  }
  // Rows after `from` once at least `n` are readable. The horizon is
  // cluster-wide: a transaction of another test (or another database) that
  // is still running holds rows back for a moment, as it would in production.
  std::vector<owned_row> read_at_least(position from, size_t n, read_window w = {}) {
    std::vector<owned_row> rows;
    testing::eventually([&] { return (rows = read_all(from, w)).size() >= n; });
    return rows;
  }
  static std::string row_sql(const std::string& topic, const std::string& key, const std::string& kind = "k") {
    return "INSERT INTO events_mirror (topic, payload) VALUES (" + sql_literal(topic) + ", " +
           sql_literal("{\"idempotency_key\":\"" + key + "\",\"kind\":\"" + kind + "\"}") + ")";
  }
  test_db db;
  io::pg_connection conn;
  table_reader reader{conn, ""};
};

// The live edge (where a client that subscribes "now" begins) is the newest
// position below the horizon in position order, and is found from the
// position index. It was once ordered by the transaction id's text ("9"
// after "10"): on a table whose ids had passed 999 (or 9,999,999) the edge
// was far back, and a "now" subscriber got every event since; and that sort
// read the whole table. (Ids below any cluster's horizon: initdb alone uses
// hundreds.)
TEST_F(TableReader, TheLiveEdgeIsTheNewestPositionWhateverTheIdsDigitCount) {
  db.exec("INSERT INTO events_mirror (tx, topic, payload) SELECT t::text::xid8, 't/a', "
          "jsonb_build_object('idempotency_key', 'edge-' || t) FROM unnest(ARRAY[9, 10, 98, 99, 100, 101]) t");
  position edge;
  ASSERT_TRUE(reader.live_edge(edge).ok);
  EXPECT_EQ(edge.tx, 101u);
  EXPECT_EQ(edge, read_all(position::start()).back().pos);
}

// Tables that predate positions get the column from `evpipe migrate` without
// a rewrite (same relfilenode), and their rows become readable in id order.
TEST_F(TableReader, MigrationAddsPositionsWithoutRewritingTheTable) {
  db.exec("DROP INDEX idx_events_mirror_tx_id");
  db.exec("ALTER TABLE events_mirror DROP COLUMN tx");
  EXPECT_NE(reader.check(), "");
  for (int i = 0; i < 50; ++i) db.exec(row_sql("t/a", "old-" + std::to_string(i)));
  db.exec("VACUUM FULL events_mirror");  // a table file without the dropped column
  auto before = db.column("SELECT pg_relation_filenode('events_mirror')").at(0);
  ASSERT_EQ(io::migrate_schema(conn, ""), "");
  EXPECT_EQ(db.column("SELECT pg_relation_filenode('events_mirror')").at(0), before);
  EXPECT_EQ(reader.check(), "");
  EXPECT_EQ(db.count("SELECT count(DISTINCT tx) FROM events_mirror"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'idx_events_mirror_tx_id'"), 1);
  db.exec(row_sql("t/a", "new-0"));
  auto rows = read_at_least(position::start(), 51);
  ASSERT_EQ(rows.size(), 51u);
  for (size_t i = 1; i < rows.size(); ++i) EXPECT_LT(rows[i - 1].pos, rows[i].pos);
  EXPECT_NE(rows.back().payload.find("new-0"), std::string::npos);
}

// The case an id-ordered reader gets wrong: the row with the smaller id
// commits after the one with the larger id.
TEST_F(TableReader, ARowCommittedLaterWithASmallerIdIsNotSkipped) {
  testing::side_session a(db.dsn()), b(db.dsn());
  a.exec("BEGIN");
  a.exec(row_sql("t", "first-id"));   // id 1, still running
  b.exec("BEGIN");
  b.exec(row_sql("t", "second-id"));  // id 2
  b.exec("COMMIT");
  // What an id-ordered reader would now take as "everything up to id 2".
  EXPECT_EQ(db.column("SELECT max(id) FROM events_mirror").at(0), "2");
  // The horizon holds b's row back while a runs.
  EXPECT_TRUE(read_all(position::start()).empty());
  a.exec("COMMIT");
  auto rows = read_at_least(position::start(), 2);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_NE(rows[0].payload.find("first-id"), std::string::npos);
  EXPECT_NE(rows[1].payload.find("second-id"), std::string::npos);
  EXPECT_TRUE(read_all(rows.back().pos).empty());
}

// A transaction that got its id first but writes its row last: positions
// follow transaction ids, not commit order, and still nothing is skipped,
// because the reader cannot pass the older transaction while it runs.
TEST_F(TableReader, AnOlderTransactionWritingLastIsNotSkipped) {
  db.exec("CREATE TABLE other_work (x int)");
  testing::side_session old_tx(db.dsn()), young_tx(db.dsn());
  old_tx.exec("BEGIN");
  old_tx.exec("INSERT INTO other_work VALUES (1)");  // takes its transaction id now
  young_tx.exec("BEGIN");
  young_tx.exec(row_sql("t", "young"));
  young_tx.exec("COMMIT");
  EXPECT_TRUE(read_all(position::start()).empty());
  old_tx.exec(row_sql("t", "old"));
  old_tx.exec("COMMIT");
  auto rows = read_at_least(position::start(), 2);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_NE(rows[0].payload.find("\"old\""), std::string::npos);  // the older transaction first
  EXPECT_NE(rows[1].payload.find("young"), std::string::npos);
}

// Concurrent writers in transactions of random length, a reader polling from
// its last position meanwhile: every row exactly once, positions increasing.
TEST_F(TableReader, ConcurrentWritersNeverMakeAResumingReaderSkipOrRepeat) {
  constexpr int writers = 4, txs_per_writer = 150;
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  std::string dsn = db.dsn();
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      PGconn* c = PQconnectdb(dsn.c_str());
      std::mt19937 rng(w);
      for (int t = 0; t < txs_per_writer; ++t) {
        std::string sql = "BEGIN;";
        int rows = 1 + rng() % 4;
        for (int r = 0; r < rows; ++r) sql += row_sql("t/" + std::to_string(w), std::to_string(w) + "-" + std::to_string(t) + "-" + std::to_string(r)) + ";";
        PQclear(PQexec(c, sql.c_str()));
        // Hold the transaction open a little, so that others commit past it.
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
        PQclear(PQexec(c, "COMMIT"));
      }
      PQfinish(c);
      done++;
    });
  }
  std::vector<position> seen;
  std::set<int64_t> ids;
  position last = position::start();
  auto deadline = std::chrono::steady_clock::now() + 120s;
  long expected = -1;
  while (std::chrono::steady_clock::now() < deadline) {
    bool writers_done = done.load() == writers;
    if (writers_done && expected < 0) expected = db.count("SELECT count(*) FROM events_mirror");
    for (const auto& r : read_all(last)) {
      seen.push_back(r.pos);
      EXPECT_TRUE(ids.insert(r.pos.id).second) << "row " << r.pos.id << " delivered twice";
      last = r.pos;
    }
    if (expected >= 0 && static_cast<long>(ids.size()) >= expected) break;
    std::this_thread::sleep_for(2ms);
  }
  for (auto& t : threads) t.join();
  long total = db.count("SELECT count(*) FROM events_mirror");
  EXPECT_EQ(static_cast<long>(ids.size()), total);
  EXPECT_EQ(*ids.begin(), 1);
  EXPECT_EQ(*ids.rbegin(), std::stoll(db.column("SELECT max(id) FROM events_mirror").at(0)));
  for (size_t i = 1; i < seen.size(); ++i) ASSERT_LT(seen[i - 1], seen[i]);
}

// PostgreSQL's regular expressions match exactly what topic_matches does.
TEST_F(TableReader, TopicFiltersInSqlAgreeWithMqttMatching) {
  std::set<std::string> topics;
  for (const auto& c : stages::topic_cases) topics.insert(c.topic);
  int n = 0;
  for (const auto& t : topics) db.exec(row_sql(t, "k" + std::to_string(n++)));
  ASSERT_EQ(read_at_least(position::start(), topics.size()).size(), topics.size());
  for (const auto& c : stages::topic_cases) {
    read_window w;
    w.any_of = {row_clause{{c.filter}, {}}};
    std::set<std::string> got;
    for (const auto& r : read_all(position::start(), w)) got.insert(r.topic);
    for (const auto& t : topics) EXPECT_EQ(got.count(t) == 1, stages::topic_matches(c.filter, t)) << c.filter << " vs " << t;
  }
}

// Several clauses (a stream client's subscriptions): a row matching any one
// of them is read, each clause being its topics and its kinds; the SQL and
// row_clause::matches agree.
TEST_F(TableReader, ARowOfAnyClauseIsReadEachClauseItsTopicsAndKinds) {
  int n = 0;
  for (const char* topic : {"a/1", "b/1", "c/1"}) {
    for (const char* kind : {"x", "y"}) {
      db.exec("INSERT INTO events_mirror (topic, payload) VALUES ('" + std::string(topic) +
              "', jsonb_build_object('idempotency_key', 'k" + std::to_string(n++) + "', 'kind', '" + kind + "'))");
    }
  }
  ASSERT_EQ(read_at_least(position::start(), 6).size(), 6u);
  read_window w;
  w.any_of = {row_clause{{"a/#"}, {"x"}}, row_clause{{"b/1"}, {}}, row_clause{{}, {"nothing"}}};
  std::set<std::string> got;
  for (const auto& r : read_all(position::start(), w)) {
    const size_t at = r.payload.find("\"kind\": \"");
    ASSERT_NE(at, std::string::npos) << r.payload;
    got.insert(r.topic + ":" + r.payload.substr(at + 9, 1));
  }
  EXPECT_EQ(got, (std::set<std::string>{"a/1:x", "b/1:x", "b/1:y"}));
  for (const char* topic : {"a/1", "b/1", "c/1"}) {
    for (const char* kind : {"x", "y"}) {
      bool any = false;
      for (const auto& c : w.any_of) any = any || c.matches(topic, kind);
      EXPECT_EQ(any, got.count(std::string(topic) + ":" + kind) == 1) << topic << " " << kind;
    }
  }
  w.any_of.push_back(row_clause{});  // a clause of every row: every row
  EXPECT_EQ(read_all(position::start(), w).size(), 6u);
}

TEST_F(TableReader, StoppingEarlyLeavesTheConnectionUsable) {
  db.exec("INSERT INTO events_mirror (topic, payload) SELECT 't', jsonb_build_object('idempotency_key', 'k' || g, "
          "'kind', 'k') FROM generate_series(1, 20000) g");
  ASSERT_EQ(read_at_least(position::start(), 20000).size(), 20000u);
  int got = 0;
  auto st = reader.read({}, [&](const event_row&) { return ++got == 10 ? row_action::stop : row_action::next; });
  EXPECT_TRUE(st.ok) << st.message;
  EXPECT_EQ(got, 10);
  read_window w;
  w.limit = 5;
  w.any_of = {row_clause{{}, {"k"}}};
  EXPECT_EQ(read_all(position::start(), w).size(), 5u);
  db.exec("ANALYZE events_mirror");
  EXPECT_GT(reader.estimate_rows({}), 1000u);
  horizon_state h;
  ASSERT_TRUE(read_horizon(conn, h).ok);
  EXPECT_GT(h.horizon, 0u);
  EXPECT_LE(h.horizon, h.next_tx);
}

// A table PostgreSQL has no statistics for yet (a fresh table, a new
// partition, the first minute of a deployment): a read from a position near
// the end reads from the position index, and does not read and sort the
// whole table. Before the redundant lower bound on tx, the planner's default
// guess for the row comparison (a third of the table, a third again for the
// horizon) chose a sequential scan and a sort (here with 120,000 rows;
// during a 20,000/s load already at some 50,000): the stream's tail reads of 3,000 rows took 170-190 ms
// instead of 11-15 (docs/read.md).
TEST_F(TableReader, AReadFromAPositionUsesThePositionIndexWithoutStatistics) {
  db.exec("ALTER TABLE events_mirror SET (autovacuum_enabled = false)");
  // 120 transactions of 1,000 rows, as a live table has them.
  db.exec("DO $$ BEGIN FOR i IN 1..120 LOOP "
          "INSERT INTO events_mirror (topic, payload) SELECT 't/a', jsonb_build_object('idempotency_key', "
          "'s-' || i || '-' || g, 'kind', 'k', 'text', repeat('x', 200)) FROM generate_series(1, 1000) g; "
          "COMMIT; END LOOP; END $$");
  ASSERT_EQ(db.count("SELECT count(*) FROM pg_stats WHERE tablename = 'events_mirror' AND schemaname = current_schema()"), 0);
  auto near_end = db.column("SELECT tx::text || ' ' || id FROM events_mirror ORDER BY tx DESC, id DESC OFFSET 3000 LIMIT 1");
  ASSERT_EQ(near_end.size(), 1u);
  read_window w;
  w.after = {std::stoull(near_end[0].substr(0, near_end[0].find(' '))), std::stoll(near_end[0].substr(near_end[0].find(' ') + 1))};
  w.limit = 10'000;
  std::string plan;
  for (const auto& line : db.column("EXPLAIN " + reader.select_sql(w))) plan += line + "\n";
  EXPECT_EQ(plan.find("Seq Scan"), std::string::npos) << plan;
  EXPECT_NE(plan.find("idx_events_mirror_tx_id"), std::string::npos) << plan;
  EXPECT_EQ(read_at_least(w.after, 3000, w).size(), 3000u);
}

// A page far from the end, of every row (the stream's catch-up of a client
// without a filter that fell far behind): read as a scan of the position
// index in order that stops after the page. With the planner's own choice
// (another connection, below), the range bound of select_sql makes
// PostgreSQL read every row from the position on (a bitmap scan) and sort
// them, for each page.
TEST_F(TableReader, APageFarFromTheEndReadsOnlyThePageWithoutStatistics) {
  db.exec("ALTER TABLE events_mirror SET (autovacuum_enabled = false)");
  db.exec("DO $$ BEGIN FOR i IN 1..120 LOOP "
          "INSERT INTO events_mirror (topic, payload) SELECT 't/a', jsonb_build_object('idempotency_key', "
          "'p-' || i || '-' || g, 'kind', 'k', 'text', repeat('x', 200)) FROM generate_series(1, 1000) g; "
          "COMMIT; END LOOP; END $$");
  auto early = db.column("SELECT tx::text || ' ' || id FROM events_mirror ORDER BY tx, id OFFSET 1000 LIMIT 1");
  auto last = db.column("SELECT tx::text || ' ' || id FROM events_mirror ORDER BY tx DESC, id DESC LIMIT 1");
  ASSERT_EQ(early.size(), 1u);
  ASSERT_EQ(last.size(), 1u);
  auto pos = [](const std::string& s) {
    return position{std::stoull(s.substr(0, s.find(' '))), std::stoll(s.substr(s.find(' ') + 1))};
  };
  read_window w;
  w.after = pos(early[0]);
  w.until = pos(last[0]);
  w.limit = 500;
  // Past the horizon first (another test's open transaction could hold it).
  ASSERT_EQ(read_at_least(w.after, 500, w).size(), 500u);
  std::string plan, scan;
  for (const auto& line : reader.explain_read(w)) {
    plan += line + "\n";
    if (line.find("Index Scan using idx_events_mirror_tx_id") != std::string::npos) scan = line;
  }
  EXPECT_EQ(plan.find("Bitmap"), std::string::npos) << plan;
  EXPECT_EQ(plan.find("Sort"), std::string::npos) << plan;
  EXPECT_NE(scan.find("actual rows=500 "), std::string::npos) << "the scan stops after the page:\n" << plan;
  // No setting stays on the session afterwards (a pooler in transaction
  // mode may hand it to another client).
  io::pg_result r;
  ASSERT_TRUE(conn.query("SHOW enable_bitmapscan", r).ok);
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "on") << "the setting is the read's transaction's only";
  std::string before;
  for (const auto& line : db.column("EXPLAIN (ANALYZE, TIMING OFF) " + reader.select_sql(w))) before += line + "\n";
  std::cout << "the planner's own choice, on another connection:\n" << before;
}

}  // namespace
}  // namespace evpipe::read
