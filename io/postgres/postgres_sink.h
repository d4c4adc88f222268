#pragma once
// Where events are written: one shard's PostgreSQL connection.
//
// A batch commits in one transaction:
//   - fast path (no dead letters): a single binary COPY into events_mirror,
//     which is its own transaction — two round trips for the whole batch;
//   - with dead letters: BEGIN, COPY, then the dlq_events INSERTs and COMMIT
//     sent in libpq pipeline mode (COPY itself cannot run in a pipeline);
//   - when COPY meets a key the table already holds (unique violation, e.g.
//     after a restart emptied the dedup window): the batch is COPYed into a
//     temporary staging table created in the same transaction (ON COMMIT DROP)
//     and moved with INSERT ... ON CONFLICT DO NOTHING RETURNING, so the new
//     rows commit and the others are marked duplicates;
//   - when PostgreSQL refuses a row for its data (io::classify: SQLSTATE class
//     22, 23, 54 or P0: a CHECK constraint, a trigger, a value it cannot store): the batch is
//     bisected into ranges committed separately until the refused rows stand
//     alone; they become dead letters (db_rejected, with SQLSTATE and message)
//     and every other row commits. Other errors (connection, shutdown,
//     serialization, resources) are transient: the whole batch is retried.
//   - partitioned events_mirror / dlq_events (docs/partitions.md; found on
//     each connection): no unique index can hold the keys, so the batch is
//     BEGIN, a binary COPY of (tenant_id, idempotency_key) into
//     evpipe_mirror_keys, the COPY of the rows, COMMIT; a stored key fails
//     the first COPY with 23505 and the batch takes the staging path, whose
//     INSERT then claims keys in evpipe_mirror_keys first. Dead letters claim
//     theirs in evpipe_dlq_keys in the same statement;
//   - requeued dead letters (`evpipe dlq requeue`, an origin with
//     requeued_dead_letters()): every transaction above also deletes the
//     dlq_events rows of the events whose outcome it commits, before any new
//     dead letter is inserted (docs/read.md, "Requeue").
//
// No server state outlives a transaction (no session temp table, no named
// prepared statement), so a transaction-mode pooler may give each
// transaction a different server connection (docs/postgres.md).
//
// Owned by one shard thread; not thread-safe.

#include <array>
#include <functional>
#include <memory>
#include <string>

#include "io/postgres/pg_connection.h"
#include "io/postgres/table_writer.h"
#include "pipeline/sink.h"

namespace evpipe::io {

class postgres_sink final : public pipeline::batch_sink {
 public:
  // schema: where events_mirror and dlq_events are ("" = the connection's
  // search_path); a lowercase identifier (config checks it).
  postgres_sink(std::string dsn, std::string application_name, const std::string& schema = "");

  // Connects (also done lazily by write()); false with last_error() set.
  [[nodiscard]] bool connect();

  [[nodiscard]] pipeline::write_status write(stages::write_batch& batch) override;
  [[nodiscard]] bool ready() const override { return conn_.connected(); }
  [[nodiscard]] bool check() override;
  [[nodiscard]] std::string last_error() const override { return last_error_; }

 private:
  pipeline::write_status fail(const pg_status& st);
  [[nodiscard]] pg_status write_transaction(stages::write_batch& batch, bool resolve_conflicts);
  [[nodiscard]] pg_status insert_dead_letters(stages::write_batch& batch);
  // `evpipe dlq requeue`: deletes, in the open transaction, the dlq_events
  // rows of the requeued events whose outcome index `settles` (nothing for
  // a batch without requeued dead letters).
  [[nodiscard]] pg_status settle_requeued(stages::write_batch& batch, const std::function<bool(uint32_t)>& settles);
  [[nodiscard]] pg_status resolve_conflicts(stages::write_batch& batch, size_t first, size_t last,
                                            std::string_view copy_data);
  [[nodiscard]] pipeline::write_status isolate_refused_rows(stages::write_batch& batch);
  // isolate_refused_rows for a batch with routed rows: bisects over events,
  // each with its events_mirror row and its routed rows.
  [[nodiscard]] pipeline::write_status isolate_refused_events(stages::write_batch& batch);
  // After either isolation: the refused rows' dead letters, and every
  // requeued dead letter the isolation did not settle, in one transaction.
  [[nodiscard]] pipeline::write_status write_isolated_dead_letters(stages::write_batch& batch);

  std::string dsn_;
  std::string application_name_;
  [[nodiscard]] const char* copy_mirror_sql_of(const stages::write_batch& batch) const noexcept {
    return batch.has_tenant()    ? copy_mirror_tenant_sql_.c_str()
           : batch.has_headers() ? copy_mirror_headers_sql_.c_str()
                                 : copy_mirror_sql_.c_str();
  }
  std::string copy_mirror_sql_, move_stage_sql_, dlq_sql_;  // with the schema, if one is set
  std::string settle_requeued_sql_;
  // The same with the headers column, for batches (and dead letters) that
  // carry headers (write_batch::has_headers); the others never name it.
  std::string copy_mirror_headers_sql_, move_stage_headers_sql_, dlq_headers_sql_;
  // And with headers and tenant_id, for batches with a tenant (docs/tenants.md).
  std::string copy_mirror_tenant_sql_, move_stage_tenant_sql_, dlq_tenant_sql_;
  pg_connection conn_;
  std::string last_error_;
  std::string stored_slice_;  // the events_mirror rows still to store, when some were settled (reused)
  // The writer of the routed tables (docs/routes.md) for the batch being
  // written: that of the routes its rows were taken with
  // (write_batch::routes); null when it has none. A reload publishes new
  // routes while batches taken under the old ones are still queued: each
  // finishes with its own set's writer. The last two sets' writers are kept
  // (most recent first), as batches of both may alternate for a moment.
  [[nodiscard]] pg_status use_routes(const stages::write_batch& batch);
  struct route_tables {
    std::shared_ptr<const stages::route::route_set> routes;
    std::unique_ptr<table_writer> writer;
    bool inspected = false;  // table_writer::inspect ran on the current connection
  };
  std::array<route_tables, 2> known_tables_;
  // Partitioned events_mirror / dlq_events (docs/partitions.md), looked up on
  // each connection: their keys go to evpipe_mirror_keys / evpipe_dlq_keys in
  // the same transaction, as no unique index of theirs can hold them.
  bool keyed_mirror_ = false, keyed_dlq_ = false;
  // In the open transaction, or opening it first (begin) in the same query.
  [[nodiscard]] pg_status copy_mirror_keys(stages::write_batch& batch, bool begin);
  std::string copy_keys_sql_, begin_copy_keys_sql_, keys_copy_;
  std::string move_keyed_sql_, move_keyed_headers_sql_, move_keyed_tenant_sql_;
  std::string dlq_keyed_sql_, dlq_keyed_headers_sql_, dlq_keyed_tenant_sql_, settle_requeued_keyed_sql_;
  table_writer* tables_ = nullptr;
  std::string schema_;
};

}  // namespace evpipe::io
