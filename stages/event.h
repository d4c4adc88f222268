#pragma once
// The currency of the pipeline: an event_batch is what a source hands to a
// shard, a batch of events from one origin (one TCP connection, later one MQTT
// session or HTTP request) whose bytes live once, in the batch's arena.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "stages/timeline.h"

namespace evpipe::stages {

namespace route {
class route_set;
}

// Why an event was dead-lettered. The codes are stable: they are stored in
// dlq_events.reason_code and used as the `reason` metric label.
enum class reason : uint8_t {
  none = 0,                 // valid
  invalid_json,             // not JSON, not an object, or not storable as JSONB
  missing_field,            // a required envelope field is absent
  invalid_trace_id,         // not a UUID PostgreSQL accepts
  invalid_ts,               // not an RFC 3339 / ISO 8601 date-time
  invalid_kind,             // not a non-empty string
  invalid_idempotency_key,  // not a non-empty string within the length limit
  invalid_payload,          // not an object
  invalid_topic,            // `topic` field present but not a usable string
  too_large,                // event over the size limit
  db_rejected,              // passed validation, but PostgreSQL refused the row (SQLSTATE in the message)
  retries_exhausted,        // not committed within [postgres] max_attempts
  route_mismatch,           // a route took it, but a column is missing, of the wrong type or out of range
  schema_violation,         // the payload fails its kind's JSON Schema (pointer and keyword in the message; docs/schemas.md)
  unknown_schema_version,   // the kind has versioned schemas, none for this event's version (when so configured)
  tenant_mismatch,          // claims another tenant than its source's credentials, or one its source does not allow (docs/tenants.md)
  invalid_tenant,           // its tenant field is not a tenant name (a string of 1 to 64 of A-Z a-z 0-9 . _ : -)
  max_deliveries,           // the broker delivered it more than the source's max_deliveries times (NATS JetStream)
};
inline constexpr int reason_count = 18;

[[nodiscard]] std::string_view reason_code(reason r) noexcept;

// What finally happened to one event; reported to its origin after commit.
enum class outcome_kind : uint8_t {
  mirrored,       // row committed in events_mirror
  duplicate,      // its key was already committed (or commits in the same batch)
  dead_lettered,  // row committed in dlq_events
  skipped,        // blank line: nothing to store
};

struct outcome {
  uint64_t seq;  // the event's position at its origin, from 1
  outcome_kind kind;
  reason why;
};

// Where events come from and where their outcomes go. Implemented by sources
// (a TCP connection, ...). on_outcomes is called from shard threads, after the
// outcomes are durable; implementations hand the work to their own thread.
class event_origin {
 public:
  virtual ~event_origin() = default;
  virtual void on_outcomes(std::span<const outcome> outcomes) = 0;
  // The same, with the timeline of the write batch up to ack_posted. An
  // origin that stamps when its ack leaves (a TCP connection) keeps a copy,
  // finishes it on its own thread (pipeline/batch_trace.h) and returns true;
  // the default hands the outcomes on and returns false: the shard then
  // judges the timeline as it stands.
  virtual bool on_outcomes_timed(std::span<const outcome> outcomes, const batch_timeline& timeline) {
    (void)timeline;
    on_outcomes(outcomes);
    return false;
  }
  // `evpipe dlq requeue` (docs/read.md): each event's seq is the id of the
  // dlq_events row it was read from, and the sink deletes that row in the
  // transaction that commits the event's new outcome.
  [[nodiscard]] virtual bool requeued_dead_letters() const noexcept { return false; }
};

// A slice of the batch arena.
struct span_ref {
  uint32_t off = 0;
  uint32_t len = 0;
};

// One event inside an event_batch. Views are offsets into the batch's arena so
// the record stays valid when the batch moves between threads.
struct event_record {
  span_ref raw;       // the line as received (trimmed of the line break)
  span_ref key;       // unescaped idempotency_key (valid events only)
  span_ref topic;     // effective topic
  span_ref kind;      // unescaped kind (valid events only)
  span_ref message;   // human reason (invalid events only)
  uint64_t seq = 0;
  uint64_t key_hash_lo = 0;  // XXH3-128 of the key: routing and dedup
  uint64_t key_hash_hi = 0;
  // Nonzero: picks the shard instead of key_hash_lo. Set for messages an
  // upsert route takes, from its key columns, so that one key's rows are
  // written by one shard (no two shards wait on each other's row locks).
  uint64_t shard_hash = 0;
  uint64_t digest_lo = 0;    // invalid events: XXH3-128 of the whole line, the
  uint64_t digest_hi = 0;    // identity of a dead letter when it is resent
  int64_t received_ns = 0;   // steady clock, for receive-to-commit latency
  // Routes that took the event (docs/routes.md): per route with a table,
  // [u16 route index][u32 length][binary COPY tuple], extracted at intake.
  span_ref routed;
  // Transport headers kept with the event (docs/mqtt.md: an MQTT 5 message's
  // content type and user properties) as a JSON object; empty: none, stored
  // as NULL in the headers column.
  span_ref headers;
  // The event's tenant (docs/tenants.md): empty when tenancy is off or none
  // is known. Its key and digest hashes are seeded with it, so that the same
  // key from two tenants is two events (tenant_hash_seed in stages/dedup.h).
  span_ref tenant;
  reason why = reason::none;
  bool skip_mirror = false;  // taken by routes, none of which keeps the events_mirror row
  bool bare = false;         // taken by an envelope "none" route: `key` is the route's identity, not an idempotency_key
  bool blank = false;        // empty line: counted and acked, nothing stored
  bool raw_truncated = false;  // too_large: raw holds only a prefix
};

struct event_batch {
  std::shared_ptr<event_origin> origin;
  std::string arena;
  std::vector<event_record> events;
  // The routes its events were matched against (set by intake when an event
  // has routed rows or is bare): `routed` tuples name routes of this set,
  // which a reload may have replaced since (stages/route/active.h).
  std::shared_ptr<const route::route_set> routes;
  // Steady-clock ns when it was pushed to its shard's queue (shard::push).
  int64_t queued_ns = 0;

  [[nodiscard]] std::string_view view(span_ref s) const noexcept {
    return std::string_view(arena).substr(s.off, s.len);
  }
  span_ref append(std::string_view bytes) {
    span_ref s{static_cast<uint32_t>(arena.size()), static_cast<uint32_t>(bytes.size())};
    arena.append(bytes);
    return s;
  }
  void clear() {
    origin.reset();
    routes.reset();
    arena.clear();
    events.clear();
    queued_ns = 0;
  }
};

}  // namespace evpipe::stages
