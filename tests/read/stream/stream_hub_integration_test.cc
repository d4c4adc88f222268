// read/stream/stream_hub in process, against PostgreSQL, with a client whose
// queue is never written out: what the hub charges a client for what its
// queue keeps alive (docs/read.md, "Slow clients").
#include "read/stream/stream_hub.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "io/postgres/pg_connection.h"
#include "io/postgres/schema_check.h"
#include "read/stream/stream_frames.h"
#include "tests/support/harness.h"

namespace evpipe::read {
namespace {

using namespace std::chrono_literals;
using testing::test_db;

// A client that never writes: everything it is handed stays queued.
class stuck_client final : public stream_client {
 public:
  frame_format format() const override { return frame_format::websocket; }
  void on_events(const std::shared_ptr<const event_frames>& frames, size_t first, size_t last) override {
    queue_.push_events(frames, frame_format::websocket, first, last);
    own_bytes_ += frames->span(frame_format::websocket, first, last).size();
    events_ += last - first;
  }
  void on_caught_up(position) override { caught_up_ = true; }
  void on_error(std::string_view) override {}
  size_t queued_bytes() const override { return queue_.bytes(); }
  std::atomic<bool> caught_up_{false};
  std::atomic<size_t> own_bytes_{0}, events_{0};

 private:
  frame_queue queue_;
};

// A filtered client's few rows of a read keep the whole read's block alive,
// and it is charged the block: one that does not read falls behind once the
// reads it holds pass its limit, though its own rows never would. Charged
// only its own rows, as before, it stayed live holding 20 times them.
TEST(StreamHub, AFilteredClientIsChargedTheReadsItsRowsKeepAlive) {
  test_db db;
  if (!db.available()) GTEST_SKIP() << "EVPIPE_TEST_DSN not set";
  io::pg_connection conn;
  ASSERT_TRUE(conn.connect(db.dsn(), "hub-test").ok);
  ASSERT_EQ(io::migrate_schema(conn, ""), "");

  stream_hub_options o;
  o.dsn = db.dsn();
  o.poll_ms = 5;
  o.max_client_buffer_bytes = 64 * 1024;
  stream_hub hub(o);
  hub.start();
  auto client = std::make_shared<stuck_client>();
  stream_filter f;
  f.kinds = {"rare"};
  hub.add(client, f, {});
  ASSERT_TRUE(testing::eventually([&] { return client->caught_up_.load(); }, 30s));

  // One transaction of 2,000 rows of about 300 bytes, one in 20 of the
  // client's kind: its own frames come to about 35 KB, the read's block to
  // about 700 KB. The empty queue takes the read whole (the limit plus one
  // read), and is charged all of it.
  db.exec("INSERT INTO events_mirror (topic, payload) SELECT 't/hub', jsonb_build_object('idempotency_key', 'h-' || g, "
          "'kind', CASE WHEN g % 20 = 0 THEN 'rare' ELSE 'common' END, 'text', repeat('x', 200)) "
          "FROM generate_series(1, 2000) g");
  ASSERT_TRUE(testing::eventually([&] { return client->events_.load() == 100; }, 30s)) << client->events_.load();
  EXPECT_LT(client->own_bytes_.load(), o.max_client_buffer_bytes);
  EXPECT_GT(client->queued_bytes(), 10 * client->own_bytes_.load());
  // Over its limit: it goes back to the table, and gets nothing more while
  // its queue holds that much.
  EXPECT_TRUE(testing::eventually([&] { return hub.probe().fell_behind.load() >= 1; }, 30s))
      << "queued " << client->queued_bytes() << " bytes, own rows " << client->own_bytes_.load();
  EXPECT_EQ(client->events_.load(), 100u);
  hub.stop();
}

}  // namespace
}  // namespace evpipe::read
