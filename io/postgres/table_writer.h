#pragma once
// Writes the rows of routed tables (docs/routes.md) inside the transaction a
// postgres_sink opened for a shard's batch, so that routed rows, the
// events_mirror rows, the dead letters and the acknowledgements all follow
// one COMMIT.
//
// mode = "append": one binary COPY per route with rows in the batch, the
// tuples exactly as the route stage encoded them at intake.
//
// mode = "upsert": the rows are COPYed into a staging table made in the
// transaction (ON COMMIT DROP, like the sink's own), then
//   INSERT INTO t SELECT DISTINCT ON (key) ... ORDER BY key, order_by DESC
//   ON CONFLICT (key) DO UPDATE SET ... WHERE EXCLUDED.order_by > t.order_by
// so the newest message of the batch per key is the candidate, and it only
// replaces a row holding older state: devices send out of order and brokers
// redeliver, and state never moves backwards. Without order_by the last
// message to arrive wins (ctid order of the staging table, which only COPY
// wrote to). This is the SQL a user would write by hand, run per batch.
//
// Idempotency across restarts: evpipe_route_keys (one row per stored
// routed message) rather than a unique index the user's table must have.
// It works the same for every mode, for "digest" identities that are no
// column of the table, and for messages that feed several tables (also);
// the price is one 16-byte key per message, sent by one binary COPY per
// batch in the same transaction. Upsert routes whose rows a redelivery
// cannot change (compiled_route::self_idempotent) skip it. When the identity
// holds a time from the message (a timestamptz column), the key leads with
// it: keys of recent messages then sit next to each other at the index's
// right edge instead of all over it (docs/performance-routes.md).
//
// Built from the active routes by the sink; owned by one shard thread, not
// thread-safe.

#include <string>
#include <vector>

#include "io/postgres/pg_connection.h"
#include "stages/batch.h"
#include "stages/route/route_set.h"

namespace evpipe::io {

// The keys table, created by `evpipe migrate` when the config has routes
// (schemas/events.sql is for evpipe's tables every setup has). {} is the
// schema prefix ("" or "name.").
inline constexpr std::string_view route_keys_ddl =
    "CREATE TABLE IF NOT EXISTS {}evpipe_route_keys ("
    "key BYTEA PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL DEFAULT now())";

// The index the pruner (route_keys_pruner.h) finds the oldest keys by: a
// B-tree whose inserts land at its right edge (created_at is the writing
// transaction's now()), and whose equal values deduplicate.
inline constexpr std::string_view route_keys_created_at_index = "evpipe_route_keys_created_at";

// Creates evpipe_route_keys in `schema` ("" = search_path) and its
// created_at index (CONCURRENTLY when the table has rows, so a running
// evpipe keeps writing; an invalid one left by a failed build is built
// again); idempotent. "" or the error.
[[nodiscard]] std::string migrate_route_keys(pg_connection& conn, const std::string& schema);

class table_writer {
 public:
  // schema: where evpipe_route_keys and the routes' bare table names are
  // ("" = the search_path), as for the sink; "schema.table" stays as written.
  explicit table_writer(const stages::route::route_set& routes, const std::string& schema = "");

  // In an open transaction, before write(): records the identity of every
  // event in [first_outcome, last_outcome) whose rows only routed tables
  // hold, and of every bare message with an events_mirror row (mirror =
  // true; that row's idempotency_key is NULL), in evpipe_route_keys. Events
  // with an envelope's events_mirror row are settled by its idempotency_key
  // instead, and events whose routes are all self-idempotent (route_set.h)
  // need no key. Runs before the events_mirror COPY, which then leaves out
  // the events found to be duplicates.
  // Without tolerate_conflicts the keys go in by one binary COPY, which fails
  // with 23505 (pg_failure::duplicate_key) when a key is there already: the
  // caller then rolls back and runs the transaction again with
  // tolerate_conflicts, where an event whose identity is already there (a
  // redelivery after a restart) is marked duplicate, so write() leaves it out.
  [[nodiscard]] pg_status claim_keys(pg_connection& conn, stages::write_batch& batch, size_t first_outcome,
                                     size_t last_outcome, bool tolerate_conflicts = true);

  // In an open transaction: writes the routed rows of the events whose
  // outcome index is in [first_outcome, last_outcome) and that are still to
  // be stored (not refused, not duplicates). A table-keyed route's rows go
  // in by COPY, or with tolerate_conflicts through a staging table and
  // INSERT ... ON CONFLICT (identity) DO NOTHING.
  [[nodiscard]] pg_status write(pg_connection& conn, const stages::write_batch& batch, size_t first_outcome,
                                size_t last_outcome, bool tolerate_conflicts = true);

  // After the COMMIT of a transaction that ran write(): adds what that
  // write stored to the routes' counters (stages/route/probe.h).
  void committed();

  // On each new connection, before any write: finds the append routes whose
  // table has a unique index on exactly the route's idempotency columns
  // (each of them never NULL). Those routes are table-keyed: the table's
  // own index settles redeliveries, and their events need no row in
  // evpipe_route_keys.
  [[nodiscard]] pg_status inspect(pg_connection& conn);
  // The names of the table-keyed routes (after inspect).
  [[nodiscard]] std::vector<std::string> table_keyed_routes() const;

  // "COPY table (c1, c2, ...) FROM STDIN (FORMAT binary)" for route i.
  [[nodiscard]] const std::string& copy_sql(size_t route) const { return copy_sql_[route]; }

 private:
  const stages::route::route_set& routes_;
  // Per route: append: the COPY into the table. upsert: the staging table's
  // creation, the COPY into it, and the INSERT ... ON CONFLICT from it.
  std::vector<std::string> copy_sql_, stage_sql_, merge_sql_;
  std::vector<std::string> tables_;  // per route: its table as written in statements ("schema.table" when set)
  std::string claim_sql_, copy_keys_sql_;
  std::vector<char> needs_key_;    // per route: its events need a row in evpipe_route_keys
  // Per route: which of its identity's fields is a timestamptz from the
  // message (-1: none). Its keys then lead with that time (claim_keys).
  std::vector<int> time_field_;
  std::vector<char> table_keyed_;  // per route: the table's unique index settles redeliveries (inspect)
  // Per table-keyed candidate: the staging table, the COPY into it, the
  // INSERT ... ON CONFLICT (identity) DO NOTHING from it ("" otherwise).
  std::vector<std::string> keyed_stage_sql_, keyed_copy_sql_, keyed_merge_sql_;
  struct claim {
    uint32_t outcome;
    bool timed;       // the key is `at` then the hash (24 bytes), else the hash (16 bytes)
    uint64_t at;      // the identity's time, ordered as unsigned (sign bit flipped)
    uint64_t hi, lo;  // XXH3-128 of the event's identity
  };
  std::vector<claim> claimed_;
  struct written {
    uint64_t appended = 0, upserted = 0, skipped_older = 0;
  };
  std::vector<written> pending_;  // per route: what the last write() stored, counted at committed()
  std::string slice_, keys_param_, keys_copy_;
  std::vector<uint32_t> param_at_;  // where each claim's hex digits start in keys_param_
};

}  // namespace evpipe::io
