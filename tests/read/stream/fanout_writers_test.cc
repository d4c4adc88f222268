// read/stream/fanout_writers: the threads that write the tail's reads to the
// clients' sockets while the hub reads on (docs/read.md, "Fan-out").
#include "read/stream/fanout_writers.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "read/stream/stream_hub.h"

namespace evpipe::read {
namespace {

using namespace std::chrono_literals;

// Records which threads flushed it, and how often; a flush can be held.
class recording_client final : public stream_client {
 public:
  frame_format format() const override { return frame_format::websocket; }
  void on_events(const std::shared_ptr<const event_frames>&, size_t, size_t) override {}
  void on_caught_up(position) override {}
  void on_error(std::string_view) override {}
  size_t queued_bytes() const override { return 0; }
  void flush() override {
    std::unique_lock lock(mu_);
    threads_.insert(std::this_thread::get_id());
    ++flushes_;
    changed_.notify_all();
    changed_.wait(lock, [&] { return !held_; });
  }
  void hold() {
    std::lock_guard lock(mu_);
    held_ = true;
  }
  void let_go() {
    std::lock_guard lock(mu_);
    held_ = false;
    changed_.notify_all();
  }
  // Waits (up to 10 s) until `n` flushes have begun.
  bool wait_for(int n) {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, 10s, [&] { return flushes_ >= n; });
  }
  int flushes() {
    std::lock_guard lock(mu_);
    return flushes_;
  }
  std::set<std::thread::id> threads() {
    std::lock_guard lock(mu_);
    return threads_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::set<std::thread::id> threads_;
  int flushes_ = 0;
  bool held_ = false;
};

TEST(FanoutWriters, EveryStagedFlushRunsOnceOnTheClientsOwnWriterOffTheHubThread) {
  fanout_writers w(3, 1 << 20, {});
  ASSERT_EQ(w.threads(), 3u);
  std::vector<std::shared_ptr<recording_client>> clients;
  for (int i = 0; i < 9; ++i) clients.push_back(std::make_shared<recording_client>());
  constexpr int reads = 50;
  for (int r = 0; r < reads; ++r) {
    for (size_t i = 0; i < clients.size(); ++i) w.stage(i, clients[i]);
    w.submit(100);
  }
  std::map<size_t, std::thread::id> writer_of;  // by id % 3
  for (size_t i = 0; i < clients.size(); ++i) {
    ASSERT_TRUE(clients[i]->wait_for(reads)) << "client " << i << " flushed " << clients[i]->flushes() << " times";
    auto threads = clients[i]->threads();
    ASSERT_EQ(threads.size(), 1u) << "client " << i << " is flushed by one writer";
    EXPECT_NE(*threads.begin(), std::this_thread::get_id()) << "not on the hub's thread";
    auto [at, fresh] = writer_of.emplace(i % 3, *threads.begin());
    EXPECT_EQ(at->second, *threads.begin()) << "clients " << at->first << " and " << i << " share a writer";
  }
  std::this_thread::sleep_for(50ms);
  for (size_t i = 0; i < clients.size(); ++i) EXPECT_EQ(clients[i]->flushes(), reads) << "client " << i;
  std::set<std::thread::id> writers;
  for (auto& [slot, id] : writer_of) writers.insert(id);
  EXPECT_EQ(writers.size(), 3u) << "the clients are spread over the three writers";
}

TEST(FanoutWriters, SubmitWaitsForNoWriteAndTheBacklogLastsUntilTheWriterTakesIt) {
  auto slow = std::make_shared<recording_client>();
  auto other = std::make_shared<recording_client>();
  struct let_go {  // before the writers are joined, whatever fails
    recording_client& c;
    ~let_go() { c.let_go(); }
  } guard{*slow};
  std::atomic<int> taken{0};
  fanout_writers w(1, 150, [&] { ++taken; });  // a backlog: more than 150 bytes not taken
  EXPECT_FALSE(w.backlog());
  slow->hold();
  w.stage(0, slow);
  w.submit(200);
  ASSERT_TRUE(slow->wait_for(1));
  EXPECT_FALSE(w.backlog()) << "taken: the hub may read the next one";
  EXPECT_EQ(taken.load(), 1) << "the writer said it took what held the tail";
  // The writer is inside slow's flush: the next read's flushes are staged
  // and submitted without waiting for it, and run once it is done, in order.
  auto t0 = std::chrono::steady_clock::now();
  w.stage(1, other);
  w.stage(0, slow);
  w.submit(100);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s) << "submit waits for no socket";
  EXPECT_FALSE(w.backlog()) << "100 bytes not taken: under the bound, the tail reads on";
  w.stage(1, other);
  w.submit(100);
  EXPECT_TRUE(w.backlog()) << "200 bytes not taken while the writer writes: the tail waits";
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(other->flushes(), 0) << "one writer: what follows a flush waits for it";
  EXPECT_TRUE(w.backlog());
  slow->let_go();
  EXPECT_TRUE(other->wait_for(2));
  EXPECT_TRUE(slow->wait_for(2));
  for (int i = 0; i < 1000 && w.backlog(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(w.backlog()) << "taken";
  EXPECT_EQ(taken.load(), 2) << "the two later reads were taken together, and held the tail";
}

TEST(FanoutWriters, StoppingWithFlushesQueuedEndsTheWriters) {
  auto held = std::make_shared<recording_client>();
  held->hold();
  {
    fanout_writers w(2, 1 << 20, {});
    w.stage(0, held);
    w.submit(100);
    if (!held->wait_for(1)) {
      held->let_go();
      FAIL() << "the writer never flushed";
    }
    for (int i = 0; i < 100; ++i) w.stage(0, held);
    w.submit(100);
    w.request_stop();
    held->let_go();
  }  // joins once the flush under way returns; the queued ones are dropped
  EXPECT_EQ(held->flushes(), 1) << "the writer stopped after the flush under way, without running the queued ones";
  EXPECT_EQ(fanout_writers(0, 0, {}).threads(), 1u) << "at least one writer";
  EXPECT_GE(fanout_writers::default_threads(), 1u);
  EXPECT_LE(fanout_writers::default_threads(), 4u);
}

}  // namespace
}  // namespace evpipe::read
