#pragma once
// The statements postgres_sink uses on partitioned events_mirror and
// dlq_events (docs/partitions.md), whose keys live in evpipe_mirror_keys and
// evpipe_dlq_keys. `{}` stands for the schema prefix ("" or "name."), as in
// the sink's other statements.

#include <string>
#include <string_view>

namespace evpipe::io::partition_sql {

// Partitioned events_mirror (docs/partitions.md): the staged rows whose key
// evpipe_mirror_keys did not hold go in (one per key), and so do rows
// without a key (bare messages, settled by evpipe_route_keys); RETURNING
// says which, as the ON CONFLICT form does for a plain table.
inline std::string keyed_move_sql(std::string_view cols) {
  const std::string c(cols);
  return "WITH k AS (INSERT INTO {}evpipe_mirror_keys (tenant_id, idempotency_key) "
         "SELECT DISTINCT tenant_id, payload->>'idempotency_key' FROM pg_temp.evpipe_stage "
         "WHERE payload->>'idempotency_key' IS NOT NULL ON CONFLICT DO NOTHING RETURNING tenant_id, idempotency_key) "
         "INSERT INTO {}events_mirror (" + c + ") SELECT " + c +
         " FROM (SELECT DISTINCT ON (s.tenant_id, s.payload->>'idempotency_key') s.* FROM pg_temp.evpipe_stage s "
         "JOIN k ON k.tenant_id = s.tenant_id AND k.idempotency_key = s.payload->>'idempotency_key') f "
         "UNION ALL SELECT " + c + " FROM pg_temp.evpipe_stage WHERE payload->>'idempotency_key' IS NULL "
         "RETURNING tenant_id, idempotency_key";
}
// Partitioned dlq_events: a dead letter goes in only when its (topic, digest)
// enters evpipe_dlq_keys, so "INSERT 0 0" still means stored before.
inline std::string keyed_dlq_sql(bool headers, bool tenant) {
  return std::string("WITH k AS (INSERT INTO {}evpipe_dlq_keys (original_topic, event_digest) VALUES ($1, $6::bytea) "
                     "ON CONFLICT DO NOTHING RETURNING 1) "
                     "INSERT INTO {}dlq_events (original_topic, failure_reason, reason_code, payload, raw, event_digest") +
         (headers ? ", headers" : "") + (tenant ? ", tenant_id" : "") +
         ") SELECT $1, $2::text, $3::text, $4::jsonb, $5::bytea, $6::bytea" + (headers ? ", $7::jsonb" : "") +
         (tenant ? ", $8::text" : "") + " FROM k";
}
// Requeue on a partitioned dlq_events: the key leaves with its dead letter,
// so that the event may be dead-lettered again.
inline constexpr std::string_view settle_requeued_keyed_sql =
    "WITH d AS (DELETE FROM {}dlq_events WHERE id = ANY($1::bigint[]) RETURNING original_topic, event_digest) "
    "DELETE FROM {}evpipe_dlq_keys k USING d WHERE k.original_topic = d.original_topic "
    "AND k.event_digest = d.event_digest";

}  // namespace evpipe::io::partition_sql
