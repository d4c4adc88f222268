#pragma once
// The SQL that `evpipe migrate` applies, compiled in from schemas/*.sql so the
// binary and its schema never drift apart.

#include <string_view>

namespace evpipe::schemas {

// events.sql: events_mirror and dlq_events (tables and columns). Idempotent.
[[nodiscard]] std::string_view events_ddl() noexcept;

// Table names the pipeline writes to.
inline constexpr std::string_view mirror_table = "events_mirror";
inline constexpr std::string_view dlq_table = "dlq_events";

// An index evpipe's tables need. `evpipe migrate` builds the missing ones
// after events.sql, outside its transaction so that a table holding rows gets
// CREATE INDEX CONCURRENTLY (writers keep going). A unique index is what the
// writers' ON CONFLICT clauses infer: any valid, immediate, non-partial
// unique index whose key columns are exactly `keys` will do, whatever its
// name (e.g. after an online index swap), and `evpipe run` refuses to start
// without one. The others are found by name.
struct index_spec {
  std::string_view table;
  std::string_view name;  // used when evpipe builds it
  std::string_view keys;  // the column list (or expression) in parentheses
  bool unique = false;
  // A unique index this one supersedes: the key columns of one that `evpipe
  // migrate` drops once this one is built (the swap; docs/tenants.md).
  std::string_view replaces = {};
};
inline constexpr index_spec indexes[] = {
    // The idempotency backstop: one row per key and tenant, across restarts of
    // evpipe (docs/tenants.md); supersedes the unique index on the key alone.
    // The key leads: a new row's entry then goes where its key alone would,
    // and the tenant is compared only between equal keys. Led by the tenant,
    // the index takes each row in one of as many places as there are tenants
    // and compares tenant names at every level (docs/performance-tenants.md).
    // Any order is accepted on an existing table.
    {mirror_table, "events_mirror_tenant_idempotency_key_key", "idempotency_key, tenant_id", true, "idempotency_key"},
    {mirror_table, "idx_events_mirror_topic", "topic"},
    {mirror_table, "idx_events_mirror_trace_id", "trace_id"},
    {mirror_table, "idx_events_mirror_created_at", "created_at"},
    {mirror_table, "idx_events_mirror_kind", "(payload->>'kind')"},
    // Read positions: readers resume with (tx, id) > P in this order (docs/read.md).
    {mirror_table, "idx_events_mirror_tx_id", "tx, id"},
    // One dead letter per topic and event bytes, however often it is resent.
    {dlq_table, "dlq_events_topic_digest_key", "original_topic, event_digest", true},
    {dlq_table, "idx_dlq_events_created_at", "created_at"},
    {dlq_table, "idx_dlq_events_reason_code", "reason_code"},
};

}  // namespace evpipe::schemas
