// Partitioned events_mirror and dlq_events ([storage] partition,
// docs/partitions.md), end to end through the evpipe binary and the
// PostgreSQL of scripts/test.sh: migrate makes them partitioned; ingest goes
// on across a partition boundary with one row per key on both sides; an event
// of last year is stored, and a row no partition covers lands in the DEFAULT
// partition and moves to a partition made for it; retention drops a whole
// partition while events keep coming, losing nothing else; and a populated
// plain table is converted step by step. The dedup horizon's edges are in
// partitions_dedup_integration_test.cc.

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/integration/partitions_fixture.h"
#include "tests/integration/replay_run.h"
#include "tests/support/harness.h"
#include "tests/support/metrics_wait.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

TEST_F(Partitions, MigrateMakesPartitionedTablesAndIngestCrossesABoundary) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port) + storage(), "partitions_boundary");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  ASSERT_EQ(evp.run_command("migrate"), 0) << "migrate is idempotent: " << evp.log("migrate.log");
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_class WHERE relname IN ('events_mirror', 'dlq_events') AND relkind = 'p' "
                     "AND relnamespace = current_schema()::regnamespace"),
            2);
  // Today and 3 days ahead, for both tables, and their DEFAULT partitions.
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events_mirror'::regclass"), 5);
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'dlq_events'::regclass"), 5);
  const std::string today = db.column("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')").at(0);
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_class WHERE relname = 'events_mirror_p" + today +
                     "' AND relnamespace = current_schema()::regnamespace"),
            1);  // (other tests' schemas have one too)

  // A boundary inside today: once the first events are stored, today's
  // partition is cut at that moment (it keeps its rows and evpipe's name for
  // today, so maintenance leaves it be) and a second one takes the rest of
  // the day. Rows before and after it, however fast the machine is.
  evp.start(port);
  send(port, events(0, 50), evp);
  db.exec("DO $$ DECLARE at timestamptz := clock_timestamp(); day timestamptz := date_trunc('day', now(), 'UTC'); "
          "BEGIN ALTER TABLE events_mirror DETACH PARTITION events_mirror_p" + today + "; "
          "EXECUTE format('ALTER TABLE events_mirror ATTACH PARTITION events_mirror_p" + today +
          " FOR VALUES FROM (%L) TO (%L)', day, at); "
          "EXECUTE format('CREATE TABLE events_mirror_after PARTITION OF events_mirror FOR VALUES FROM (%L) TO (%L)', "
          "at, day + interval '1 day'); END $$");
  // More events, each key sent twice, the second time in a later batch (and,
  // for the first round's, on the other side of the boundary): one row per key.
  int sent = 50;
  for (int round = 1; round < 20; ++round) {
    send(port, events(round * 50, round * 50 + 50), evp);
    send(port, events((round - 1) * 50 + 25, round * 50), evp);  // redeliveries
    sent = round * 50 + 50;
    std::this_thread::sleep_for(100ms);
  }
  // A restart empties the in-memory window: only the key table recognizes these.
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(port);
  send(port, events(0, sent), evp);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), sent) << evp.log();
  EXPECT_EQ(keys_stored_twice(), 0);
  EXPECT_GT(db.count("SELECT count(*) FROM events_mirror_p" + today), 0) << "rows before the boundary";
  EXPECT_GT(db.count("SELECT count(*) FROM events_mirror_after"), 0) << "rows after the boundary";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror_default"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_mirror_keys"), sent);

  // Dead letters go to the partitioned dlq_events, one per (topic, bytes) however often resent.
  send(port, "{\"not\": \"an envelope\"}\n{\"not\": \"an envelope\"}\n", evp);
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(port);
  send(port, "{\"not\": \"an envelope\"}\n", evp);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 1) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_dlq_keys"), 1);
  // `evpipe dlq purge` takes the keys along: the event sent again is dead-lettered again.
  const std::string dir = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_partitions_boundary";
  const std::string purge = evpipe_binary() + " dlq purge --yes --config " + dir + "/evpipe.toml >" + dir +
                            "/purge.log 2>&1";
  ASSERT_EQ(std::system(purge.c_str()), 0) << read_file(dir + "/purge.log");
  EXPECT_NE(read_file(dir + "/purge.log").find("deleted 1 dead letters"), std::string::npos) << read_file(dir + "/purge.log");
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_dlq_keys"), 0);
  send(port, "{\"not\": \"an envelope\"}\n", evp);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 1) << evp.log();
}

TEST_F(Partitions, AnEventOfLastYearIsStoredAndRowsNoPartitionCoversMoveOutOfTheDefault) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port) + storage(), "partitions_last_year");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  // Its ts is last year's: the row is stored now, in today's partition
  // (partitions are by created_at, the time the row was stored).
  const std::string last_year = db.column("SELECT to_char(now() - interval '1 year', 'YYYY-MM-DD')").at(0);
  std::string e = valid_event("old-ts");
  e.replace(e.find("2025-01-15"), 10, last_year);
  send(port, e + "\n", evp);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'old-ts' AND "
                     "payload->>'ts' LIKE '" + last_year + "%' AND created_at > now() - interval '1 minute'"),
            1) << evp.log();
  // evpipe is stopped first: its maintainer's first round runs on its own
  // thread after start, and on a loaded machine it came after the INSERT
  // below and moved the rows before the test's round could (rows_moved 0).
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  // Another writer (an INSERT that sets created_at, as a backfill does) writes
  // rows of last year, which no partition covers: they go to DEFAULT.
  db.exec("INSERT INTO events_mirror (topic, payload, created_at) SELECT 'backfill', jsonb_build_object('n', g), "
          "now() - interval '1 year' + g * interval '1 minute' FROM generate_series(1, 30) g");
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror_default"), 30);
  // Maintenance makes partitions for them (moving the rows), after which ATTACH of those days works.
  auto done = maintain(0);
  EXPECT_EQ(done.rows_moved, 30u);
  EXPECT_GE(done.created.size(), 1u);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror_default"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic = 'backfill'"), 30) << "moved, not lost";
  const std::string day = db.column("SELECT to_char((now() - interval '1 year' + interval '1 minute') AT TIME ZONE 'UTC', 'YYYYMMDD')").at(0);
  EXPECT_GE(db.count("SELECT count(*) FROM events_mirror_p" + day), 1);
  EXPECT_EQ(maintain(0).created.size(), 0u) << "a second round has nothing to do";
  // A key of such a row is still one row: resent through evpipe after a restart.
  evp.start(port);
  send(port, e + "\n", evp);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'old-ts'"), 1);
}

TEST_F(Partitions, RetentionDropsAPartitionUnderLoadAndNothingElse) {
  uint16_t port = free_port(), http_port = free_port();
  std::string cfg = config_for(db, port, http_port) + storage("retention = \"30d\"\ncheck_interval_s = 1\n");
  cfg.replace(cfg.find("level = \"warn\""), 14, "level = \"info\"");  // drops are logged at info
  evpipe_process evp(cfg, "partitions_retention");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  // Rows of 40 and of 20 days ago, each in a partition of its day (moved
  // there from DEFAULT by a round without retention).
  db.exec("INSERT INTO events_mirror (topic, payload, created_at) SELECT 'old', jsonb_build_object('n', g), "
          "now() - interval '40 days' FROM generate_series(1, 100) g");
  db.exec("INSERT INTO events_mirror (topic, payload, created_at) SELECT 'recent', jsonb_build_object('n', g), "
          "now() - interval '20 days' FROM generate_series(1, 100) g");
  ASSERT_EQ(maintain(0).rows_moved, 200u);
  const std::string old_day = db.column("SELECT to_char((now() - interval '40 days') AT TIME ZONE 'UTC', 'YYYYMMDD')").at(0);
  ASSERT_EQ(db.count("SELECT count(*) FROM events_mirror_p" + old_day), 100);

  evp.start(port);
  // Load while maintenance (every second) drops the old partition.
  std::atomic<bool> stop{false};
  std::atomic<int> acked{0};
  std::thread load([&] {
    for (int round = 0; round < 300 && !stop; ++round) {
      ndjson_client producer(port);
      producer.send_all(events(round * 100, round * 100 + 100, "load"));
      if (producer.read_acks_until(100, 60s) != 100) return;
      acked += 100;
    }
  });
  const bool dropped = eventually([&] {
    return db.count("SELECT count(*) FROM pg_class WHERE relname = 'events_mirror_p" + old_day +
                    "' AND relnamespace = current_schema()::regnamespace") == 0;
  }, 30s, 50ms);
  std::this_thread::sleep_for(1s);  // more load after the drop
  stop = true;
  load.join();
  EXPECT_TRUE(dropped) << evp.log();
  EXPECT_GT(acked.load(), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic = 'old'"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic = 'recent'"), 100) << "inside the retention";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'load%'"), acked.load())
      << "every acked event is there once: " << evp.log();
  EXPECT_EQ(keys_stored_twice(), 0);
  const std::string m =
      metrics_when(http_port, {{"taylor_partitions_dropped_total{table=\"events_mirror\"}", 1},
                               {"taylor_partition_rows_dropped_total{table=\"events_mirror\"}", 100}});
  EXPECT_EQ(metric_value(m, "taylor_partitions_dropped_total{table=\"events_mirror\"}"), 1) << m;
  EXPECT_EQ(metric_value(m, "taylor_partition_rows_dropped_total{table=\"events_mirror\"}"), 100) << m;
  EXPECT_TRUE(evp.log_has("events_mirror_p" + old_day + " dropped")) << "logged";
}

// What retention drops from events_mirror is recorded with its last read
// position, in the transaction that drops it (a partition, and rows past the
// retention found in DEFAULT), and a replay from before it is refused with
// where to resume; from there it reads exactly the rows kept after it.
TEST_F(Partitions, RetentionRecordsWhatItDroppedAndAResumeFromBeforeItIsRefused) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port) + storage(), "partitions_marks");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  // The position text of a row (read/position.h: "1-" tx and id, 16 lowercase hex digits each).
  const std::string pos_sql = "'1-' || lpad(to_hex(tx::text::bigint), 16, '0') || lpad(to_hex(id), 16, '0')";
  auto position_of = [&](const std::string& where, const std::string& order) {
    return db.column("SELECT " + pos_sql + " FROM events_mirror WHERE " + where + " ORDER BY tx " + order + ", id " +
                     order + " LIMIT 1")
        .at(0);
  };
  // 100 rows of 40 days ago in their day's partition; then 50 of 45 days ago
  // (no partition: DEFAULT) and 30 of 20 days ago, each batch its own transaction.
  db.exec("INSERT INTO events_mirror (topic, payload, created_at) SELECT 'old', jsonb_build_object('n', g), "
          "now() - interval '40 days' FROM generate_series(1, 100) g");
  ASSERT_EQ(maintain(0).rows_moved, 100u);
  db.exec("INSERT INTO events_mirror (topic, payload, created_at) SELECT 'older', jsonb_build_object('n', g), "
          "now() - interval '45 days' FROM generate_series(1, 50) g");
  db.exec("INSERT INTO events_mirror (topic, payload, created_at) SELECT 'recent', jsonb_build_object('n', g), "
          "now() - interval '20 days' FROM generate_series(1, 30) g");
  ASSERT_EQ(db.count("SELECT count(*) FROM events_mirror_default WHERE topic = 'older'"), 50);
  const std::string first_old = position_of("topic = 'old'", "ASC"), last_old = position_of("topic = 'old'", "DESC");
  const std::string last_older = position_of("topic = 'older'", "DESC");
  const std::string old_day = db.column("SELECT to_char((now() - interval '40 days') AT TIME ZONE 'UTC', 'YYYYMMDD')").at(0);

  const auto done = maintain(30 * 86400);
  EXPECT_EQ(done.rows_dropped, 150u);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic IN ('old', 'older')"), 0);
  EXPECT_EQ(db.column("SELECT dropped || '|' || rows || '|' || '1-' || lpad(to_hex(last_tx::text::bigint), 16, '0') || "
                      "lpad(to_hex(last_id), 16, '0') FROM evpipe_retention_marks WHERE table_name = 'events_mirror' "
                      "ORDER BY last_tx, last_id"),
            (std::vector<std::string>{"events_mirror_p" + old_day + "|100|" + last_old,
                                      db.column("SELECT 'rows of events_mirror_default from ' || "
                                                "to_char((now() - interval '45 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD') || ' to ' || "
                                                "to_char((now() - interval '44 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD')").at(0) +
                                          "|50|" + last_older}));
  EXPECT_EQ(maintain(30 * 86400).rows_dropped, 0u) << "nothing more to drop";
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_retention_marks"), 2) << "and nothing recorded for it";

  // A replay from before what was dropped: refused, naming where to resume.
  auto replay = [&](const std::string& args) { return run_replay(evpipe_binary(), evp.dir(), args); };
  // From before both drops, all 150 rows; from the first's last row, the second's 50.
  for (const auto& [from, gone] :
       {std::pair{first_old, std::string("(2 drops of 150 rows in all; the last rows of events_mirror_default from ")},
        std::pair{last_old, std::string("(50 rows, rows of events_mirror_default from ")}}) {
    const auto r = replay("--since " + from);
    EXPECT_EQ(r.exit_code, 2) << from << ": " << r.err;
    EXPECT_NE(r.err.find("events after position " + from + " are gone: [storage] retention dropped them " + gone),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("), up to position " + last_older + ". Resume from \"" + last_older + "\""), std::string::npos)
        << r.err;
  }
  auto r = replay("--since " + last_older);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.lines.size(), 30u) << "the rows kept after it, each once: " << r.err;
  r = replay("--since 2000-01-01T00:00:00Z");
  EXPECT_EQ(r.exit_code, 0) << "a time reads every event kept from then: " << r.err;
  EXPECT_EQ(r.lines.size(), 30u) << r.err;
}

// Every step of evpipe's own maintenance round while events flow, on both
// tables: the partitions ahead (dropped before the start) are made again,
// rows of another writer found in DEFAULT get a partition of their day and
// are moved into it (those past the retention deleted), and old dead letters
// go with their partition. Ingest meanwhile loses nothing and stores every
// acked event and every dead letter once.
TEST_F(Partitions, MaintenanceUnderLoadCreatesMovesAndDropsOnBothTables) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port) + storage("retention = \"30d\"\ncheck_interval_s = 1\n"),
                     "partitions_maintenance");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  const std::string today = db.column("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')").at(0);
  // Partitions of the days after today, for both tables.
  auto ahead = [&] {
    return db.count("SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent IN "
                    "('events_mirror'::regclass, 'dlq_events'::regclass) AND c.relname ~ '_p[0-9]{8}$' AND "
                    "right(c.relname, 8) > '" + today + "'");
  };
  ASSERT_EQ(ahead(), 6) << "migrate makes 3 days ahead for each table";

  evp.start(port);
  // Load: 90 valid events and 10 invalid ones a round, until the end.
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  std::thread load([&] {
    for (int round = 0; round < 600 && !stop; ++round) {
      std::string data = events(round * 90, round * 90 + 90, "mload");
      for (int i = 0; i < 10; ++i) data += "{\"bad\": " + std::to_string(round * 10 + i) + "}\n";
      ndjson_client producer(port);
      producer.send_all(data);
      if (producer.read_acks_until(100, 60s) != 100) return;
      ++rounds;
    }
  });
  stop_and_join load_guard{stop, load};
  // Once events flow (evpipe's first round, at start, has run by then: it
  // had nothing to do), the work of the next rounds is made: the partitions
  // ahead go, and another writer's rows of 10 days ago (both tables) and of
  // 40 days ago (dead letters, past the retention) land in DEFAULT.
  ASSERT_TRUE(eventually([&] { return rounds.load() >= 3; }, 30s)) << evp.log();
  const std::string m0 = http_get(http_port, "/metrics");
  // One table at a time (each DROP locks its parent): evpipe's writes lock
  // events_mirror, then dlq_events; one transaction taking them the other
  // way round could deadlock with a write.
  for (const char* parent : {"events_mirror", "dlq_events"}) {
    db.exec(std::string("DO $$ DECLARE r record; BEGIN FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON "
                        "c.oid = i.inhrelid WHERE i.inhparent = '") + parent + "'::regclass AND c.relname ~ "
            "'_p[0-9]{8}$' AND right(c.relname, 8) > '" + today + "' LOOP EXECUTE 'DROP TABLE ' || "
            "quote_ident(r.relname); END LOOP; END $$");
  }
  db.exec("INSERT INTO events_mirror (topic, payload, created_at) SELECT 'backfill', jsonb_build_object('n', g), "
          "now() - interval '10 days' FROM generate_series(1, 30) g");
  db.exec("INSERT INTO dlq_events (original_topic, failure_reason, reason_code, payload, created_at) SELECT "
          "'backfill', 'old', 'invalid_json', jsonb_build_object('n', g), now() - interval '10 days' FROM "
          "generate_series(1, 20) g");
  db.exec("INSERT INTO dlq_events (original_topic, failure_reason, reason_code, payload, created_at) SELECT "
          "'expired', 'old', 'invalid_json', jsonb_build_object('n', g), now() - interval '40 days' FROM "
          "generate_series(1, 20) g");
  const int rounds_before = rounds.load();
  const bool done = eventually([&] {
    return ahead() == 6 && db.count("SELECT count(*) FROM events_mirror_default") == 0 &&
           db.count("SELECT count(*) FROM dlq_events_default") == 0;
  }, 30s, 50ms);
  std::this_thread::sleep_for(500ms);  // more load after it
  stop = true;
  load.join();
  ASSERT_TRUE(done) << "partitions ahead " << ahead() << "\n" << evp.log();
  EXPECT_GT(rounds.load(), rounds_before) << "no load while maintenance worked";
  const int n = rounds.load();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'mload%'"), n * 90) << evp.log();
  EXPECT_EQ(keys_stored_twice(), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE payload ? 'bad'"), n * 10);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic = 'backfill'"), 30) << "moved, not lost";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE original_topic = 'backfill'"), 20) << "moved, not lost";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE original_topic = 'expired'"), 0) << "past the retention";
  const std::string day = db.column("SELECT to_char((now() - interval '10 days') AT TIME ZONE 'UTC', 'YYYYMMDD')").at(0);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror_p" + day), 30);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events_p" + day), 20);
  // What this run's evpipe did, from its counters (before: after its first round).
  const std::string m = metrics_when(http_port, {{"taylor_partition_rows_moved_total{table=\"events_mirror\"}", 30},
                                                 {"taylor_partition_rows_moved_total{table=\"dlq_events\"}", 20}});
  for (const char* table : {"events_mirror", "dlq_events"}) {
    const std::string created = std::string("taylor_partitions_created_total{table=\"") + table + "\"}";
    EXPECT_GE(metric_value(m, created) - metric_value(m0, created), 4) << m << "\nbefore:\n" << m0;
  }
  EXPECT_EQ(metric_value(m, "taylor_partition_rows_dropped_total{table=\"dlq_events\"}"), 20) << m;
}

// docs/partitions.md, "From a plain table": the three steps on a populated
// plain table; then evpipe writes into the partitioned one and recognizes
// redeliveries of the events stored before the change.
TEST_F(Partitions, ConvertsAPopulatedPlainTableStepByStep) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process plain(config_for(db, port, http_port), "partitions_convert_plain");
  ASSERT_EQ(plain.run_command("migrate"), 0) << plain.log("migrate.log");
  plain.start(port);
  send(port, events(0, 2000), plain);
  send(port, "{\"bad\": 1}\n", plain);
  db.exec("UPDATE events_mirror SET created_at = created_at - interval '3 days' WHERE id % 2 = 0");
  plain.kill(SIGTERM);
  ASSERT_EQ(plain.wait(), 0) << plain.log();
  ASSERT_EQ(db.count("SELECT count(*) FROM events_mirror"), 2000);

  evpipe_process part(config_for(db, port, http_port) + storage(), "partitions_convert");
  EXPECT_NE(part.run_command("migrate"), 0) << "migrate refuses to partition a plain table by itself";
  EXPECT_NE(part.log("migrate.log").find("docs/partitions.md"), std::string::npos) << part.log("migrate.log");
  db.exec(read_file(std::string(EVPIPE_SOURCE_DIR) + "/schemas/partitions/convert_1_rename.sql"));
  ASSERT_EQ(part.run_command("migrate"), 0) << part.log("migrate.log");
  db.exec(read_file(std::string(EVPIPE_SOURCE_DIR) + "/schemas/partitions/convert_3_attach.sql"));

  EXPECT_EQ(db.count("SELECT count(*) FROM pg_class WHERE relname = 'events_mirror' AND relkind = 'p' "
                     "AND relnamespace = current_schema()::regnamespace"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 2000) << "every row kept";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror_plain"), 1000) << "the older half stays in the old table";
  part.start(port);
  send(port, events(0, 2500), part);  // 2000 redeliveries, 500 new
  send(port, "{\"bad\": 1}\n", part);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 2500) << part.log();
  EXPECT_EQ(keys_stored_twice(), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 1) << "the old dead letter is recognized too";
  EXPECT_EQ(db.count("SELECT count(DISTINCT id) FROM events_mirror"), 2500) << "ids continue after the old ones";
  // Retention drops the converted table whole once its range is past it.
  const long in_plain = db.count("SELECT count(*) FROM events_mirror_plain");
  auto done = maintain(1);  // the old table's range ends at today's start, more than 1 s ago
  EXPECT_NE(std::find(done.dropped.begin(), done.dropped.end(), "events_mirror_plain"), done.dropped.end());
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 2500 - in_plain) << "only the converted table's rows went";
}

}  // namespace
}  // namespace evpipe::testing
