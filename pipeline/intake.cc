#include "pipeline/intake.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <memory>

#include <simdjson.h>

#include "stages/batch.h"
#include "stages/dedup.h"
#include "stages/published.h"
#include "stages/route/active.h"
#include "stages/route/extract.h"
#include "stages/schema/active.h"
#include "stages/tenant/binding.h"
#include "stages/tenant/quota.h"

namespace evpipe::pipeline {

namespace {
bool is_blank(std::string_view s) {
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\r') return false;
  }
  return true;
}
}  // namespace

int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

stages::envelope_validator& thread_validator(const stages::envelope_limits& limits) {
  thread_local std::unique_ptr<stages::envelope_validator> v;
  if (!v || v->limits().max_event_bytes != limits.max_event_bytes ||
      v->limits().max_key_bytes != limits.max_key_bytes || v->limits().max_depth != limits.max_depth) {
    v = std::make_unique<stages::envelope_validator>(limits);
  }
  return *v;
}

namespace {
stages::published<stages::envelope_limits> event_limits;
}  // namespace

void publish_event_limits(const stages::envelope_limits& limits) { event_limits.publish(limits); }

bool limits_follower::changed(stages::envelope_limits& limits) { return event_limits.take_if_newer(seen_, limits); }

intake::intake(size_t shards, stages::envelope_limits limits) : limits_(limits), out_(shards == 0 ? 1 : shards) {
  follow_routes();
}

void intake::follow_routes() {
  // Every batch is empty here (their events were handed over), so no batch
  // ever holds events matched against two route sets.
  (void)routes_follower_.changed(routes_);
}

bool intake::bare_topic(std::string_view default_topic) {
  if (!routes_) return false;
  if (!routes_->maskable()) return routes_->bare_route_for(default_topic) != nullptr;
  if (mask_routes_ != routes_ || default_topic != mask_topic_) {
    // A topic not met by the event before: matched directly, and kept. (The
    // set is taken only when it changed: no reference count per event.)
    if (mask_routes_ != routes_) mask_routes_ = routes_;
    mask_topic_.assign(default_topic);
    mask_valid_ = false;
    return routes_->bare_route_for(default_topic) != nullptr;
  }
  if (!mask_valid_) {
    mask_ = routes_->topic_mask(default_topic);
    mask_valid_ = true;
  }
  return routes_->bare_route_for(mask_) != nullptr;
}

bool intake::apply_routes(std::string_view line, std::string_view topic, std::string_view kind, bool bare,
                          stages::envelope_validator& validator, stages::validation& v) {
  std::array<uint16_t, stages::route::route_set::max_routes_per_message> ids;
  const uint64_t* mask = mask_of(topic);
  const size_t n = mask != nullptr ? routes_->match(*mask, kind, !bare, ids) : routes_->match(topic, kind, !bare, ids);
  routed_.clear();
  identity_.clear();
  upsert_key_.clear();
  if (n == 0) return false;
  first_route_ = routes_->at(ids[0]).cfg.name;
  bool mirror = false;
  // The wall clock, for received_at columns (received_ns is a steady clock).
  const int64_t now_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  const stages::route::message_view mv{line, topic, now_us, validator.marked_numbers()};
  stages::route::extract_error err;
  // Each table route's tuple header, and the route whose identity columns
  // the message's identity is (none: the digest of topic and bytes).
  std::array<std::pair<size_t, uint16_t>, stages::route::route_set::max_routes_per_message> headers;
  size_t tables = 0;
  int identity_route = -1;
  for (size_t i = 0; i < n; ++i) {
    const auto& r = routes_->at(ids[i]);
    mirror |= r.cfg.mirror;
    if (r.cfg.table.empty()) continue;  // a route that only mirrors
    // [u16 route][u32 length][tuple]: the header is filled in once the tuple is there.
    const size_t at = routed_.size();
    routed_.append(6, '\0');
    // A bare message's identity comes from the first route that names columns for it.
    std::string* id = bare && identity_.empty() && !r.identity_columns.empty() ? &identity_ : nullptr;
    if (id != nullptr) identity_route = r.index;
    if (stages::route::extract_row(r, validator.document(), mv, routed_, &err, id) != stages::route::extract_status::ok) {
      v.why = stages::reason::route_mismatch;
      v.message = std::move(err.message);
      r.counts->mismatched.fetch_add(1, std::memory_order_relaxed);
      routed_.clear();
      return true;
    }
    const uint32_t len = static_cast<uint32_t>(routed_.size() - at - 6);
    if (r.cfg.upsert && upsert_key_.empty()) {
      upsert_key_.assign(r.cfg.name);
      stages::route::append_fields(std::string_view(routed_).substr(at + 6, len), r.key_columns, upsert_key_);
    }
    routed_[at] = static_cast<char>(r.index >> 8);
    routed_[at + 1] = static_cast<char>(r.index);
    for (int k = 0; k < 4; ++k) routed_[at + 2 + k] = static_cast<char>(len >> (24 - 8 * k));
    headers[tables++] = {at, r.index};
  }
  // A route whose own identity the message does not have (an `also` chain
  // where another route names the identity columns) cannot tell a
  // redelivery by its table or by its upsert's order: its row keeps the key.
  if (bare && identity_route >= 0) {
    for (size_t h = 0; h < tables; ++h) {
      if (headers[h].second != identity_route) {
        routed_[headers[h].first] |= static_cast<char>(stages::write_batch::foreign_identity_bit >> 8);
      }
    }
  }
  skip_mirror_ = !mirror;
  if (bare && identity_.empty()) {
    // No idempotency columns: the topic and the bytes are the message's
    // identity (XXH3-128 of the bytes, seeded by the topic's). A redelivery
    // repeats both; two devices that send equal bytes on their own topics
    // (AutoCore's {"code":17} on autocore/<device>/system/error) are two
    // messages.
    const auto d = stages::hash_key(line.data(), line.size(), stages::hash_key(topic.data(), topic.size()).lo);
    identity_.assign(reinterpret_cast<const char*>(&d), sizeof d);
  }
  return true;
}

uint64_t intake::shard_hash_of_upsert_key() const noexcept {
  if (upsert_key_.empty()) return 0;
  uint64_t h = stages::hash_key(upsert_key_.data(), upsert_key_.size()).lo;
  return h ? h : 1;
}

std::string_view intake::tenant_of(std::string_view default_topic, const simdjson::dom::element* doc,
                                   int64_t received_ns, stages::validation& v) {
  auto r = stages::tenant::resolve(*tenancy_, credential_, default_topic, doc);
  if (v.ok() && !r.ok()) {
    v.why = r.why;
    v.message = std::move(r.message);
  }
  if (auto* book = stages::tenant::active_quotas(); book && !r.tenant.empty()) {
    if (book != quota_book_) {  // first use, or a reload published another book
      quota_book_ = book;
      bucket_cache_.clear();
      quota_tenant_.clear();
    }
    if (r.tenant != quota_tenant_) {
      auto it = bucket_cache_.find(absl::string_view(r.tenant.data(), r.tenant.size()));
      if (it == bucket_cache_.end()) {
        if (bucket_cache_.size() >= bucket_cache_max) bucket_cache_.clear();
        it = bucket_cache_.emplace(std::string(r.tenant), book->find(r.tenant)).first;
      }
      quota_tenant_.assign(r.tenant);
      quota_bucket_ = it->second;
    }
    if (quota_bucket_ && refuse_over_quota_) {
      auto& bucket = *static_cast<stages::tenant::quota_book::bucket*>(quota_bucket_);
      auto seen = std::find_if(request_charges_.begin(), request_charges_.end(),
                               [&](const auto& c) { return c.first == quota_bucket_; });
      if (seen == request_charges_.end()) {
        // First event of this tenant in the request: was it over already?
        if (int64_t over = stages::tenant::quota_book::over_ns(bucket, received_ns); over > 0) {
          if (over > refused_ns_) {
            refused_ns_ = over;
            throttled_tenant_.assign(r.tenant);
          }
          return r.tenant;
        }
        seen = request_charges_.emplace(request_charges_.end(), quota_bucket_, 0);
      }
      ++seen->second;
      (void)stages::tenant::quota_book::charge(bucket, 1, received_ns);
    } else if (quota_bucket_) {
      auto& bucket = *static_cast<stages::tenant::quota_book::bucket*>(quota_bucket_);
      if (int64_t over = stages::tenant::quota_book::charge(bucket, 1, received_ns); over > throttle_ns_) {
        throttle_ns_ = over;
        throttled_tenant_.assign(r.tenant);  // only while over the quota: not on the common path
      }
    }
  }
  return r.tenant;
}

int64_t intake::settle_request() {
  const int64_t refused = refused_ns_;
  if (refused > 0) {
    for (auto& b : out_) b.clear();
    pending_ = 0;
    for (const auto& [bucket, n] : request_charges_) {
      stages::tenant::quota_book::refund(*static_cast<stages::tenant::quota_book::bucket*>(bucket), n);
    }
  }
  refused_ns_ = 0;
  request_charges_.clear();
  return refused;
}

void intake::reserve(size_t bytes) {
  // A spare batch (router::submit) usually has room already; one that is
  // too small grows here once rather than by doubling while lines are added.
  const size_t arena = bytes + bytes / 4 + 1024, events = bytes / 128 + 16;
  for (size_t i = 0; i < out_.size(); ++i) {
    if (pinned_ != unpinned && i != pinned_) continue;  // fills no other batch
    auto& b = out_[i];
    if (b.arena.capacity() < arena) b.arena.reserve(arena);
    if (b.events.capacity() < events) b.events.reserve(events);
  }
}

void intake::add(std::string_view line, size_t readable, uint64_t seq, int64_t received_ns,
                 std::string_view default_topic, stages::envelope_validator& validator, topic_rule rule,
                 std::string_view headers) {
  // A UTF-8 byte order mark is no part of an event (RFC 8259 section 8.1 lets
  // a parser ignore one). Dropped here, it is dropped for every source: the
  // start of a TCP stream (or of each file cat'ed into one), an MQTT payload.
  if (line.starts_with("\xEF\xBB\xBF")) {
    line.remove_prefix(3);
    readable = readable >= 3 ? readable - 3 : 0;
  }
  if (line.size() > limits_.max_event_bytes) {
    auto d = stages::hash_key(line.data(), line.size());
    add_too_large(line.substr(0, too_large_prefix), line.size(), d.lo, d.hi, seq, received_ns, default_topic);
    return;
  }
  if (pending_ == 0) follow_routes();  // between two reads
  ++pending_;
  stages::event_record rec;
  rec.seq = seq;
  rec.received_ns = received_ns;
  if (is_blank(line)) {
    rec.blank = true;
    auto& b = batch_of(rec);
    rec.topic = b.append(default_topic);
    b.events.push_back(rec);
    return;
  }
  stages::envelope env;
  // A message on a topic whose first route takes bare JSON (envelope "none")
  // meets only the whole-document rules; its columns are checked by the route.
  const bool bare = bare_topic(default_topic);
  // Its numbers beyond 64-bit integers or a double are stored as they are
  // (jsonb holds them); only a column that needs one refuses it.
  auto v = bare ? validator.check_json(line, readable, true) : validator.check(line, readable, env);
  rec.why = v.why;
  std::string_view topic = default_topic;
  std::string message;
  if (rule == topic_rule::event_first && env.has_topic && !env.topic.empty() &&
      stages::fits_varchar(env.topic, limits_.max_topic_chars) && v.why != stages::reason::invalid_topic) {
    topic = env.topic;
  } else if (rule == topic_rule::source_only && !stages::fits_varchar(topic, limits_.max_topic_chars)) {
    // An MQTT topic can be longer than the topic column: dead-letter the event
    // under the topic's first characters rather than let the database refuse it.
    message = "topic is " + std::to_string(stages::utf8_chars(topic)) + " characters, over the limit of " +
              std::to_string(limits_.max_topic_chars);
    topic = column_topic(topic);
    if (v.ok()) {
      v.why = stages::reason::invalid_topic;
      v.message = message;
      rec.why = v.why;
    }
  }
  // Tenants (docs/tenants.md): before the payload is looked at further, so a
  // claim of another tenant is dead-lettered whatever else the event holds.
  std::string_view tenant;
  if (tenancy_) {
    simdjson::dom::element doc;
    if (v.ok()) doc = validator.document();
    tenant = tenant_of(default_topic, v.ok() ? &doc : nullptr, received_ns, v);
    rec.why = v.why;
  }
  const uint64_t seed = stages::tenant_hash_seed(tenant);
  // Payload schemas (docs/schemas.md): the document already parsed, against
  // the one snapshot of the set this thread holds for this event.
  if (v.ok() && !bare) {
    if (const auto* schemas = stages::schema::thread_schemas()) {
      // Assigned only when it fails: a passing event moves no validation.
      if (auto s = schemas->check(env.kind, validator.parsed(), stages::schema::thread_walker()); !s.ok()) {
        v = std::move(s);
        rec.why = v.why;
      }
    }
  }
  bool routed = false;
  if (v.ok() && routes_) {
    routed = apply_routes(line, topic, env.kind, bare, validator, v);
    rec.why = v.why;
  }
  if (v.ok() && bare) {
    auto h = stages::hash_key(identity_.data(), identity_.size(), seed);
    rec.key_hash_lo = h.lo;
    rec.key_hash_hi = h.hi;
    rec.shard_hash = shard_hash_of_upsert_key();
    rec.bare = true;
    rec.skip_mirror = skip_mirror_;
    auto& b = batch_of(rec);
    if (!tenant.empty()) rec.tenant = b.append(tenant);
    rec.key = b.append(identity_);
    rec.kind = b.append(first_route_);  // a bare message's kind label: the route that took it
    rec.topic = b.append(topic);
    rec.raw = b.append(line);
    rec.routed = b.append(routed_);
    if (!headers.empty()) rec.headers = b.append(headers);
    if (b.routes != routes_) b.routes = routes_;
    b.events.push_back(rec);
    return;
  }
  if (v.ok()) {
    auto h = stages::hash_key(env.idempotency_key.data(), env.idempotency_key.size(), seed);
    rec.key_hash_lo = h.lo;
    rec.key_hash_hi = h.hi;
    auto& b = batch_of(rec);
    if (!tenant.empty()) rec.tenant = b.append(tenant);
    rec.key = b.append(env.idempotency_key);
    rec.kind = b.append(env.kind);
    rec.topic = b.append(topic);
    rec.raw = b.append(line);
    if (routed) {
      rec.shard_hash = shard_hash_of_upsert_key();
      rec.skip_mirror = skip_mirror_;
      rec.routed = b.append(routed_);
      if (b.routes != routes_) b.routes = routes_;
    }
    if (!headers.empty()) rec.headers = b.append(headers);
    b.events.push_back(rec);
    return;
  }
  auto d = stages::hash_key(line.data(), line.size(), seed);
  rec.digest_lo = d.lo;
  rec.digest_hi = d.hi;
  auto& b = batch_of(rec);
  if (!tenant.empty()) rec.tenant = b.append(tenant);
  rec.message = b.append(v.message);
  rec.topic = b.append(topic);
  rec.raw = b.append(line);
  if (!headers.empty()) rec.headers = b.append(headers);
  b.events.push_back(rec);
}

void intake::add_unprocessed(std::string_view bytes, stages::reason why, std::string_view message, uint64_t seq,
                             int64_t received_ns, std::string_view topic) {
  ++pending_;
  stages::event_record rec;
  rec.seq = seq;
  rec.received_ns = received_ns;
  rec.why = why;
  auto d = stages::hash_key(bytes.data(), bytes.size());
  rec.digest_lo = d.lo;
  rec.digest_hi = d.hi;
  rec.raw_truncated = bytes.size() > limits_.max_event_bytes;
  auto& b = batch_of(rec);
  rec.message = b.append(message);
  rec.topic = b.append(column_topic(topic));
  rec.raw = b.append(rec.raw_truncated ? bytes.substr(0, too_large_prefix) : bytes);
  b.events.push_back(rec);
}

std::string_view intake::column_topic(std::string_view topic) const noexcept {
  return stages::varchar_prefix(topic, limits_.max_topic_chars);
}

void intake::add_too_large(std::string_view prefix, size_t full_size, uint64_t digest_lo, uint64_t digest_hi,
                           uint64_t seq, int64_t received_ns, std::string_view default_topic) {
  ++pending_;
  stages::event_record rec;
  rec.seq = seq;
  rec.received_ns = received_ns;
  rec.why = stages::reason::too_large;
  rec.raw_truncated = true;
  // Its tenant is what the credentials say (the claim was never read); its
  // digest is made the tenant's by mixing in the tenant's seed, as the
  // bytes were hashed by the source.
  std::string_view tenant;
  if (tenancy_) tenant = tenant_of(default_topic, nullptr, received_ns, scratch_validation_);
  const uint64_t seed = stages::tenant_hash_seed(tenant);
  rec.digest_lo = digest_lo ^ seed;
  rec.digest_hi = digest_hi ^ (seed * 0x9E3779B97F4A7C15ull);
  auto& b = batch_of(rec);
  if (!tenant.empty()) rec.tenant = b.append(tenant);
  rec.message = b.append("event is " + std::to_string(full_size) + " bytes, over the limit of " +
                         std::to_string(limits_.max_event_bytes) + "; raw holds its first " +
                         std::to_string(prefix.size()) + " bytes");
  rec.topic = b.append(column_topic(default_topic));
  rec.raw = b.append(prefix);
  b.events.push_back(rec);
}

}  // namespace evpipe::pipeline
