#include "pipeline/router.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "pipeline/metrics.h"

namespace evpipe::pipeline {
namespace {

// The leases need no running shard: the shards are built and never started.
class null_sink : public batch_sink {
 public:
  write_status write(stages::write_batch&) override { return write_status::committed; }
  bool ready() const override { return true; }
  bool check() override { return true; }
  std::string last_error() const override { return {}; }
};

struct routers : ::testing::Test {
  metrics_registry registry{"evpipe", 100};
  std::unique_ptr<router> make(size_t n) {
    std::vector<std::unique_ptr<shard>> shards;
    for (size_t i = 0; i < n; ++i) {
      shards.push_back(std::make_unique<shard>(static_cast<uint32_t>(i), shard_options{}, std::make_unique<null_sink>(),
                                               registry.add_shard(), registry));
    }
    return std::make_unique<router>(std::move(shards), 1024);
  }
};

TEST_F(routers, ConnectionsLeaseTheShardTheFewestHold) {
  auto r = make(3);
  std::vector<shard_lease> held;
  for (int i = 0; i < 7; ++i) held.push_back(r->lease_shard());
  // Spread evenly, lowest index first on a tie: 0 1 2 0 1 2 0.
  for (size_t i = 0; i < held.size(); ++i) EXPECT_EQ(held[i].shard(), i % 3) << i;
  EXPECT_EQ(r->leases(0), 3);
  EXPECT_EQ(r->leases(1), 2);
  EXPECT_EQ(r->leases(2), 2);
  // Two connections of shard 0 close: the next two go there, not round robin.
  held.erase(held.begin());
  held.erase(held.begin() + 2);
  EXPECT_EQ(r->leases(0), 1);
  EXPECT_EQ(r->lease_shard().shard(), 0u);  // a temporary: released at once
  EXPECT_EQ(r->leases(0), 1);
  held.push_back(r->lease_shard());
  EXPECT_EQ(held.back().shard(), 0u);
  EXPECT_EQ(r->leases(0), 2);
}

TEST_F(routers, AMovedLeaseCountsOnceAndALeaseMayOutliveItsRouter) {
  auto r = make(2);
  shard_lease a = r->lease_shard();
  shard_lease b = std::move(a);
  EXPECT_FALSE(a.held());  // NOLINT(bugprone-use-after-move): a moved-from lease is empty
  EXPECT_TRUE(b.held());
  EXPECT_EQ(r->leases(0), 1);
  shard_lease c = r->lease_shard();
  EXPECT_EQ(c.shard(), 1u);
  c = std::move(b);  // c's own lease (shard 1) is released
  EXPECT_EQ(r->leases(0), 1);
  EXPECT_EQ(r->leases(1), 0);
  r.reset();  // a connection may be destroyed after the router (shutdown)
  c = shard_lease();
  EXPECT_FALSE(c.held());
}

// /metrics shows each shard's pinned connections (a skew would otherwise be
// seen only in copy_rows_total), and keeps showing them, at 0, once the
// router is gone (shutdown: /metrics may be asked until the end).
TEST_F(routers, MetricsShowTheConnectionsEachShardHolds) {
  auto r = make(2);
  EXPECT_EQ(registry.render().find("evpipe_shard_connections"), std::string::npos) << "not watched: no series";
  registry.watch_shard_leases(r->lease_counts());
  auto a = r->lease_shard(), b = r->lease_shard(), c = r->lease_shard();
  auto text = registry.render();
  EXPECT_NE(text.find("# TYPE evpipe_shard_connections gauge\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nevpipe_shard_connections{shard=\"0\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nevpipe_shard_connections{shard=\"1\"} 1\n"), std::string::npos) << text;
  a = shard_lease();
  c = shard_lease();
  r.reset();
  b = shard_lease();
  text = registry.render();
  EXPECT_NE(text.find("\nevpipe_shard_connections{shard=\"0\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nevpipe_shard_connections{shard=\"1\"} 0\n"), std::string::npos) << text;
}

TEST_F(routers, APinnedConnectionWaitsOnlyForItsOwnShardsQueue) {
  auto r = make(2);
  r->set_queue_capacity(10);
  std::vector<stages::event_batch> batches(2);
  batches[1].events.resize(10);  // shard 1's queue is full; nobody drains it (not started)
  r->submit(batches);
  EXPECT_FALSE(r->has_room());
  EXPECT_TRUE(r->has_room(0));
  EXPECT_FALSE(r->has_room(1));
  r->set_open(false);  // closed (waiting for the database): no source reads
  EXPECT_FALSE(r->has_room(0));
}

class null_origin : public stages::event_origin {
 public:
  void on_outcomes(std::span<const stages::outcome>) override {}
};

// A source that finds no room waits for the router's wake instead of
// polling (room_bell.h). The waiter counts its runs.
struct counted_waiter {
  std::shared_ptr<int> owner = std::make_shared<int>(0);
  std::shared_ptr<std::atomic<int>> runs = std::make_shared<std::atomic<int>>(0);
  room_bell::waiter make() const {
    return {owner, [runs = runs] { runs->fetch_add(1); }};
  }
};

bool within(std::chrono::milliseconds limit, const std::function<bool()>& f) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!f()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

TEST_F(routers, AWaiterRunsOnceTheFullShardTakesItsBatches) {
  auto r = make(2);
  r->set_queue_capacity(10);
  std::vector<stages::event_batch> batches(2);
  auto origin = std::make_shared<null_origin>();
  batches[1].origin = origin;
  batches[1].events.resize(10);  // shard 1 is full until it runs
  r->submit(batches);
  counted_waiter w;
  ASSERT_TRUE(r->wait_for_room(intake::unpinned, w.make()));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(*w.runs, 0) << "woken while the queue was still full";
  r->start();
  EXPECT_TRUE(within(std::chrono::seconds(5), [&] { return *w.runs == 1; }));
  EXPECT_TRUE(r->has_room());
  // Once: later batches ring for nobody.
  batches[1].origin = origin;
  batches[1].events.resize(3);
  r->submit(batches);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(*w.runs, 1);
  r->stop(std::chrono::steady_clock::now() + std::chrono::seconds(5));
}

TEST_F(routers, WaitingForRoomThatIsThereKeepsNoWaiter) {
  auto r = make(2);
  r->set_queue_capacity(10);
  std::vector<stages::event_batch> batches(2);
  batches[1].events.resize(10);
  r->submit(batches);
  counted_waiter pinned_elsewhere, pinned_there;
  // A connection pinned to shard 0 does not wait for shard 1's queue.
  EXPECT_FALSE(r->wait_for_room(0, pinned_elsewhere.make()));
  EXPECT_TRUE(r->wait_for_room(1, pinned_there.make()));
  r->set_queue_capacity(100);  // room in every queue now: the waiter runs
  EXPECT_EQ(*pinned_there.runs, 1);
  EXPECT_EQ(*pinned_elsewhere.runs, 0);
}

TEST_F(routers, OpeningTheRouterWakesWhoWaitedForIt) {
  auto r = make(1);
  r->set_open(false);  // waiting for the database
  counted_waiter w, gone;
  EXPECT_TRUE(r->wait_for_room(intake::unpinned, w.make()));
  EXPECT_TRUE(r->wait_for_room(intake::unpinned, gone.make()));
  gone.owner.reset();  // its connection closed meanwhile
  r->set_open(true);
  EXPECT_EQ(*w.runs, 1);
  EXPECT_EQ(*gone.runs, 0) << "a waiter whose owner is gone ran";
}

TEST(room_bells, WaitersOfClosedConnectionsDoNotPileUp) {
  room_bell bell;
  auto live = std::make_shared<int>(0);
  for (int i = 0; i < 10'000; ++i) bell.add({std::make_shared<int>(i), [] {}});  // each owner gone at once
  bell.add({live, [] {}});
  EXPECT_LT(bell.waiting(), 200u);
  bell.ring();
  EXPECT_EQ(bell.waiting(), 0u);
}

}  // namespace
}  // namespace evpipe::pipeline
