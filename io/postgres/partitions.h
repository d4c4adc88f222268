#pragma once
// Partitioned events_mirror and dlq_events ([storage] partition,
// docs/partitions.md): the tables, their key tables, and the maintenance
// that creates partitions ahead of time and drops those past the retention.
// The same maintenance keeps the partitions of the append route tables that
// name their time column with `partition_by` (the user creates those tables
// partitioned; evpipe checks them in route_check.cc).
//
// Layout. Each of evpipe's tables is range-partitioned on created_at (the writing
// transaction's now(): the time the row was stored, not the event's ts), with
// one partition per day, week (from Monday 00:00 UTC) or month, named
// <table>_pYYYYMMDD after its first day, and a DEFAULT partition
// (<table>_default) that takes any row no partition covers, so that nothing
// is ever refused for its time. A route table is partitioned on its
// partition_by column (the event's own time), named and laid out likewise.
//
// One row per key. A unique index of a partitioned table must include the
// partition key, so (idempotency_key, tenant_id) can no longer be unique on
// events_mirror itself. The key moves to a table of its own,
// evpipe_mirror_keys (idempotency_key, tenant_id, created_at) with that
// primary key, written in the same transaction as the rows (postgres_sink),
// and likewise evpipe_dlq_keys (original_topic, event_digest) for
// dlq_events. A key is pruned only when it is older than every row of its
// table (and than the retention): as long as a row is stored, its key is too.
// The key tables have no index on created_at, which would cost each write
// one more index entry: a round prunes by reading the key table through,
// and only when a drop (or a deletion) has left keys to prune
// (key_sweep_memo).
//
// Maintenance never blocks ingest for long: every statement runs with a short
// lock_timeout (writers queue behind a waiting DDL at most that long) and a
// failure is retried at the next round. A partition is made as a plain table
// then ATTACHed (SHARE UPDATE EXCLUSIVE on the parent, which COPY does not
// wait for); rows that the DEFAULT partition holds in its range are moved
// into it in the same transaction, as ATTACH would otherwise fail on them.
// Dropping a partition takes ACCESS EXCLUSIVE on the parent for a moment.
//
// Lifecycle: partition_maintainer is made by `run` when [storage] partition
// is set; start() runs rounds on its own thread and connection, stop() ends
// it within one statement. maintain_once() is one round on a caller's
// connection (migrate, tests, tools).

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/route_config.h"
#include "io/postgres/pg_connection.h"

namespace evpipe::io {

// An append route's table whose partitions evpipe keeps: [[routes]]
// partition_by (docs/partitions.md, "Route tables").
struct partitioned_route_table {
  std::string table;   // as the route writes it: "telemetry" or "schema.telemetry"
  std::string column;  // its range partition key, a timestamptz column
  bool operator==(const partitioned_route_table&) const = default;
};

// The routes' tables with a partition_by, each once.
[[nodiscard]] std::vector<partitioned_route_table> partitioned_route_tables(const std::vector<config::route>& routes);

// A reload's routes (app/reload.cc): a running partition_maintainer takes
// this list instead of its options' route_tables from its next round on.
void publish_partitioned_route_tables(std::vector<partitioned_route_table> tables);

struct partition_options {
  std::string dsn;
  std::string schema;             // "" = the connection's search_path
  std::string unit = "day";       // "day", "week" or "month"
  uint64_t retention_s = 0;       // 0 = never drop
  uint32_t premake = 3;           // partitions beyond the current one
  uint32_t interval_s = 300;      // between rounds
  uint32_t lock_timeout_ms = 500; // per statement
  uint32_t prune_pages = 1024;    // key table pages per statement of a sweep
  std::vector<partitioned_route_table> route_tables;  // kept like events_mirror's, on their own column
};

// What one round did.
struct partition_round {
  std::vector<std::string> created, dropped;
  std::vector<std::string> failed;  // tables whose maintenance failed (each counted, the others went on)
  uint64_t rows_moved = 0, rows_dropped = 0, keys_pruned = 0;
  uint32_t key_sweeps = 0;  // key tables read through to prune them
};

// What a maintainer remembers between rounds of each key table: the time of
// the oldest key its last sweep left (µs since the epoch, lowered by
// key_sweep_margin_s), below which no key stored since can be. A round
// sweeps a key table only once the cutoff has passed that time, which is
// after a partition drop, not every round. Without a memo (migrate, tests),
// every round sweeps.
struct key_sweep_memo {
  std::map<std::string, int64_t> oldest_left_us;  // by key table, as written in statements
  const std::atomic<bool>* stop = nullptr;        // set: a sweep ends between two statements
};
// A key committed after a sweep started carries its transaction's start
// time; the sweep takes the oldest open transaction's start (as far as
// pg_stat_activity shows it to evpipe's role), and at least this much
// before its own start, as the least time such a key can have.
inline constexpr int64_t key_sweep_margin_s = 600;

// Whether `table` (as written, e.g. "ingest.events_mirror") is a partitioned
// table; false when it is a plain one or does not exist.
[[nodiscard]] bool is_partitioned(pg_connection& conn, const std::string& table);

// `evpipe migrate`, before schemas/events.sql: with a partition unit
// ("day", ...), creates events_mirror and dlq_events partitioned (with their
// DEFAULT partitions) when they do not exist, and the key tables whenever
// they are partitioned. A plain table that exists is left alone: "" when it
// can stay (unit "none"), else the error pointing to the conversion steps.
[[nodiscard]] std::string prepare_partitioned_tables(pg_connection& conn, const std::string& schema,
                                                     const std::string& unit);

// The first [begin, end) of the period holding `t` (seconds since the epoch, UTC).
struct period {
  int64_t begin = 0, end = 0;
};
[[nodiscard]] period period_of(const std::string& unit, int64_t t);

class partition_maintainer {
 public:
  explicit partition_maintainer(partition_options options);
  ~partition_maintainer();
  partition_maintainer(const partition_maintainer&) = delete;
  partition_maintainer& operator=(const partition_maintainer&) = delete;

  void start();
  void stop();

  // One round: for each partitioned table (events_mirror, dlq_events, the
  // route tables), a DEFAULT partition if it has none; the partitions of the
  // current period and `premake` more; partitions for the periods of rows
  // found in the DEFAULT partition (moving them); with a retention, the drop
  // of every partition whose range ended more than retention_s ago and the
  // pruning of keys older than every row. Needs lock_timeout set by the
  // caller when it matters. Counted in partition_probe by table; an error
  // ends that table's part of the round (the others still run, but for a
  // lost connection), and the first one is returned.
  [[nodiscard]] static pg_status maintain_once(pg_connection& conn, const partition_options& options,
                                               partition_round& done, key_sweep_memo* memo = nullptr);

 private:
  void run();
  bool pause(uint32_t ms);

  partition_options options_;
  key_sweep_memo memo_;  // the maintenance thread's
  std::atomic<bool> stop_requested_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace evpipe::io
