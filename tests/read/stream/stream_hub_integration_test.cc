// read/stream/stream_hub in process, against PostgreSQL, with a client whose
// queue is never written out: what the hub charges a client for what its
// queue keeps alive (docs/read.md, "Slow clients").
#include "read/stream/stream_hub.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>
#include <string>

#include "io/postgres/pg_connection.h"
#include "io/postgres/schema_check.h"
#include "read/stream/stream_frames.h"
#include "tests/support/harness.h"

namespace evpipe::read {
namespace {

using namespace std::chrono_literals;
using testing::test_db;

// A client that writes nothing until told to: everything it is handed stays
// queued; once draining, what it is handed is written at once.
class stuck_client final : public stream_client {
 public:
  frame_format format() const override { return frame_format::websocket; }
  void on_events(const std::shared_ptr<const event_frames>& frames, size_t first, size_t last) override {
    queue_.push_events(frames, frame_format::websocket, first, last);
    own_bytes_ += frames->span(frame_format::websocket, first, last).size();
    {
      std::lock_guard lock(mu_);
      for (size_t i = first; i < last; ++i) seen_.push_back(frames->pos(i));
    }
    events_ += last - first;
    if (draining_) drain();
  }
  void on_caught_up(position) override { caught_up_ = true; }
  void on_error(std::string_view) override {}
  size_t queued_bytes() const override { return queue_.bytes(); }
  // A message of `bytes` of its own, queued (like a ping the client has not read).
  void hold(size_t bytes) { queue_.push_message(std::string(bytes, 'x')); }
  // Writes everything queued, and from now on everything handed to it (the
  // test thread's first drain races nothing: the queue is thread-safe).
  void drain() {
    std::vector<frame_queue::item> items;
    queue_.take(items);
    size_t charged = 0;
    for (const auto& it : items) charged += it.charge;
    queue_.sent(charged);
    draining_ = true;
  }
  std::vector<position> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }
  std::atomic<bool> caught_up_{false}, draining_{false};
  std::atomic<size_t> own_bytes_{0}, events_{0};

 private:
  frame_queue queue_;
  std::mutex mu_;
  std::vector<position> seen_;
};

class StreamHub : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) GTEST_SKIP() << "EVPIPE_TEST_DSN not set";
    ASSERT_TRUE(conn.connect(db.dsn(), "hub-test").ok);
    ASSERT_EQ(io::migrate_schema(conn, ""), "");
    o.dsn = db.dsn();
    o.poll_ms = 5;
    o.max_client_buffer_bytes = 64 * 1024;
  }
  // One transaction of 2,000 rows of about 300 bytes, one in 20 of kind
  // "rare": about 35 KB of a rare-kind client's own frames, 700 KB a read.
  void insert_2000() {
    db.exec("INSERT INTO events_mirror (topic, payload) SELECT 't/hub', jsonb_build_object('idempotency_key', 'h-' || g, "
            "'kind', CASE WHEN g % 20 = 0 THEN 'rare' ELSE 'common' END, 'text', repeat('x', 200)) "
            "FROM generate_series(1, 2000) g");
  }
  // A started hub and a client of kind "rare" (of every kind: `every`),
  // subscribed from now.
  std::shared_ptr<stuck_client> subscribe_rare(stream_hub& hub, bool every = false) {
    hub.start();
    auto client = std::make_shared<stuck_client>();
    stream_filter f;
    if (!every) f.any_of = {row_clause{{}, {"rare"}}};
    hub.add(client, f, {});
    EXPECT_TRUE(testing::eventually([&] { return client->caught_up_.load(); }));
    return client;
  }
  test_db db;
  io::pg_connection conn;
  stream_hub_options o;
};

// A filtered client's few rows of a read keep the whole read's block alive,
// and it is charged the block: one that does not read falls behind once the
// reads it holds pass its limit, though its own rows never would. Charged
// only its own rows, as before, it stayed live holding 20 times them.
TEST_F(StreamHub, AFilteredClientIsChargedTheReadsItsRowsKeepAlive) {
  stream_hub hub(o);
  auto client = subscribe_rare(hub);
  // The empty queue takes the read whole (the limit plus one read), and is
  // charged all of it.
  insert_2000();
  ASSERT_TRUE(testing::eventually([&] { return client->events_.load() == 100; })) << client->events_.load();
  EXPECT_LT(client->own_bytes_.load(), o.max_client_buffer_bytes);
  EXPECT_GT(client->queued_bytes(), 10 * client->own_bytes_.load());
  // Over its limit: it goes back to the table, and gets nothing more while
  // its queue holds that much.
  EXPECT_TRUE(testing::eventually([&] { return hub.probe().fell_behind.load() >= 1; }))
      << "queued " << client->queued_bytes() << " bytes, own rows " << client->own_bytes_.load();
  EXPECT_EQ(client->events_.load(), 100u);
  hub.stop();
}

// A filtered client whose queue holds something (under its limit, over half
// of it: catch-up waits) is handed a read whose block does not fit: it takes
// none of its rows and falls behind from the row before its first; once it
// writes, the table gives it each of its rows once, in position order.
TEST_F(StreamHub, AFilteredClientThatFellBehindGetsEachOfItsRowsOnceFromTheTable) {
  stream_hub hub(o);
  auto client = subscribe_rare(hub);
  client->hold(40 * 1024);
  insert_2000();
  ASSERT_TRUE(testing::eventually([&] { return hub.probe().fell_behind.load() >= 1; }));
  EXPECT_EQ(client->events_.load(), 0u);
  client->drain();
  ASSERT_TRUE(testing::eventually([&] { return client->events_.load() >= 100; })) << client->events_.load();
  std::vector<position> expected;
  for (const auto& row : db.column("SELECT tx::text || ' ' || id FROM events_mirror WHERE payload->>'kind' = 'rare' ORDER BY tx, id")) {
    expected.push_back({std::stoull(row.substr(0, row.find(' '))), std::stoll(row.substr(row.find(' ') + 1))});
  }
  EXPECT_EQ(client->seen(), expected);
  hub.stop();
}

// A client without a filter whose queue is empty takes a read larger than
// its limit whole (before, the rows that fit, about a tenth here, and then it
// fell behind on every such read), and falls behind only after it.
TEST_F(StreamHub, AnEmptyQueueTakesAReadLargerThanTheLimitWhole) {
  stream_hub hub(o);
  auto client = subscribe_rare(hub, true);
  insert_2000();
  ASSERT_TRUE(testing::eventually([&] { return client->events_.load() >= 2000; })) << client->events_.load();
  EXPECT_EQ(client->events_.load(), 2000u);
  EXPECT_GT(client->queued_bytes(), o.max_client_buffer_bytes);
  hub.stop();
}

}  // namespace
}  // namespace evpipe::read
