#include "pipeline/shard.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "pipeline/batch_trace.h"
#include "pipeline/intake.h"
#include "stages/dedup.h"
#include "stages/route/active.h"

namespace evpipe::pipeline {
namespace {

using namespace std::chrono_literals;

// A sink that records what it was asked to write; can fail on demand and can
// pretend some keys are already in the table.
class fake_sink : public batch_sink {
 public:
  write_status write(stages::write_batch& b) override {
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    std::lock_guard lock(mu);
    ++calls;
    if (fail_next > 0) {
      --fail_next;
      return write_status::retry;
    }
    if (refuse_rows && b.row_count() > 0) return write_status::retry;
    for (size_t i = 0; i < b.rows().size(); ++i) {
      std::string key(b.text(b.rows()[i].key));
      if (existing.count(key)) {
        b.mark_row_duplicate(i);
      } else {
        rows.push_back(key);
        existing.insert(key);
      }
    }
    dead_letters += b.dead_letters().size();
    if (b.routed_row_count() > 0) routed_writes.emplace_back(b.routes().get(), b.routed_row_count());
    ++commits;
    return write_status::committed;
  }
  bool ready() const override { return healthy; }
  bool check() override {
    std::lock_guard lock(mu);
    ++checks;
    return healthy;
  }
  std::string last_error() const override { return "injected failure"; }
  std::atomic<bool> healthy{true};
  std::chrono::milliseconds delay{0};  // each write takes this long
  bool refuse_rows = false;  // rows never commit; dead letters do
  int checks = 0;

  std::mutex mu;
  int calls = 0, commits = 0, fail_next = 0;
  size_t dead_letters = 0;
  std::vector<std::string> rows;
  std::set<std::string> existing;
  std::vector<std::pair<const void*, size_t>> routed_writes;  // (the batch's routes, its routed rows) per commit
};

class recording_origin : public stages::event_origin {
 public:
  void on_outcomes(std::span<const stages::outcome> o) override {
    std::lock_guard lock(mu);
    got.insert(got.end(), o.begin(), o.end());
    cv.notify_all();
  }
  bool wait_for(size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, 5s, [&] { return got.size() >= n; });
  }
  std::mutex mu;
  std::condition_variable cv;
  std::vector<stages::outcome> got;
};

// An origin that takes over the timeline, as a TCP connection does.
class timed_origin : public recording_origin {
 public:
  bool on_outcomes_timed(std::span<const stages::outcome> o, const stages::batch_timeline& t) override {
    {
      std::lock_guard lock(mu);
      timelines.push_back(t);
    }
    on_outcomes(o);
    return true;
  }
  std::vector<stages::batch_timeline> timelines;  // under mu
};

// Events of `keys` ("<bad>": invalid JSON; "": blank), of `tenant` (their
// key hashes seeded with its, as intake hashes them; "" = no tenant).
stages::event_batch make_batch(std::shared_ptr<stages::event_origin> origin,
                               const std::vector<std::string>& keys, uint64_t first_seq,
                               const std::string& tenant = "") {
  stages::event_batch b;
  b.origin = std::move(origin);
  uint64_t seq = first_seq;
  for (const auto& k : keys) {
    stages::event_record r;
    r.seq = seq++;
    r.received_ns = stages::steady_ns();
    if (k == "<bad>") {
      r.why = stages::reason::invalid_json;
      r.raw = b.append("garbage");
      r.message = b.append("not JSON");
    } else if (k.empty()) {
      r.blank = true;
    } else {
      auto h = stages::hash_key(k.data(), k.size(), stages::tenant_hash_seed(tenant));
      if (!tenant.empty()) r.tenant = b.append(tenant);
      r.key_hash_lo = h.lo;
      r.key_hash_hi = h.hi;
      r.key = b.append(k);
      r.kind = b.append("kind");
      r.raw = b.append("{\"idempotency_key\":\"" + k + "\"}");
    }
    r.topic = b.append("t");
    b.events.push_back(r);
  }
  return b;
}

struct shard_fixture : ::testing::Test {
  metrics_registry registry{"evpipe", 100};
  shard_options opts;
  fake_sink* sink = nullptr;
  std::unique_ptr<shard> s;

  void start() {
    auto owned = std::make_unique<fake_sink>();
    sink = owned.get();
    s = std::make_unique<shard>(0, opts, std::move(owned), registry.add_shard(), registry);
    s->start();
  }
};

TEST_F(shard_fixture, EveryEventGetsItsOutcomeAfterCommit) {
  opts.linger = 1ms;
  start();
  auto origin = std::make_shared<recording_origin>();
  s->push(make_batch(origin, {"a", "b", "a", "<bad>", "", "c"}, 1));
  ASSERT_TRUE(origin->wait_for(6));
  s->stop(std::chrono::steady_clock::now() + 5s);
  std::map<uint64_t, stages::outcome_kind> by_seq;
  for (auto& o : origin->got) by_seq[o.seq] = o.kind;
  EXPECT_EQ(by_seq[1], stages::outcome_kind::mirrored);
  EXPECT_EQ(by_seq[2], stages::outcome_kind::mirrored);
  EXPECT_EQ(by_seq[3], stages::outcome_kind::duplicate);
  EXPECT_EQ(by_seq[4], stages::outcome_kind::dead_lettered);
  EXPECT_EQ(by_seq[5], stages::outcome_kind::skipped);
  EXPECT_EQ(by_seq[6], stages::outcome_kind::mirrored);
  EXPECT_EQ(sink->rows, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(sink->dead_letters, 1u);
}

// The read side's stream is woken by on_commit: once per committed batch
// with rows, after its commit (not for failed attempts, not for a batch of
// only dead letters), before the outcomes go back.
TEST_F(shard_fixture, OnCommitIsCalledAfterEachCommittedBatchWithRows) {
  opts.linger = 1ms;
  opts.retry_base = 10ms;
  opts.retry_max = 10ms;
  std::mutex mu;
  std::vector<int> commits_seen;  // the sink's commit count at each call
  opts.on_commit = [&](int64_t commit_ns) {
    EXPECT_GT(commit_ns, 0);
    std::lock_guard sink_lock(sink->mu);
    std::lock_guard lock(mu);
    commits_seen.push_back(sink->commits);
  };
  start();
  {
    std::lock_guard lock(sink->mu);
    sink->fail_next = 2;  // two failed attempts first: no call for them
  }
  auto origin = std::make_shared<recording_origin>();
  s->push(make_batch(origin, {"a", "b"}, 1));
  ASSERT_TRUE(origin->wait_for(2));
  s->push(make_batch(origin, {"<bad>"}, 3));  // only a dead letter: no row to read
  ASSERT_TRUE(origin->wait_for(3));
  s->push(make_batch(origin, {"c"}, 4));
  ASSERT_TRUE(origin->wait_for(4));
  s->stop(std::chrono::steady_clock::now() + 5s);
  std::lock_guard lock(mu);
  EXPECT_EQ(commits_seen, (std::vector<int>{1, 3}));
}

TEST_F(shard_fixture, NoOutcomeBeforeTheBatchCommits) {
  opts.linger = 1ms;
  opts.retry_base = 20ms;
  opts.retry_max = 20ms;
  start();
  {
    std::lock_guard lock(sink->mu);
    sink->fail_next = 3;  // three failed attempts before the commit
  }
  auto origin = std::make_shared<recording_origin>();
  s->push(make_batch(origin, {"x", "y"}, 1));
  ASSERT_TRUE(origin->wait_for(2));
  {
    std::lock_guard lock(sink->mu);
    EXPECT_EQ(sink->calls, 4);
    EXPECT_EQ(sink->commits, 1);
  }
  s->stop(std::chrono::steady_clock::now() + 5s);
  EXPECT_EQ(registry.shards()[0]->db_retries.load(), 3u);
}

TEST_F(shard_fixture, FlushesAtMaxRows) {
  opts.max_rows = 10;
  opts.linger = 10s;  // only the row limit can flush
  start();
  auto origin = std::make_shared<recording_origin>();
  std::vector<std::string> keys;
  for (int i = 0; i < 25; ++i) keys.push_back(std::string("k").append(std::to_string(i)));
  s->push(make_batch(origin, keys, 1));
  ASSERT_TRUE(origin->wait_for(20));
  {
    std::lock_guard lock(sink->mu);
    EXPECT_EQ(sink->commits, 2);
  }
  s->stop(std::chrono::steady_clock::now() + 5s);  // the last 5 commit on stop
  EXPECT_EQ(origin->got.size(), 25u);
  EXPECT_EQ(sink->commits, 3);
}

TEST_F(shard_fixture, DatabaseKnownKeysBecomeDuplicates) {
  opts.linger = 1ms;
  start();
  {
    std::lock_guard lock(sink->mu);
    sink->existing.insert("old");
  }
  auto origin = std::make_shared<recording_origin>();
  s->push(make_batch(origin, {"old", "new"}, 1));
  ASSERT_TRUE(origin->wait_for(2));
  s->stop(std::chrono::steady_clock::now() + 5s);
  EXPECT_EQ(origin->got[0].kind, stages::outcome_kind::duplicate);
  EXPECT_EQ(origin->got[1].kind, stages::outcome_kind::mirrored);
  EXPECT_NE(registry.render().find("evpipe_duplicates_total 1"), std::string::npos);
}

TEST_F(shard_fixture, IdleShardFollowsTheDatabaseForReadiness) {
  start();
  auto wait_ready = [&](bool want) {
    for (int i = 0; i < 400; ++i) {
      if (registry.all_shards_ready() == want) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  };
  EXPECT_TRUE(wait_ready(true));
  sink->healthy = false;  // the database goes away while no events flow
  EXPECT_TRUE(wait_ready(false));
  sink->healthy = true;
  EXPECT_TRUE(wait_ready(true));
  s->stop(std::chrono::steady_clock::now() + 5s);
  EXPECT_GE(sink->checks, 2);
}

TEST_F(shard_fixture, AfterMaxAttemptsTheEventsAreDeadLettered) {
  opts.linger = 1ms;
  opts.retry_base = 5ms;
  opts.retry_max = 5ms;
  opts.max_attempts = 3;
  start();
  {
    std::lock_guard lock(sink->mu);
    sink->refuse_rows = true;
  }
  auto origin = std::make_shared<recording_origin>();
  s->push(make_batch(origin, {"x", "y", "<bad>"}, 1));
  ASSERT_TRUE(origin->wait_for(3));
  s->stop(std::chrono::steady_clock::now() + 5s);
  for (const auto& o : origin->got) EXPECT_EQ(o.kind, stages::outcome_kind::dead_lettered) << o.seq;
  EXPECT_EQ(origin->got[0].why, stages::reason::retries_exhausted);
  EXPECT_EQ(sink->calls, 4);  // three refused attempts, then the dead letters
  EXPECT_EQ(sink->dead_letters, 3u);
  EXPECT_TRUE(sink->rows.empty());
}

// A tenant's event that was given up on leaves the dedup window (its key
// as intake hashed it: seeded with the tenant's), so its resend is stored,
// not taken for a duplicate of what never reached events_mirror. The window
// was erasing the unseeded hash, which a tenant's key is never under.
TEST_F(shard_fixture, ATenantsEventGivenUpOnLeavesTheWindowAndItsResendIsStored) {
  opts.linger = 1ms;
  opts.retry_base = 5ms;
  opts.retry_max = 5ms;
  opts.max_attempts = 2;
  start();
  {
    std::lock_guard lock(sink->mu);
    sink->refuse_rows = true;
  }
  auto origin = std::make_shared<recording_origin>();
  s->push(make_batch(origin, {"x"}, 1, "alpha"));
  ASSERT_TRUE(origin->wait_for(1));
  EXPECT_EQ(origin->got[0].kind, stages::outcome_kind::dead_lettered);
  {
    std::lock_guard lock(sink->mu);
    sink->refuse_rows = false;
  }
  s->push(make_batch(origin, {"x"}, 2, "alpha"));
  ASSERT_TRUE(origin->wait_for(2));
  s->stop(std::chrono::steady_clock::now() + 5s);
  EXPECT_NE(origin->got[1].kind, stages::outcome_kind::duplicate) << "the resend was taken for a duplicate";
  EXPECT_EQ(sink->rows, std::vector<std::string>{"x"});
}

TEST_F(shard_fixture, StopAbandonsRetriesAtTheDeadline) {
  opts.linger = 1ms;
  opts.retry_base = 10ms;
  start();
  {
    std::lock_guard lock(sink->mu);
    sink->fail_next = 1'000'000;  // the database never comes back
  }
  auto origin = std::make_shared<recording_origin>();
  s->push(make_batch(origin, {"x"}, 1));
  std::this_thread::sleep_for(50ms);
  auto t0 = std::chrono::steady_clock::now();
  s->stop(t0 + 200ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_TRUE(origin->got.empty());  // never acked what never committed
}

// A reload between two reads (stages/route/active.h): batches intake made
// under two route sets reach one shard back to back, inside one linger. The
// rows of the first set commit before a row of the second is taken, so each
// write names one set (write_batch::routes) and every routed row is written
// under the routes it was taken with.
TEST_F(shard_fixture, RowsTakenUnderTwoRouteSetsAreWrittenInSeparateBatches) {
  auto routes_to = [](const std::string& table) {
    config::route r;
    r.name = "r";
    r.kinds = {"k"};
    r.table = table;
    config::route_column c;
    c.name = "key";
    c.source_text = "idempotency_key";
    c.path = {"idempotency_key"};
    r.columns = {c};
    return std::make_shared<const stages::route::route_set>(std::vector<config::route>{r});
  };
  auto ev = [](const std::string& key) {
    return "{\"trace_id\":\"550e8400-e29b-41d4-a716-446655440000\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\","
           "\"idempotency_key\":\"" + key + "\",\"payload\":{}}";
  };
  auto first = routes_to("t1"), second = routes_to("t2");
  opts.linger = 300ms;  // both batches would share one write but for their routes
  start();
  auto origin = std::make_shared<recording_origin>();
  stages::envelope_validator v;
  stages::route::set_active_routes(first);
  intake in(1, {});
  in.add(ev("a"), 0, 1, 0, "t", v);
  in.add(ev("b"), 0, 2, 0, "t", v);
  in.batches()[0].origin = origin;
  s->push(std::move(in.batches()[0]));
  in.batches()[0].clear();
  in.submitted();
  stages::route::set_active_routes(second);
  in.add(ev("c"), 0, 3, 0, "t", v);
  in.batches()[0].origin = origin;
  s->push(std::move(in.batches()[0]));
  stages::route::set_active_routes(nullptr);
  ASSERT_TRUE(origin->wait_for(3));
  s->stop(std::chrono::steady_clock::now() + 5s);
  for (const auto& o : origin->got) EXPECT_EQ(o.kind, stages::outcome_kind::mirrored) << o.seq;
  using write = std::pair<const void*, size_t>;
  EXPECT_EQ(sink->routed_writes, (std::vector<write>{{first.get(), 2}, {second.get(), 1}}));
}

}  // namespace
}  // namespace evpipe::pipeline

namespace evpipe::pipeline {
namespace {

// Issue 19: each write batch's timeline, stamped by the shard at every step it
// passes and handed to the origin with the outcomes.
TEST_F(shard_fixture, TheTimelineHasEveryShardStepInOrder) {
  opts.linger = 1ms;
  start();
  auto origin = std::make_shared<timed_origin>();
  s->push(make_batch(origin, {"a", "b", "<bad>"}, 1));
  ASSERT_TRUE(origin->wait_for(3));
  s->push(make_batch(origin, {"c"}, 4));
  ASSERT_TRUE(origin->wait_for(4));
  s->stop(std::chrono::steady_clock::now() + 5s);
  std::lock_guard lock(origin->mu);
  ASSERT_EQ(origin->timelines.size(), 2u);
  const auto& t = origin->timelines[0];
  using stages::step;
  int64_t prev = 0;
  for (step st : {step::read, step::queued, step::popped, step::absorbed, step::flushed, step::committed,
                  step::ack_posted}) {
    EXPECT_GE(t.of(st), prev) << stages::step_name(st);
    EXPECT_GT(t.of(st), 0) << stages::step_name(st);
    prev = t.of(st);
  }
  EXPECT_EQ(t.of(step::copy_start), 0) << "the fake sink stamps nothing";
  EXPECT_EQ(t.of(step::ack_written), 0) << "the origin's own step";
  EXPECT_EQ(t.events, 3u);
  EXPECT_EQ(t.attempts, 1u);
  EXPECT_EQ(t.batch_no, 1u);
  EXPECT_EQ(origin->timelines[1].batch_no, 2u);
  EXPECT_EQ(origin->timelines[1].events, 1u);
  // The steps between the stages: one queue wait per queued batch, one
  // hand-over per write batch.
  const auto& probe = *registry.shards()[0];
  EXPECT_EQ(probe.stage_latency[size_t(stage::queue)].read().total(), 2u);
  EXPECT_EQ(probe.stage_latency[size_t(stage::ack_post)].read().total(), 2u);
}

// What queued up during a slow write is written in one batch, not in one
// batch per 32 queued batches (the shard's bulk dequeue): a queue that fell
// behind catches up (issue 19).
TEST_F(shard_fixture, ABacklogGoesIntoOneBatch) {
  opts.linger = 0ms;
  start();
  sink->delay = 200ms;
  auto origin = std::make_shared<recording_origin>();
  s->push(make_batch(origin, {"first"}, 1));
  std::this_thread::sleep_for(50ms);  // its write is in flight
  for (uint64_t i = 0; i < 100; ++i) s->push(make_batch(origin, {"k" + std::to_string(i)}, 2 + i));
  ASSERT_TRUE(origin->wait_for(101));
  s->stop(std::chrono::steady_clock::now() + 5s);
  std::lock_guard lock(sink->mu);
  EXPECT_EQ(sink->commits, 2) << "the first event's batch, then the 100 queued meanwhile";
  EXPECT_EQ(sink->rows.size(), 101u);
}

TEST_F(shard_fixture, ARetriedWriteCountsItsAttempts) {
  opts.linger = 1ms;
  opts.retry_base = 1ms;
  start();
  sink->fail_next = 1;
  auto origin = std::make_shared<timed_origin>();
  s->push(make_batch(origin, {"a"}, 1));
  ASSERT_TRUE(origin->wait_for(1));
  s->stop(std::chrono::steady_clock::now() + 5s);
  std::lock_guard lock(origin->mu);
  ASSERT_EQ(origin->timelines.size(), 1u);
  EXPECT_EQ(origin->timelines[0].attempts, 2u);
}

// An origin that does not time its acks (MQTT, HTTP, NATS): the shard judges
// the timeline at ack_posted; an origin that does judges its own copy.
TEST_F(shard_fixture, TheShardJudgesTimelinesNoOriginTakes) {
  set_slow_batch_threshold(50ms);
  opts.linger = 1ms;
  start();
  sink->delay = 80ms;
  const uint64_t before = trace_totals().slow_batches.load();
  auto plain = std::make_shared<recording_origin>();
  s->push(make_batch(plain, {"a"}, 1));
  ASSERT_TRUE(plain->wait_for(1));
  // Judged right after the hand-over, on the shard thread.
  for (int i = 0; i < 200 && trace_totals().slow_batches.load() == before; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(trace_totals().slow_batches.load(), before + 1);
  auto timed = std::make_shared<timed_origin>();
  s->push(make_batch(timed, {"b"}, 1));
  ASSERT_TRUE(timed->wait_for(1));
  EXPECT_EQ(trace_totals().slow_batches.load(), before + 1) << "the timed origin judges it when its ack is written";
  s->stop(std::chrono::steady_clock::now() + 5s);
  std::lock_guard lock(timed->mu);
  ASSERT_EQ(timed->timelines.size(), 1u);
  EXPECT_TRUE(timed->timelines[0].shard_thread.known()) << "slow at the hand-over: the shard thread's counts go with it";
  set_slow_batch_threshold(0ms);
}

}  // namespace
}  // namespace evpipe::pipeline
