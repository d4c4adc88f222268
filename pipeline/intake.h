#pragma once
// Intake: how every source turns the bytes of one event into an event record
// in the batch of the shard that owns it. Validates the envelope, picks the
// topic (the event's own `topic` field, else the source's), hashes the key and
// routes by it, and copies the bytes once into that batch's arena.
//
// Owned by one source connection; not thread-safe. A source adds the events of
// one read, then hands batches() to router::submit.

#include <cstdint>
#include <string_view>
#include <vector>

#include "stages/event.h"
#include "stages/validate.h"

namespace evpipe::stages::route {
class route_set;
}

namespace evpipe::pipeline {

// Steady-clock nanoseconds: when an event was received (latency metrics).
[[nodiscard]] int64_t steady_now_ns() noexcept;

// This thread's validator for `limits`: sources validate on their I/O
// threads, and a simdjson parser keeps its buffers warm between reads.
[[nodiscard]] stages::envelope_validator& thread_validator(const stages::envelope_limits& limits);

// The shard an event belongs to: by its key hash, so that two copies of one
// key always meet in one dedup window; events without a key by position.
// Messages of an upsert route go by the route's key (event_record::shard_hash):
// two copies of one message have one key there too when the route needs no
// evpipe_route_keys row (compiled_route::self_idempotent); otherwise that
// table settles copies that meet in two shards.
[[nodiscard]] inline size_t shard_for(const stages::event_record& ev, size_t shards) noexcept {
  uint64_t h = (ev.why == stages::reason::none && !ev.blank) ? (ev.shard_hash ? ev.shard_hash : ev.key_hash_lo) : ev.seq;
  return h % shards;
}

// The [events] limits in force, process-wide. `evpipe run` publishes them at
// start and a reload (SIGHUP) publishes changed ones; every source connection
// looks once per read (limits_follower) and takes them between two reads, so
// a new limit applies to the next events of every open connection and no
// connection is closed for it. Any thread.
void publish_event_limits(const stages::envelope_limits& limits);
// Follows the published limits for one connection. Owned by it; not
// thread-safe. Costs one relaxed atomic load per read while nothing changes.
class limits_follower {
 public:
  // True, with `limits` replaced by the published ones, when they were
  // published after this follower last looked (the first look takes them
  // if any were ever published; before that, `limits` stays as constructed).
  [[nodiscard]] bool changed(stages::envelope_limits& limits);

 private:
  uint64_t seen_ = 0;
};

// Which topic an event is stored under.
enum class topic_rule : uint8_t {
  event_first,   // the event's own `topic` field, else the source's (TCP, HTTP without X-Topic)
  source_only,   // the source's: the MQTT topic, an HTTP X-Topic header
};

class intake {
 public:
  // How much of an event over the size limit is kept (dlq_events.raw).
  static constexpr size_t too_large_prefix = 4096;

  intake(size_t shards, stages::envelope_limits limits);

  // One event's bytes; `readable` bytes from line.data() may be read (the
  // validator's padding). `validator` belongs to the calling thread. An event
  // over the size limit is dead-lettered as too_large with its first bytes.
  // `headers`: the transport's headers as a JSON object (an MQTT 5 message's
  // content type and user properties), kept with the event; empty: none.
  void add(std::string_view line, size_t readable, uint64_t seq, int64_t received_ns, std::string_view default_topic,
           stages::envelope_validator& validator, topic_rule rule = topic_rule::event_first,
           std::string_view headers = {});
  // An event over the size limit whose whole bytes were never held at once
  // (streamed past): its first bytes and the digest of all of them.
  void add_too_large(std::string_view prefix, size_t full_size, uint64_t digest_lo, uint64_t digest_hi, uint64_t seq,
                     int64_t received_ns, std::string_view default_topic);
  // An event dead-lettered as `why` without being looked at (a broker message
  // delivered more than max_deliveries times: whatever it does to the process
  // must not happen again). Its bytes are kept (a prefix when over the size
  // limit) with their digest, so a redelivery meets its dlq_events row.
  void add_unprocessed(std::string_view bytes, stages::reason why, std::string_view message, uint64_t seq,
                       int64_t received_ns, std::string_view topic);

  // From the next add() on (a reload changed [events]; limits_follower).
  void set_limits(const stages::envelope_limits& limits) noexcept { limits_ = limits; }
  // Reserves room for about `bytes` of events in every shard's batch.
  void reserve(size_t bytes);
  [[nodiscard]] std::vector<stages::event_batch>& batches() noexcept { return out_; }
  [[nodiscard]] size_t pending() const noexcept { return pending_; }
  void submitted() noexcept { pending_ = 0; }

 private:
  stages::event_batch& batch_of(const stages::event_record& rec) { return out_[shard_for(rec, out_.size())]; }
  // The topic as the topic column can hold it: whole UTF-8 characters.
  [[nodiscard]] std::string_view column_topic(std::string_view topic) const noexcept;

  // Matches a valid message against the routes and extracts its rows into
  // routed_ (and a bare message's identity into identity_). False when no
  // route takes it; a column that does not fit turns `v` into route_mismatch.
  bool apply_routes(std::string_view line, std::string_view topic, std::string_view kind, bool bare,
                    stages::envelope_validator& validator, stages::validation& v);

  // The shard_hash of the message apply_routes took last (0: no upsert route).
  [[nodiscard]] uint64_t shard_hash_of_upsert_key() const noexcept;

  stages::envelope_limits limits_;
  std::vector<stages::event_batch> out_;  // one per shard
  size_t pending_ = 0;
  const stages::route::route_set* routes_;  // stages::route::active_routes() (nullptr: no routes)
  std::string routed_, identity_;           // scratch of apply_routes, reused
  std::string upsert_key_;                  // the first upsert route's key fields (shard_hash), reused
  std::string_view first_route_;            // name of the first route that took the message
  bool skip_mirror_ = false;
};

}  // namespace evpipe::pipeline
