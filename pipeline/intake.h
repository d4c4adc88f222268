#pragma once
// Intake: how every source turns the bytes of one event into an event record
// in the batch of the shard that owns it. Validates the envelope, picks the
// topic (the event's own `topic` field, else the source's), hashes the key and
// routes by it, and copies the bytes once into that batch's arena.
//
// Owned by one source connection; not thread-safe. A source adds the events of
// one read, then hands batches() to router::submit.

#include <cstdint>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <absl/container/flat_hash_map.h>

#include "pipeline/shard_lease.h"
#include "stages/event.h"
#include "stages/route/active.h"
#include "stages/validate.h"

namespace simdjson::dom {
class element;
}
namespace evpipe::stages::route {
class route_set;
}
namespace evpipe::stages::tenant {
class binding;
class quota_book;
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
  // Routes a reload published apply from the first add() after
  // submitted() on: from the next read.
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

  // route_by = "connection": every event added from now on goes to the
  // lease's shard, whatever its key; the intake holds the lease until
  // release_lease() or its end. Copies of one key sent on two connections then meet in two
  // shards; the unique index keeps one row (docs/operations.md, "Routing:
  // by key or by connection").
  static constexpr size_t unpinned = SIZE_MAX;
  void pin(shard_lease lease) noexcept {
    pinned_ = lease.shard() % out_.size();
    lease_ = std::move(lease);
  }
  [[nodiscard]] size_t pinned_shard() const noexcept { return pinned_; }
  // The connection has closed: its shard no longer counts it for the next
  // connections' choice. (The connection object, and so the intake, can
  // outlive its close while something still holds it; once, in a test, for
  // over 10 s.) Nothing is added after this.
  void release_lease() noexcept { lease_ = shard_lease(); }

  // From the next add() on (a reload changed [events]; limits_follower).
  void set_limits(const stages::envelope_limits& limits) noexcept { limits_ = limits; }
  // Reserves room for about `bytes` of events in every shard's batch (in
  // the pinned shard's only, when pinned).
  void reserve(size_t bytes);
  [[nodiscard]] std::vector<stages::event_batch>& batches() noexcept { return out_; }

  // Tenancy (docs/tenants.md): the source's binding, from the next add() on;
  // nullptr (the default) is tenancy off: no event has a tenant and nothing
  // is looked up.
  void set_tenancy(std::shared_ptr<const stages::tenant::binding> b) noexcept { tenancy_ = std::move(b); }
  // The tenant the connection authenticated as for the events added next
  // (an HTTP request's bearer token); empty: none.
  void set_credential(std::string_view tenant) { credential_.assign(tenant); }
  // How long (ns) the tenants of the events added since the last call are
  // over their quota (stages/tenant/quota.h), 0 when within; resets it. A
  // TCP or MQTT connection pauses that long before reading again.
  [[nodiscard]] int64_t take_throttle_ns() noexcept {
    int64_t t = throttle_ns_;
    throttle_ns_ = 0;
    return t;
  }
  // The tenant most over its quota among those events (for the metrics by
  // tenant); valid until the next add().
  [[nodiscard]] std::string_view throttled_tenant() const noexcept { return throttled_tenant_; }
  // An HTTP request whose tenants come from its events' claims (docs/tenants.md):
  // with this set, an event whose tenant was already over its quota before
  // the request (its earlier events do not count) is not charged, and
  // settle_request() says so.
  void set_refuse_over_quota(bool on) noexcept { refuse_over_quota_ = on; }
  // After a request's add()s: 0 when its events stand (their charges stay),
  // else how long (ns) the tenant that was over is still over; then the
  // request's events are taken back (the batches emptied, as if never
  // added) and its other charges refunded, so that a refused request costs
  // its tenants nothing and nothing of it is committed.
  [[nodiscard]] int64_t settle_request();
  [[nodiscard]] size_t pending() const noexcept { return pending_; }
  void submitted() noexcept { pending_ = 0; }
  // What a source does before router::submit(batches()): names `origin` (whose
  // on_outcomes() hears of them) on every batch that holds events added since
  // the last call, then starts counting anew (submitted()). Returns how many
  // events that was (0: nothing to submit).
  size_t hand_over(const std::shared_ptr<stages::event_origin>& origin) {
    const size_t taken = pending_;
    if (taken == 0) return 0;
    for (auto& b : out_) {
      if (!b.events.empty()) b.origin = origin;
    }
    pending_ = 0;
    return taken;
  }

 private:
  stages::event_batch& batch_of(const stages::event_record& rec) {
    return out_[pinned_ != unpinned ? pinned_ : shard_for(rec, out_.size())];
  }
  // The topic as the topic column can hold it: whole UTF-8 characters.
  [[nodiscard]] std::string_view column_topic(std::string_view topic) const noexcept;

  // Matches a valid message against the routes and extracts its rows into
  // routed_ (and a bare message's identity into identity_). False when no
  // route takes it; a column that does not fit turns `v` into route_mismatch.
  bool apply_routes(std::string_view line, std::string_view topic, std::string_view kind, bool bare,
                    stages::envelope_validator& validator, stages::validation& v);

  // The shard_hash of the message apply_routes took last (0: no upsert route).
  [[nodiscard]] uint64_t shard_hash_of_upsert_key() const noexcept;

  // Routes: followed between two reads (pending_ == 0, every batch handed
  // over), so that one batch holds events of one route set.
  void follow_routes();
  // The event's tenant (resolved against the binding) and its quota charge;
  // `v` becomes tenant_mismatch or invalid_tenant when the event's claim is refused.
  std::string_view tenant_of(std::string_view default_topic, const simdjson::dom::element* doc, int64_t received_ns,
                             stages::validation& v);

  stages::envelope_limits limits_;
  std::shared_ptr<const stages::tenant::binding> tenancy_;
  std::string credential_;
  int64_t throttle_ns_ = 0;
  std::string throttled_tenant_;
  bool refuse_over_quota_ = false;
  int64_t refused_ns_ = 0;
  // This request's charges (refuse_over_quota_ only): bucket, events.
  std::vector<std::pair<void*, uint32_t>> request_charges_;
  stages::validation scratch_validation_;  // tenant_of()'s verdict where the event is dead-lettered anyway
  std::string quota_tenant_;  // the tenant whose bucket quota_bucket_ is (a connection sees mostly one)
  // Buckets of quota_book_ this intake has looked up, by tenant: a connection
  // carrying many tenants takes no lock per event (the book's find() does).
  // Bounded: cleared past bucket_cache_max entries and when the book changes.
  absl::flat_hash_map<std::string, void*> bucket_cache_;
  static constexpr size_t bucket_cache_max = 4096;
  void* quota_bucket_ = nullptr;
  const stages::tenant::quota_book* quota_book_ = nullptr;
  std::vector<stages::event_batch> out_;  // one per shard
  size_t pinned_ = unpinned;              // pin()
  shard_lease lease_;                     // pin()
  size_t pending_ = 0;
  std::shared_ptr<const stages::route::route_set> routes_;  // the published routes (nullptr: none)
  stages::route::routes_follower routes_follower_;
  std::string routed_, identity_;           // scratch of apply_routes, reused
  std::string upsert_key_;                  // the first upsert route's key fields (shard_hash), reused
  std::string_view first_route_;            // name of the first route that took the message
  bool skip_mirror_ = false;
  // The routes' topic mask (route_set::topic_mask) of the source's topic of
  // the last event, and the set it is of: a TCP connection's events share
  // one topic, an MQTT subscription's often do, and then that topic is
  // matched against the routes' filters once, not twice per event. The mask
  // is made only when an event's topic is the one of the event before (a
  // topic that changes from event to event keeps the direct match, which
  // stops at the first route that takes it), and it serves apply_routes
  // only for that same topic.
  std::shared_ptr<const stages::route::route_set> mask_routes_;
  std::string mask_topic_;
  uint64_t mask_ = 0;
  bool mask_valid_ = false;
  [[nodiscard]] bool bare_topic(std::string_view default_topic);
  [[nodiscard]] const uint64_t* mask_of(std::string_view topic) const noexcept {
    return mask_valid_ && mask_routes_ == routes_ && topic == mask_topic_ ? &mask_ : nullptr;
  }
};

}  // namespace evpipe::pipeline
