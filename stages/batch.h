#pragma once
// Batch stage: what one shard writes to the database in one transaction.
//
// Valid, first-seen events become rows already encoded as PostgreSQL binary
// COPY tuples for events_mirror(topic, payload), so the sink streams the
// buffer as is. Dead letters and duplicates ride along so that every event's
// outcome is released together, after the transaction commits.
//
// Owned by one shard thread; not thread-safe. Reused across flushes (clear()
// keeps the buffers' capacity, so steady state allocates nothing per event).

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "stages/event.h"

namespace evpipe::stages {

// One dead-lettered event, as dlq_events stores it.
struct dead_letter {
  std::string topic;
  reason why = reason::none;
  std::string message;
  std::string bytes;          // the event as received (a prefix when truncated)
  bool bytes_are_json = false;  // store in `payload` (jsonb) rather than `raw` (bytea)
  bool truncated = false;
  // Identity of the event (XXH3-128 of all its bytes, big-endian): dlq_events
  // keeps one row per (topic, digest), so a resent bad event is stored once.
  std::string digest;
  std::string sqlstate;       // db_rejected: what PostgreSQL said
  std::string headers;        // the event's transport headers (JSON object), empty: none (NULL)
  std::string tenant;         // dlq_events.tenant_id (docs/tenants.md); empty: none
  uint32_t outcome_index = 0;
  // Set by the sink when the INSERT stored no row because dlq_events already
  // held this (topic, digest): a resend, counted apart from new dead letters.
  bool already_stored = false;
};

// Builds the DLQ record of an invalid event (the DLQ routing rule): the event
// goes to `payload` as JSONB when it is valid JSON, else to `raw` as bytes.
[[nodiscard]] dead_letter route_dead_letter(const event_batch& from, const event_record& ev);

class write_batch {
 public:
  // Per-event bookkeeping, in arrival order.
  struct pending {
    uint32_t origin = 0;  // index into origins()
    uint64_t seq = 0;
    outcome_kind kind = outcome_kind::mirrored;
    reason why = reason::none;
    int64_t received_ns = 0;
  };
  // Per-row data needed after the write: the key to resolve conflicts and
  // the labels for the ingest counters.
  struct row {
    span_ref key, topic, kind;
    uint32_t outcome_index = 0;
    uint32_t copy_off = 0;   // its tuple in the COPY stream
    uint32_t copy_len = 0;
    uint32_t payload_off = 0;  // the event's bytes inside that tuple
    uint32_t payload_len = 0;
    span_ref headers;  // in meta_: for its dead letter if the database refuses it
    span_ref tenant;   // in meta_: the (tenant, key) the unique index holds
    bool identity_key = false;  // a bare message's row: `key` is a route identity (see identity_row_count)
  };

  write_batch();

  // Room for a batch of `rows` events and `copy_bytes` of COPY data, so that
  // the COPY stream and the row tables of a batch within those limits are not
  // grown by doubling (each doubling a copy into new memory, whose every page
  // is a fault on a fresh process). Only address space: pages are touched as
  // rows fill them. Never shrinks. A routed row keeps its whole message (for
  // its dead letter) beside its key: `copy_bytes` of that room too, and of
  // each route's stream when the route first has a row; dead letters and
  // long keys or headers still grow their own buffers.
  void reserve(size_t rows, size_t copy_bytes);

  // Registers the origin of the events that follow (consecutive events from
  // one origin share one entry).
  void begin_origin(const std::shared_ptr<event_origin>& origin);

  // `headers`: the event's transport headers as a JSON object, or empty.
  // identity_key: a bare message's (envelope "none") row, whose key is its
  // route identity; events_mirror holds NULL as its idempotency_key.
  // `tenant`: the event's tenant (docs/tenants.md), or empty.
  void add_row(std::string_view topic, std::string_view payload, std::string_view key,
               std::string_view kind, uint64_t seq, int64_t received_ns, std::string_view headers = {},
               bool identity_key = false, std::string_view tenant = {});
  // An event that routes took (event_record::routed): its tuples go to the
  // streams of their routes, and with `mirror` its events_mirror row too.
  void add_routed(std::string_view routed, bool mirror, std::string_view topic, std::string_view payload,
                  std::string_view key, std::string_view kind, uint64_t seq, int64_t received_ns,
                  std::string_view headers = {}, bool identity_key = false, std::string_view tenant = {});
  void add_dead_letter(dead_letter dl, uint64_t seq, int64_t received_ns);
  void add_duplicate(uint64_t seq, int64_t received_ns);
  void add_skipped(uint64_t seq, int64_t received_ns);

  // The COPY stream: header, rows, trailer. Valid until the next add/clear.
  [[nodiscard]] std::string_view copy_data();
  // The COPY stream of the rows [first, last) still to be stored (not
  // duplicates, not refused): header, tuples, trailer.
  void copy_stored_slice(size_t first, size_t last, std::string& out) const;

  // events_mirror rows of bare messages (a route with mirror = true): their
  // idempotency_key column is NULL, so evpipe_route_keys settles them.
  [[nodiscard]] size_t identity_row_count() const noexcept { return identity_rows_; }

  [[nodiscard]] size_t row_count() const noexcept { return rows_.size(); }
  // Whether the tuples carry a third field, headers (jsonb or NULL): only
  // once some row of the batch has headers, so that batches without any
  // (every TCP and HTTP event, most MQTT ones) stay (topic, payload) tuples,
  // byte for byte as before, and need no headers column in the database.
  [[nodiscard]] bool has_headers() const noexcept { return fields_ >= 3; }
  // Whether the tuples carry a fourth field, tenant_id (after headers, NULL
  // when absent): only once some row of the batch has a tenant, so that
  // batches with tenancy off stay as before.
  [[nodiscard]] bool has_tenant() const noexcept { return fields_ == 4; }
  // A routed tuple's header ([u16][u32 length], written by pipeline/intake):
  // the route's index in the low 15 bits; the top bit set when the message's
  // identity is not the route's own (another route of an `also` chain names
  // the identity columns): such a row cannot skip its evpipe_route_keys row
  // (a self-idempotent upsert or a table-keyed append).
  static constexpr uint16_t foreign_identity_bit = 0x8000;
  // Rows of routed tables (docs/routes.md), in arrival order per route.
  struct routed_row {
    uint16_t route = 0;
    uint32_t outcome_index = 0;
    uint32_t copy_off = 0;  // the tuple in its route's stream
    uint32_t copy_len = 0;
    span_ref topic, payload;  // in meta_: for its dead letter if the database refuses it
    span_ref key;             // in meta_: the dedup key, forgotten when the row is not stored
    span_ref kind;            // in meta_: the metrics' kind label (a bare message's: its first route's name)
    span_ref headers;         // in meta_: the event's transport headers, for its dead letter
    span_ref tenant;          // in meta_: the event's tenant, for its dead letter
    bool counts_event = false;  // the event's first row, and it has no events_mirror row: counts in ingest_total
    bool foreign_identity = false;  // the message's identity is another route's (foreign_identity_bit)
  };
  [[nodiscard]] size_t routed_row_count() const noexcept { return routed_.size(); }
  [[nodiscard]] const std::vector<routed_row>& routed_rows() const noexcept { return routed_; }
  // Routes with rows in this batch have a stream: header + tuples.
  [[nodiscard]] size_t route_stream_count() const noexcept { return route_copy_.size(); }
  // The COPY stream of route r's rows whose event is in [first_outcome,
  // last_outcome) (all: 0, SIZE_MAX); empty when it has none. Returns how
  // many tuples it holds.
  size_t route_copy_slice(size_t route, size_t first_outcome, size_t last_outcome, std::string& out) const;
  // The same stream as pieces to send in order (header, tuples, trailer):
  // views of the route's own stream when every one of its rows is wanted (the
  // usual case: nothing is copied), else one piece, the slice built in
  // `scratch`. Empty when it has no row. Valid until the next add/clear, or
  // the next use of `scratch`.
  struct copy_pieces {
    std::array<std::string_view, 3> part{};
    size_t count = 0;   // parts in use
    size_t tuples = 0;  // rows in the stream
    [[nodiscard]] std::span<const std::string_view> parts() const noexcept { return {part.data(), count}; }
  };
  [[nodiscard]] copy_pieces route_copy(size_t route, size_t first_outcome, size_t last_outcome,
                                       std::string& scratch) const;
  // Turns the event at `outcome_index`, whose routed rows the database
  // refused, into a db_rejected dead letter.
  void reject_routed(uint32_t outcome_index, std::string sqlstate, std::string message);
  // Marks the event at `outcome_index` as already stored (its routed rows are not written).
  void mark_event_duplicate(uint32_t outcome_index) { pending_[outcome_index].kind = outcome_kind::duplicate; }
  // The routes the routed rows were taken with (their route indices are
  // this set's; null: none). A shard never mixes two sets in one batch.
  void set_routes(std::shared_ptr<const route::route_set> routes) noexcept { routes_ = std::move(routes); }
  [[nodiscard]] const std::shared_ptr<const route::route_set>& routes() const noexcept { return routes_; }
  [[nodiscard]] size_t event_count() const noexcept { return pending_.size(); }
  [[nodiscard]] size_t byte_count() const noexcept { return copy_.size() + routed_bytes_; }
  [[nodiscard]] bool empty() const noexcept { return pending_.empty(); }

  [[nodiscard]] const std::vector<row>& rows() const noexcept { return rows_; }
  [[nodiscard]] std::string_view text(span_ref s) const noexcept {
    return std::string_view(meta_).substr(s.off, s.len);
  }
  [[nodiscard]] std::vector<dead_letter>& dead_letters() noexcept { return dead_; }
  [[nodiscard]] std::vector<pending>& outcomes() noexcept { return pending_; }
  [[nodiscard]] const std::vector<std::shared_ptr<event_origin>>& origins() const noexcept {
    return origins_;
  }
  // Marks row i as a duplicate found by the database (it was not inserted).
  void mark_row_duplicate(size_t i) { pending_[rows_[i].outcome_index].kind = outcome_kind::duplicate; }
  // Turns row i, which the database refused, into a dead letter
  // (reason db_rejected) that will be written with the batch's others.
  void reject_row(size_t i, std::string sqlstate, std::string message, bool payload_is_storable_json);
  // Gives up on every row (events_mirror and routed): each event becomes a
  // dead letter with `why` and `message`, and the batch holds no rows any
  // more (only dead letters).
  void dead_letter_all_rows(reason why, const std::string& message);
  // The COPY stream of rows [first, last) alone: header, tuples, trailer.
  void copy_slice(size_t first, size_t last, std::string& out) const;
  [[nodiscard]] std::string_view row_payload(size_t i) const {
    return std::string_view(copy_).substr(rows_[i].payload_off, rows_[i].payload_len);
  }

  // When the first event of this batch arrived (steady clock), for linger.
  [[nodiscard]] std::chrono::steady_clock::time_point opened_at() const noexcept { return opened_; }

  // Where this batch has been so far (stages/timeline.h): the shard and the
  // sink stamp it; cleared with the batch.
  [[nodiscard]] batch_timeline& timeline() noexcept { return timeline_; }
  [[nodiscard]] const batch_timeline& timeline() const noexcept { return timeline_; }

  void clear();

 private:
  void note_open();
  // Rewrites the tuples so far to `fields` fields: (topic, payload) gains a
  // NULL headers, and (.., headers) an empty tenant_id: a batch's tuples all
  // have one shape. Twice per batch at most.
  void widen_to(uint16_t fields);
  span_ref keep(std::string_view s);

  std::string copy_;  // binary COPY header + tuples (trailer added by copy_data)
  std::string widen_scratch_;  // the buffer widen_to builds into (then copy_'s old one)
  bool sealed_ = false;
  uint16_t fields_ = 2;  // of every tuple: 2 (topic, payload), 3 (+ headers), 4 (+ tenant_id)
  std::string meta_;  // keys, topics, kinds of rows
  std::vector<row> rows_;
  std::vector<dead_letter> dead_;
  std::vector<pending> pending_;
  std::vector<std::shared_ptr<event_origin>> origins_;
  std::chrono::steady_clock::time_point opened_{};
  batch_timeline timeline_;
  std::vector<routed_row> routed_;
  std::vector<std::string> route_copy_;  // per route: tuples (no header, no trailer)
  size_t routed_bytes_ = 0;
  size_t identity_rows_ = 0;
  size_t reserved_rows_ = 0, reserved_bytes_ = 0;  // reserve()'s, for a route's first stream
  size_t streams_reserved_ = 0;  // room the routes' streams have (their sum stays within reserved_bytes_)
  std::shared_ptr<const route::route_set> routes_;
};

// Binary COPY framing, exposed for tests and benchmarks.
namespace copy_format {
inline constexpr std::string_view header{"PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0", 19};
inline constexpr std::string_view trailer{"\377\377", 2};
// Appends one (topic varchar, payload jsonb) tuple.
void append_event_row(std::string& out, std::string_view topic, std::string_view payload);
// Appends one (topic varchar, payload jsonb, headers jsonb) tuple; empty
// headers are NULL.
void append_event_row_with_headers(std::string& out, std::string_view topic, std::string_view payload,
                                   std::string_view headers);
// Appends one (topic, payload, headers, tenant_id text) tuple.
void append_event_row_with_tenant(std::string& out, std::string_view topic, std::string_view payload,
                                  std::string_view headers, std::string_view tenant);
}  // namespace copy_format

}  // namespace evpipe::stages
