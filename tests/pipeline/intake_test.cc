#include "pipeline/intake.h"

#include "stages/batch.h"
#include "stages/dedup.h"
#include "stages/route/active.h"
#include "stages/tenant/binding.h"

#include <gtest/gtest.h>

#include <map>

namespace evpipe::pipeline {
namespace {

std::string ev(const std::string& key, const std::string& extra = "") {
  return "{\"trace_id\":\"550e8400-e29b-41d4-a716-446655440000\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\","
         "\"idempotency_key\":\"" + key + "\",\"payload\":{}" + extra + "}";
}

struct found {
  const stages::event_batch* batch;
  const stages::event_record* rec;
};
found find_seq(intake& in, uint64_t seq) {
  for (auto& b : in.batches()) {
    for (auto& r : b.events) {
      if (r.seq == seq) return {&b, &r};
    }
  }
  return {nullptr, nullptr};
}

TEST(Intake, SameKeyAlwaysGoesToTheSameShard) {
  intake in(4, {});
  stages::envelope_validator v;
  for (uint64_t i = 0; i < 200; ++i) in.add(ev("key-" + std::to_string(i % 20)), 0, i + 1, 0, "t", v);
  std::map<std::string, size_t> shard_of_key;
  for (size_t s = 0; s < in.batches().size(); ++s) {
    for (auto& r : in.batches()[s].events) {
      std::string key(in.batches()[s].view(r.key));
      auto [it, inserted] = shard_of_key.emplace(key, s);
      EXPECT_EQ(it->second, s) << key;
    }
  }
  EXPECT_EQ(shard_of_key.size(), 20u);
  EXPECT_EQ(in.pending(), 200u);
  size_t used = 0;
  for (auto& b : in.batches()) used += !b.events.empty();
  EXPECT_GT(used, 1u);  // keys spread over shards
}

TEST(Intake, APinnedIntakeSendsEveryEventToItsShardAndFillsNoOther) {
  intake in(4, {});
  EXPECT_EQ(in.pinned_shard(), intake::unpinned);
  auto held = std::make_shared<shard_lease::counts>(7);
  (*held)[6].fetch_add(1);
  in.pin(shard_lease(held, 6));  // modulo the shards: 2
  EXPECT_EQ(in.pinned_shard(), 2u);
  in.reserve(100000);
  stages::envelope_validator v;
  uint64_t seq = 0;
  for (int i = 0; i < 50; ++i) in.add(ev("key-" + std::to_string(i)), 0, ++seq, 0, "t", v);
  in.add("not json", 0, ++seq, 0, "t", v);
  in.add("", 0, ++seq, 0, "t", v);
  in.add_too_large("{\"big", 5000000, 11, 22, ++seq, 0, "t");
  for (size_t s = 0; s < in.batches().size(); ++s) {
    const auto& b = in.batches()[s];
    if (s == 2) {
      EXPECT_EQ(b.events.size(), seq);
    } else {
      EXPECT_TRUE(b.events.empty()) << s;
      EXPECT_EQ(b.arena.capacity(), stages::event_batch().arena.capacity()) << "reserved room in shard " << s;
    }
  }
  in = intake(4, {});  // the intake's end ends its lease
  EXPECT_EQ((*held)[6].load(), 0);
}

TEST(Intake, TopicFromTheEventElseTheSource) {
  intake in(1, {});
  stages::envelope_validator v;
  in.add(ev("a", ",\"topic\":\"own/topic\""), 0, 1, 0, "src/topic", v);
  in.add(ev("b"), 0, 2, 0, "src/topic", v);
  in.add(ev("c", ",\"topic\":\"\""), 0, 3, 0, "src/topic", v);  // invalid_topic: falls back
  auto a = find_seq(in, 1), b = find_seq(in, 2), c = find_seq(in, 3);
  EXPECT_EQ(a.batch->view(a.rec->topic), "own/topic");
  EXPECT_EQ(b.batch->view(b.rec->topic), "src/topic");
  EXPECT_EQ(c.rec->why, stages::reason::invalid_topic);
  EXPECT_EQ(c.batch->view(c.rec->topic), "src/topic");
}

TEST(Intake, InvalidBlankAndTooLargeEventsKeepWhatTheDlqNeeds) {
  intake in(2, {});
  stages::envelope_validator v;
  in.add("not json", 0, 1, 0, "t", v);
  in.add("  ", 0, 2, 0, "t", v);
  in.add_too_large("{\"big", 5000000, 11, 22, 3, 0, "t");
  auto bad = find_seq(in, 1), blank = find_seq(in, 2), big = find_seq(in, 3);
  EXPECT_EQ(bad.rec->why, stages::reason::invalid_json);
  EXPECT_EQ(bad.batch->view(bad.rec->raw), "not json");
  EXPECT_FALSE(bad.batch->view(bad.rec->message).empty());
  EXPECT_NE(bad.rec->digest_lo | bad.rec->digest_hi, 0u);
  EXPECT_TRUE(blank.rec->blank);
  EXPECT_EQ(big.rec->why, stages::reason::too_large);
  EXPECT_TRUE(big.rec->raw_truncated);
  EXPECT_EQ(big.rec->digest_lo, 11u);
  EXPECT_NE(big.batch->view(big.rec->message).find("5000000"), std::string::npos);
}

TEST(Intake, EventsOverTheLimitKeepAPrefixAndTheDigestOfAll) {
  stages::envelope_limits limits;
  limits.max_event_bytes = 5000;
  intake in(1, limits);
  stages::envelope_validator v(limits);
  std::string big = ev("big", ",\"pad\":\"" + std::string(6000, 'x') + "\"");
  big.append(64, ' ');  // readable padding for the validator, beyond the event
  std::string_view line(big.data(), big.size() - 64);
  in.add(line, big.size(), 1, 0, "t", v);
  auto f = find_seq(in, 1);
  ASSERT_NE(f.rec, nullptr);
  EXPECT_EQ(f.rec->why, stages::reason::too_large);
  EXPECT_TRUE(f.rec->raw_truncated);
  EXPECT_EQ(f.batch->view(f.rec->raw), line.substr(0, intake::too_large_prefix));
  auto d = stages::hash_key(line.data(), line.size());
  EXPECT_EQ(f.rec->digest_lo, d.lo);
  EXPECT_EQ(f.rec->digest_hi, d.hi);
}

TEST(Intake, SourceTopicsLongerThanTheColumnAreCutAtACharacter) {
  intake in(1, {});
  stages::envelope_validator v;
  // 256 characters (258 bytes): VARCHAR(255) counts characters, and the cut
  // after the 255th must not split the second é.
  std::string topic = std::string(254, 'a') + "\xc3\xa9\xc3\xa9";
  in.add(ev("k1"), 0, 1, 0, topic, v, topic_rule::source_only);
  in.add_too_large("{", 2'000'000, 1, 2, 2, 0, topic);
  for (uint64_t seq : {1u, 2u}) {
    auto f = find_seq(in, seq);
    ASSERT_NE(f.rec, nullptr);
    EXPECT_EQ(f.batch->view(f.rec->topic), std::string(254, 'a') + "\xc3\xa9") << seq;
  }
  EXPECT_EQ(find_seq(in, 1).rec->why, stages::reason::invalid_topic);
}

TEST(Intake, ValidEventsCarryKeyKindAndRawBytes) {
  intake in(1, {});
  stages::envelope_validator v;
  std::string line = ev("k\\u0031");  // escaped key: stored unescaped
  in.add(line, 0, 7, 42, "t", v);
  auto f = find_seq(in, 7);
  EXPECT_EQ(f.batch->view(f.rec->key), "k1");
  EXPECT_EQ(f.batch->view(f.rec->kind), "k");
  EXPECT_EQ(f.batch->view(f.rec->raw), line);
  EXPECT_EQ(f.rec->received_ns, 42);
}

TEST(Intake, ALeadingByteOrderMarkIsNotPartOfTheEvent) {
  intake in(1, {});
  stages::envelope_validator v;
  std::string line = ev("bom");
  in.add("\xEF\xBB\xBF" + line, 0, 1, 0, "t", v);
  in.add("\xEF\xBB\xBF", 0, 2, 0, "t", v);  // a line holding only the mark is blank
  auto f = find_seq(in, 1);
  EXPECT_EQ(f.rec->why, stages::reason::none);
  EXPECT_EQ(f.batch->view(f.rec->raw), line);
  EXPECT_TRUE(find_seq(in, 2).rec->blank);
}

// One route "r" taking kind "k" into `table`, after `before` routes that
// take nothing here (so that "r" has another index in each set).
std::shared_ptr<const stages::route::route_set> routes_to(const std::string& table, size_t before = 0) {
  std::vector<config::route> rs;
  for (size_t i = 0; i < before; ++i) {
    config::route other;
    other.name = "other" + std::to_string(i);
    other.kinds = {"not-k"};
    other.table = "o";
    rs.push_back(other);
  }
  config::route r;
  r.name = "r";
  r.kinds = {"k"};
  r.table = table;
  config::route_column c;
  c.name = "key";
  c.source_text = "idempotency_key";
  c.path = {"idempotency_key"};
  r.columns = {c};
  rs.push_back(r);
  return std::make_shared<const stages::route::route_set>(rs);
}

// The route index a routed event's first tuple names.
uint16_t first_route_of(const stages::event_batch& b, const stages::event_record& r) {
  std::string_view t = b.view(r.routed);
  return static_cast<uint16_t>(((static_cast<uint8_t>(t[0]) << 8) | static_cast<uint8_t>(t[1])) &
                               ~stages::write_batch::foreign_identity_bit);
}

// Routes a reload publishes (stages/route/active.h) apply from the next
// read on: the events of one read (until submitted()) keep the set the read
// began with, so a batch's routed tuples all name routes of the one set it
// carries (event_batch::routes).
TEST(Intake, PublishedRoutesApplyFromTheNextRead) {
  auto first = routes_to("t1"), second = routes_to("t2", 1);
  stages::route::set_active_routes(first);
  intake in(1, {});
  stages::envelope_validator v;
  in.add(ev("a"), 0, 1, 0, "t", v);
  stages::route::set_active_routes(second);
  in.add(ev("b"), 0, 2, 0, "t", v);  // the same read
  auto& b = in.batches()[0];
  EXPECT_EQ(b.routes, first);
  for (uint64_t seq : {1, 2}) {
    auto f = find_seq(in, seq);
    ASSERT_GT(f.rec->routed.len, 0u) << seq;
    EXPECT_EQ(first_route_of(b, *f.rec), 0) << seq;
  }
  // Handed over (router::submit clears the batch): the next read takes the new set.
  b.clear();
  in.submitted();
  in.add(ev("c"), 0, 3, 0, "t", v);
  EXPECT_EQ(b.routes, second);
  EXPECT_EQ(first_route_of(b, *find_seq(in, 3).rec), 1);
  // Routes removed: the next read's events are not routed.
  stages::route::set_active_routes(nullptr);
  b.clear();
  in.submitted();
  in.add(ev("d"), 0, 4, 0, "t", v);
  EXPECT_EQ(find_seq(in, 4).rec->routed.len, 0u);
  EXPECT_EQ(b.routes, nullptr);
  EXPECT_EQ(stages::route::active_routes(), nullptr);
}

// A bare message without idempotency columns is identified by its topic
// and bytes: a redelivery (same topic, same bytes) has the key of the first
// delivery, while two devices sending equal bytes on their own topics are two
// messages (they were one, and the second was dropped as a duplicate).
TEST(Intake, ABareMessagesDigestIsOfItsTopicAndBytes) {
  config::route r;
  r.name = "system";
  r.topics = {"d/+/system/+"};
  r.envelope_standard = false;
  r.table = "sys";
  config::route_column c;
  c.name = "code";
  c.source_text = "code";
  c.path = {"code"};
  c.type = config::column_type::int4;
  r.columns = {c};
  stages::route::set_active_routes(std::make_shared<const stages::route::route_set>(std::vector<config::route>{r}));
  intake in(1, {});
  stages::envelope_validator v;
  const std::string msg = "{\"code\":17}";
  in.add(msg, msg.size(), 1, 0, "d/A/system/error", v, topic_rule::source_only);
  in.add(msg, msg.size(), 2, 0, "d/B/system/error", v, topic_rule::source_only);
  in.add(msg, msg.size(), 3, 0, "d/A/system/error", v, topic_rule::source_only);
  stages::route::set_active_routes(nullptr);
  const auto a = find_seq(in, 1), b = find_seq(in, 2), again = find_seq(in, 3);
  ASSERT_TRUE(a.rec && b.rec && again.rec);
  ASSERT_TRUE(a.rec->bare && b.rec->bare);
  EXPECT_NE(std::pair(a.rec->key_hash_lo, a.rec->key_hash_hi), std::pair(b.rec->key_hash_lo, b.rec->key_hash_hi))
      << "equal bytes on two topics are two messages";
  EXPECT_EQ(std::pair(a.rec->key_hash_lo, a.rec->key_hash_hi),
            std::pair(again.rec->key_hash_lo, again.rec->key_hash_hi))
      << "a redelivery has the key of its first delivery";
  EXPECT_NE(a.batch->view(a.rec->key), b.batch->view(b.rec->key));
}

}  // namespace
}  // namespace evpipe::pipeline

// Tenants (docs/tenants.md): the event's tenant is kept with it, its key hash
// (dedup window, shard) is the tenant's, and a claim of another tenant than
// the credentials is dead-lettered before anything else.
namespace evpipe::pipeline {
namespace {

TEST(IntakeTenants, TheSameKeyFromTwoTenantsIsTwoKeysAndMismatchesAreDeadLettered) {
  config::tenants_section on;
  on.enabled = true;
  stages::tenant::publish_tenants(on);
  intake in(1, {});
  config::source_tenancy open;
  in.set_tenancy(stages::tenant::make_binding(open));
  stages::envelope_validator v;
  in.add(ev("k", ",\"tenant_id\":\"alpha\""), 0, 1, 0, "t", v);
  in.add(ev("k", ",\"tenant_id\":\"beta\""), 0, 2, 0, "t", v);
  in.add(ev("k"), 0, 3, 0, "t", v);
  in.set_credential("beta");  // as an HTTP request's token would
  in.add(ev("k", ",\"tenant_id\":\"alpha\""), 0, 4, 0, "t", v);
  auto a = find_seq(in, 1), b = find_seq(in, 2), none = find_seq(in, 3), wrong = find_seq(in, 4);
  EXPECT_EQ(a.batch->view(a.rec->tenant), "alpha");
  EXPECT_EQ(b.batch->view(b.rec->tenant), "beta");
  EXPECT_EQ(none.batch->view(none.rec->tenant), "");
  EXPECT_NE(a.rec->key_hash_hi, b.rec->key_hash_hi);
  auto plain = stages::hash_key("k", 1);
  EXPECT_EQ(none.rec->key_hash_lo, plain.lo) << "no tenant: the hash evpipe always used";
  EXPECT_EQ(none.rec->key_hash_hi, plain.hi);
  EXPECT_EQ(wrong.rec->why, stages::reason::tenant_mismatch);
  EXPECT_EQ(wrong.batch->view(wrong.rec->tenant), "beta");
  stages::tenant::publish_tenants(config::tenants_section{});
}

}  // namespace
}  // namespace evpipe::pipeline
