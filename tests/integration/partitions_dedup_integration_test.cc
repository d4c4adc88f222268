// Partitioned tables keep one row per key (docs/partitions.md, "Which window
// is guaranteed"), end to end through the evpipe binary: keys scoped to the
// tenant, the dedup horizon of events and of dead letters at its edges, and
// the key tables' pruning. The rest of partitioning is in
// partitions_integration_test.cc.
#include <gtest/gtest.h>

#include "tests/integration/partitions_fixture.h"
#include "tests/support/harness.h"
#include "tests/support/metrics_wait.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

// Idempotency stays scoped to the tenant (docs/tenants.md) on partitioned
// tables: the key table's key is (tenant_id, idempotency_key).
TEST_F(Partitions, KeysAreScopedToTheTenant) {
  uint16_t port = free_port(), http_port = free_port();
  tuning t;
  t.tcp_extra = "tenant = \"alpha\"\n";
  evpipe_process evp(config_for(db, port, http_port, t) + storage() + "[tenants]\nenabled = true\n",
                     "partitions_tenants");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  // The same keys, stored before under another tenant.
  db.exec("INSERT INTO events_mirror (topic, payload, tenant_id) SELECT 'x', jsonb_build_object('idempotency_key', "
          "'k' || g), 'beta' FROM generate_series(0, 49) g; INSERT INTO evpipe_mirror_keys (tenant_id, idempotency_key) "
          "SELECT 'beta', 'k' || g FROM generate_series(0, 49) g");
  evp.start(port);
  send(port, events(0, 100), evp);
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(port);
  send(port, events(0, 150), evp);  // 100 redeliveries (the staging path), 50 new
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE tenant_id = 'alpha'"), 150) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE tenant_id = 'beta'"), 50);
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_mirror_keys"), 200);
  EXPECT_EQ(keys_stored_twice(), 0);
}

// docs/partitions.md, "Which window is guaranteed": a key stays as long as a
// row of its table is older (and for the retention at least), so a
// redelivery is recognized while its first row is stored; once its row and
// key are gone (past the retention), it is stored again.
TEST_F(Partitions, DedupHorizonAtItsEdges) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port) + storage(), "partitions_horizon");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  // gone: row 45 days old, in a partition that ended 40 days ago (dropped).
  // kept: row 35 days old, past the retention but in a partition that ends
  // 29 days ago (inside it, so not dropped): the oldest row left, whose key
  // (as old as it, to the microsecond) stays. young: row and key 20 days old.
  // edge: a key a microsecond older than the oldest row left (its row was
  // deleted by hand): it goes.
  old_partitions(29);
  for (const auto& [key, age] : {std::pair{"gone", 45}, {"kept", 35}, {"young", 20}}) store_old(key, age);
  db.exec("INSERT INTO evpipe_mirror_keys (tenant_id, idempotency_key, created_at) VALUES ('', 'edge', "
          "(SELECT min(created_at) FROM events_mirror WHERE idempotency_key <> 'gone') - interval '1 microsecond')");
  auto done = maintain(30 * 86'400);
  EXPECT_EQ(done.dropped.size(), 1u);
  EXPECT_EQ(db.column("SELECT idempotency_key FROM evpipe_mirror_keys ORDER BY 1"),
            (std::vector<std::string>{"kept", "young"}));
  evp.start(port);
  send(port, valid_event("gone") + "\n" + valid_event("kept") + "\n" + valid_event("young") + "\n" +
                 valid_event("edge") + "\n" + valid_event("new") + "\n",
       evp);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'gone'"), 1)
      << "past the horizon: stored again (its first row was dropped)";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'gone' AND created_at > now() - interval '1 hour'"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'kept'"), 1)
      << "older than the retention, but its row is stored: still recognized";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'young'"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'edge'"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'new'"), 1);
  EXPECT_EQ(keys_stored_twice(), 0);
}

// The key tables have no index on created_at (it would cost every write an
// entry); migrate drops the one an earlier evpipe made. Pruning then reads a
// key table through, so the maintenance thread does it only when keys may be
// past the cutoff: after a drop or a deletion of the oldest rows, not every
// round. Keys spread over several sweep statements (prune_pages = 2).
// The same horizon for dead letters (evpipe_dlq_keys, one row per topic and
// event digest): a dead letter whose partition was dropped is dead-lettered
// again when resent; one past the retention whose row is still stored, or a
// young one, is recognised and stored once.
TEST_F(Partitions, DeadLetterDedupHorizonAtItsEdges) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port) + storage(), "partitions_dlq_horizon");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec("CREATE TABLE dlq_events_a PARTITION OF dlq_events FOR VALUES FROM (now() - interval '50 days') "
          "TO (now() - interval '40 days')");
  db.exec("CREATE TABLE dlq_events_b PARTITION OF dlq_events FOR VALUES FROM (now() - interval '40 days') "
          "TO (now() - interval '29 days')");
  const std::string bad = "{\"bad\": \"gone\"}\n{\"bad\": \"kept\"}\n{\"bad\": \"young\"}\n";
  evp.start(port);
  send(port, bad, evp);
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  ASSERT_EQ(db.count("SELECT count(*) FROM dlq_events"), 3);
  ASSERT_EQ(db.count("SELECT count(*) FROM evpipe_dlq_keys"), 3);
  // Aged as if stored 45, 35 and 20 days ago: each row moves to the partition
  // of its time (DEFAULT for 20 days), and its key gets the row's time.
  for (const auto& [what, days] : {std::pair{"gone", 45}, {"kept", 35}, {"young", 20}}) {
    db.exec("UPDATE dlq_events SET created_at = now() - interval '" + std::to_string(days) + " days' WHERE payload->>'bad' = '" +
            what + "'");
  }
  db.exec("UPDATE evpipe_dlq_keys k SET created_at = d.created_at FROM dlq_events d WHERE k.original_topic = "
          "d.original_topic AND k.event_digest = d.event_digest");
  (void)maintain(30 * 86'400);
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_class WHERE relname = 'dlq_events_a' AND relnamespace = "
                     "current_schema()::regnamespace"),
            0)
      << "the partition that ended 40 days ago is dropped";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_dlq_keys"), 2) << "the dropped dead letter's key goes with it";
  evp.start(port);
  send(port, bad, evp);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE payload->>'bad' = 'gone'"), 1)
      << "past the horizon: dead-lettered again";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE payload->>'bad' = 'gone' AND created_at > now() - "
                     "interval '1 hour'"),
            1);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE payload->>'bad' = 'kept'"), 1)
      << "older than the retention, but its row is stored: still recognised";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE payload->>'bad' = 'young'"), 1);
}

TEST_F(Partitions, KeyTablesArePrunedBySweepsOnlyWhenKeysMayBeOld) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port) + storage(), "partitions_sweeps");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  const std::string time_index =
      "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname LIKE 'evpipe_%_keys_created_at'";
  EXPECT_EQ(db.count(time_index), 0);
  db.exec("CREATE INDEX evpipe_mirror_keys_created_at ON evpipe_mirror_keys (created_at)");
  db.exec("CREATE INDEX evpipe_dlq_keys_created_at ON evpipe_dlq_keys (created_at)");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  EXPECT_EQ(db.count(time_index), 0) << evp.log("migrate.log");

  // 600 keys of rows stored now, first, so that the old keys below are in
  // the table's last pages; then rows and their keys: "gone" in a partition
  // past the retention, "old" 35 days ago and "young" 20 days ago in one
  // inside it.
  db.exec("INSERT INTO evpipe_mirror_keys (tenant_id, idempotency_key) SELECT '', 'now-' || g FROM generate_series(1, 600) g");
  old_partitions(19);
  for (const auto& [key, age] : {std::pair{"gone", 45}, {"old", 35}, {"young", 20}}) store_old(key, age);
  ASSERT_GT(db.count("SELECT pg_relation_size('evpipe_mirror_keys') / 8192"), 2);
  ASSERT_GT(db.count("SELECT (ctid::text::point)[0] FROM evpipe_mirror_keys WHERE idempotency_key = 'gone'"), 1);
  const std::string keys = "SELECT idempotency_key FROM evpipe_mirror_keys WHERE idempotency_key NOT LIKE 'now-%' ORDER BY 1";

  io::key_sweep_memo memo;
  auto first = maintain(30 * 86'400, &memo);
  EXPECT_EQ(first.dropped.size(), 1u);
  EXPECT_EQ(first.key_sweeps, 2u) << "a new memo knows nothing: both key tables are read";
  EXPECT_EQ(first.keys_pruned, 1u);
  EXPECT_EQ(db.column(keys), (std::vector<std::string>{"old", "young"}));
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_mirror_keys WHERE idempotency_key LIKE 'now-%'"), 600);

  auto second = maintain(30 * 86'400, &memo);
  EXPECT_EQ(second.key_sweeps, 0u) << "nothing was dropped or deleted: no key can be past the cutoff";
  EXPECT_EQ(second.keys_pruned, 0u);

  // The oldest row deleted by hand: its key is now older than every row
  // (and than the retention), and the next round sweeps that key table only.
  db.exec("DELETE FROM events_mirror WHERE idempotency_key = 'old'");
  auto third = maintain(30 * 86'400, &memo);
  EXPECT_EQ(third.key_sweeps, 1u);
  EXPECT_EQ(third.keys_pruned, 1u);
  EXPECT_EQ(db.column(keys), (std::vector<std::string>{"young"}));
  EXPECT_EQ(maintain(30 * 86'400, &memo).key_sweeps, 0u);

  // Without a memo (migrate, a tool), every round reads them.
  EXPECT_EQ(maintain(30 * 86'400).key_sweeps, 2u);
  EXPECT_EQ(db.column(keys), (std::vector<std::string>{"young"}));

  // A drop with a warm memo (what a running evpipe meets once a period):
  // the partition of "young" ends 19 days ago, past a retention of 18
  // days; its key goes in the same round. The dead letters' key table has
  // nothing that old and is not read.
  auto dropped = maintain(18 * 86'400, &memo);
  EXPECT_EQ(dropped.dropped, (std::vector<std::string>{"events_mirror_b"}));
  EXPECT_EQ(dropped.key_sweeps, 1u);
  EXPECT_EQ(dropped.keys_pruned, 1u);
  EXPECT_TRUE(db.column(keys).empty());

  // Rows without a time of their own (a conversion gives them -infinity,
  // docs/partitions.md "From a plain table") make the cutoff -infinity: no
  // key is older, and the round neither fails nor prunes.
  db.exec("CREATE TABLE events_mirror_min PARTITION OF events_mirror FOR VALUES FROM (MINVALUE) TO (now() - interval '2 days')");
  db.exec("INSERT INTO events_mirror (topic, payload, created_at) VALUES ('tracker/events/it', '" + valid_event("ancient") +
          "', '-infinity'); INSERT INTO evpipe_mirror_keys (tenant_id, idempotency_key, created_at) VALUES ('', 'ancient', "
          "'-infinity')");
  auto ancient = maintain(18 * 86'400);  // asserts the round succeeded
  EXPECT_EQ(ancient.keys_pruned, 0u);
  EXPECT_EQ(db.column(keys), (std::vector<std::string>{"ancient"}));
}

}  // namespace
}  // namespace evpipe::testing
