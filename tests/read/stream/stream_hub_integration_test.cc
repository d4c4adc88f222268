// read/stream/stream_hub in process, against PostgreSQL, with a client whose
// queue is never written out: what the hub charges a client for what its
// queue keeps alive (docs/read.md, "Slow clients").
#include "read/stream/stream_hub.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>
#include <string>
#include <thread>

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
    ++handed_;
    max_handed_bytes_ = std::max<size_t>(max_handed_bytes_, frames->span(frame_format::websocket, first, last).size());
    if (draining_) drain();
  }
  void on_caught_up(position) override {
    handed_at_caught_up_ = handed_.load();
    caught_up_ = true;
  }
  void on_error(std::string_view message) override {
    std::lock_guard lock(mu_);
    error_ = std::string(message);
  }
  std::string error() {
    std::lock_guard lock(mu_);
    return error_;
  }
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
  // on_events calls (one per catch-up page it takes rows of), and how many
  // before caught_up; the most bytes handed in one call.
  std::atomic<int> handed_{0}, handed_at_caught_up_{0};
  std::atomic<size_t> max_handed_bytes_{0};

 private:
  frame_queue queue_;
  std::mutex mu_;
  std::vector<position> seen_;
  std::string error_;
};

// A client whose flush (its socket write, on a fan-out writer) can be held,
// as a full socket would hold a blocking write: counts what it is handed and
// on which threads.
class held_flush_client final : public stream_client {
 public:
  frame_format format() const override { return frame_format::websocket; }
  void on_events(const std::shared_ptr<const event_frames>&, size_t first, size_t last) override {
    std::lock_guard lock(mu_);
    events_ += last - first;
    ++handed_;
    hub_thread_ = std::this_thread::get_id();
    const auto now = std::chrono::steady_clock::now();
    if (last_handed_ != std::chrono::steady_clock::time_point{}) longest_gap_ = std::max(longest_gap_, now - last_handed_);
    last_handed_ = now;
  }
  // The longest time without an on_events call since the last call of this,
  // the one still going on included.
  std::chrono::steady_clock::duration take_longest_gap() {
    std::lock_guard lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    auto gap = std::exchange(longest_gap_, {});
    if (last_handed_ != std::chrono::steady_clock::time_point{}) gap = std::max(gap, now - last_handed_);
    return gap;
  }
  void flush() override {
    std::unique_lock lock(mu_);
    ++flushes_;
    flush_thread_ = std::this_thread::get_id();
    cv_.wait(lock, [&] { return !held_; });
  }
  void on_caught_up(position) override { caught_up_ = true; }
  void on_error(std::string_view) override {}
  size_t queued_bytes() const override { return 0; }
  void hold(bool h) {
    std::lock_guard lock(mu_);
    held_ = h;
    cv_.notify_all();
  }
  size_t events() {
    std::lock_guard lock(mu_);
    return events_;
  }
  int flushes() {
    std::lock_guard lock(mu_);
    return flushes_;
  }
  // on_events calls: for a client without a filter, one per read with rows.
  int handed() {
    std::lock_guard lock(mu_);
    return handed_;
  }
  bool flushed_off_the_hub_thread() {
    std::lock_guard lock(mu_);
    return flush_thread_ != std::thread::id{} && flush_thread_ != hub_thread_;
  }
  std::atomic<bool> caught_up_{false};

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t events_ = 0;
  int flushes_ = 0;
  int handed_ = 0;
  bool held_ = false;
  std::thread::id hub_thread_, flush_thread_;
  std::chrono::steady_clock::time_point last_handed_{};
  std::chrono::steady_clock::duration longest_gap_{};
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
  // Until `rows` rows of the table are below the horizon (a transaction of
  // a test running beside this one can hold it back).
  void wait_past_horizon(size_t rows) {
    ASSERT_TRUE(testing::eventually([&] {
      return db.column("SELECT count(*) FROM events_mirror WHERE tx < pg_snapshot_xmin(pg_current_snapshot())")
                 .at(0) == std::to_string(rows);
    }));
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

// The tail reads only so far ahead of the fan-out writers: while a writer is
// still writing one read (its flush held, as a full socket would hold a
// write) and the next read, over a quarter of the client's limit, is queued
// for it, a third commit stays in the table, and it is read once the writer
// has taken the queued one. With two writers, the one client's writer alone
// holds the tail (the bound is a writer's, not the writers' together). The
// client's write is not the hub's: flush() runs on the writer's thread.
TEST_F(StreamHub, TheTailReadsOnlySoFarAheadOfTheWriters) {
  o.writer_threads = 2;
  stream_hub hub(o);
  hub.start();
  auto client = std::make_shared<held_flush_client>();
  struct let_go {  // before the hub stops, whatever fails
    held_flush_client& c;
    ~let_go() { c.hold(false); }
  } guard{*client};
  hub.add(client, {}, {});
  ASSERT_TRUE(testing::eventually([&] { return client->caught_up_.load(); }, 10s));
  client->hold(true);
  auto insert = [&](int from) {
    // 10 rows of about 2 KB: a read of more than a quarter of the 64 KiB limit.
    db.exec("INSERT INTO events_mirror (topic, payload) SELECT 't/hub', jsonb_build_object('idempotency_key', 'w-' || g, "
            "'text', repeat('x', 2000)) FROM generate_series(" + std::to_string(from) + ", " + std::to_string(from + 9) +
            ") g");
  };
  insert(1);
  ASSERT_TRUE(testing::eventually([&] { return client->events() == 10 && client->flushes() == 1; }, 10s))
      << client->events() << " events, " << client->flushes() << " flushes";
  EXPECT_TRUE(client->flushed_off_the_hub_thread());
  insert(11);  // read while the writer is in the first read's flush
  ASSERT_TRUE(testing::eventually([&] { return client->events() == 20; }, 10s)) << client->events();
  insert(21);  // waits: the second read's flush is not taken yet
  std::this_thread::sleep_for(300ms);  // 60 times poll_ms (the hub looks again at least every 50 ms)
  EXPECT_EQ(client->events(), 20u) << "the tail read on while the writer had a read not yet taken";
  EXPECT_EQ(hub.probe().writer_waits.load(), 1u) << "one wait, however many times the hub looked";
  client->hold(false);
  EXPECT_TRUE(testing::eventually([&] { return client->events() == 30 && client->flushes() == 3; }, 10s))
      << client->events() << " events, " << client->flushes() << " flushes";
  hub.stop();
}

// Noted commits start reads no more often than [stream]
// max_fanout_writes_per_s allows for the live clients (commit_read_spacing):
// with one live client and 20 writes a second, reads that hand it rows at
// least 50 ms apart, so 100 commits noted over about half a second are read
// in a dozen reads, not one each (without the pacing: 100, tried), and every
// row still comes after its commit's read, not with the poll a minute later.
// (10 s allows for other tests' open transactions, which hold the horizon.)
TEST_F(StreamHub, NotedCommitsAreReadNoMoreOftenThanTheFanoutWritesAllow) {
  EXPECT_EQ(commit_read_spacing(1, 20, 60'000), 50ms);
  EXPECT_EQ(commit_read_spacing(100, 20'000, 20), 5ms);
  EXPECT_EQ(commit_read_spacing(1, 20'000, 20), 50us);
  EXPECT_EQ(commit_read_spacing(1'000, 20'000, 20), 20ms) << "never past poll_ms";
  EXPECT_EQ(commit_read_spacing(100, 0, 20), 0us) << "0: no pacing";
  EXPECT_EQ(commit_read_spacing(0, 20'000, 20), 0us);

  o.poll_ms = 60'000;  // the poll stays out of it (in process: the config allows at most 10 s)
  o.max_fanout_writes_per_s = 20;
  stream_hub hub(o);
  hub.start();
  auto client = std::make_shared<held_flush_client>();
  hub.add(client, {}, {});
  ASSERT_TRUE(testing::eventually([&] { return client->caught_up_.load(); }, 10s));
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) {
    db.exec("INSERT INTO events_mirror (topic, payload) VALUES ('t/hub', jsonb_build_object('idempotency_key', 'p-" +
            std::to_string(i) + "'))");
    hub.note_commit(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count());
    std::this_thread::sleep_for(5ms);
  }
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  EXPECT_TRUE(testing::eventually([&] { return client->events() == 100; }, 10s))
      << client->events() << " of 100 events within 10 s of the last commit";
  const int reads = client->handed();
  hub.stop();
  // Reads with rows at least 50 ms apart, all between the first commit and
  // the last one's read: one per 50 ms of the commits' time (at least 500 ms:
  // 100 sleeps of 5 ms), the first, the last, and one for a read that found
  // only part of the last rows.
  const int bound = static_cast<int>(took / 50ms) + 3;
  EXPECT_LE(reads, bound) << reads << " reads of 100 commits over " << took.count() << " ms";
}

// Retention drops rows after a client's position while it catches up (after
// its subscribe was checked): the client is told, with what went and where
// to resume, before it is handed any row of the next page (the check and the
// read share one transaction), instead of the rows around the gap as if whole.
TEST_F(StreamHub, RowsRetentionDropsWhileAClientCatchesUpAreSaid) {
  insert_2000();
  auto position_at = [&](int n) {  // the n-th row in position order, from 1
    const auto row = db.column("SELECT tx::text || ' ' || id FROM events_mirror ORDER BY tx, id OFFSET " +
                               std::to_string(n - 1) + " LIMIT 1").at(0);
    return position{std::stoull(row.substr(0, row.find(' '))), std::stoll(row.substr(row.find(' ') + 1))};
  };
  const position from = position_at(100), last_dropped = position_at(1500);
  stream_hub hub(o);
  hub.start();
  auto client = std::make_shared<stuck_client>();
  client->hold(40 * 1024);  // over half its limit: catch-up waits for it
  hub.add(client, stream_filter{}, stream_since{stream_since::kind::after_position, from, ""});
  ASSERT_TRUE(testing::eventually([&] { return hub.probe().catch_ups.load() >= 1; }));
  std::this_thread::sleep_for(50ms);  // its start (and its check) behind it
  EXPECT_EQ(client->events_.load(), 0u);
  // "Retention" takes rows 1000 to 1500, as the partition maintainer records it.
  db.exec("WITH d AS (DELETE FROM events_mirror WHERE (tx, id) IN (SELECT tx, id FROM events_mirror ORDER BY tx, id "
          "OFFSET 999 LIMIT 501) RETURNING 1) INSERT INTO evpipe_retention_marks (table_name, dropped, rows, last_tx, "
          "last_id) VALUES ('events_mirror', 'events_mirror_p20261020', (SELECT count(*) FROM d), '" +
          std::to_string(last_dropped.tx) + "', " + std::to_string(last_dropped.id) + ")");
  client->drain();
  ASSERT_TRUE(testing::eventually([&] { return !client->error().empty(); })) << client->events_.load();
  EXPECT_NE(client->error().find("events after position " + encode(from) + " are gone: [storage] retention dropped "
                                 "them (501 rows, events_mirror_p20261020, at 20"),
            std::string::npos)
      << client->error();
  EXPECT_NE(client->error().find("), up to position " + encode(last_dropped) + ". Resume from"), std::string::npos)
      << client->error();
  std::this_thread::sleep_for(100ms);  // rounds after the error
  EXPECT_EQ(client->events_.load(), 0u) << "nothing handed after the error: the check comes before the page";
  EXPECT_FALSE(client->caught_up_.load()) << "never told it is whole";
  hub.stop();
}

// Catch-up pages (docs/read.md, "Catch-up pages grow"): a client that takes
// full pages reads twice as many rows each time (500, 1,000, ..., up to a
// quarter of its queue's limit), so 20,000 rows come in a handful of reads,
// each a transaction of its own, not 500 at a time (41): with no other
// client, and with a live one while the tail is quiet. While the tail hands
// a live client rows (a commit every few milliseconds), the pages stay at
// 500: the tail waits for each. Every row comes once, in order, and the
// client is then live.
TEST_F(StreamHub, CatchUpPagesGrowUnlessTheTailIsHandingLiveClientsRows) {
  o.max_client_buffer_bytes = 8u << 20;
  db.exec("INSERT INTO events_mirror (topic, payload) SELECT 't/hub', jsonb_build_object('idempotency_key', 'p-' || g, "
          "'text', repeat('x', 200)) FROM generate_series(1, 20000) g");
  wait_past_horizon(20000);
  enum class live_client : uint8_t { none, idle, fed };
  bool tail_stalled = false;  // the fed client's rows stopped coming for a while (see below)
  auto catch_up_reads = [&](live_client other) {
    stream_hub hub(o);
    hub.start();
    auto live = std::make_shared<held_flush_client>();
    std::atomic<bool> feeding{other == live_client::fed};
    std::thread feeder;
    if (other != live_client::none) {
      hub.add(live, stream_filter{}, {});
      EXPECT_TRUE(testing::eventually([&] { return live->caught_up_.load(); }));
    }
    if (other == live_client::fed) {
      feeder = std::thread([&] {
        io::pg_connection ins;
        if (!ins.connect(db.dsn(), "hub-test-feeder").ok) return;
        for (int i = 0; feeding && i < 6000; ++i) {
          (void)ins.exec("INSERT INTO events_mirror (topic, payload) VALUES ('t/hub', '{\"fed\": true}')");
          std::this_thread::sleep_for(5ms);
        }
      });
      EXPECT_TRUE(testing::eventually([&] { return live->events() > 0; }));
      (void)live->take_longest_gap();
    }
    auto behind = std::make_shared<stuck_client>();
    behind->drain();  // writes everything at once: always room
    hub.add(behind, stream_filter{}, stream_since{stream_since::kind::after_position, position::start(), ""});
    EXPECT_TRUE(testing::eventually([&] { return behind->caught_up_.load(); }, 30s)) << behind->events_.load();
    // A transaction of a test running beside this one can hold the horizon,
    // and with it the tail's rows, back for over the second that makes the
    // tail count as busy: then pages rightly grow.
    if (other == live_client::fed) tail_stalled = live->take_longest_gap() > 800ms;
    feeding = false;
    if (feeder.joinable()) feeder.join();
    hub.stop();
    const auto seen = behind->seen();
    EXPECT_GE(seen.size(), 20000u);
    EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()) &&
                std::adjacent_find(seen.begin(), seen.end()) == seen.end());
    return behind->handed_at_caught_up_.load();
  };
  EXPECT_LE(catch_up_reads(live_client::none), 8)
      << "pages of 500, 1,000, 2,000, 4,000, then about 6,300 (2 MiB of ~330-byte rows)";
  EXPECT_LE(catch_up_reads(live_client::idle), 8) << "a live client with nothing to be handed waits for nothing";
  const int fed = catch_up_reads(live_client::fed);
  if (tail_stalled) GTEST_SKIP() << "the tail's rows stopped for over 800 ms (the horizon held by another session)";
  EXPECT_GE(fed, 40) << "a live client's tail waits for each page: they stay at 500 rows";
}

// A grown page is sized by the rows before it: rows far larger than those
// are left for the next page once the page holds a quarter of the client's
// limit, and so are pages of large rows. Without that cap, the page of
// 4,000 rows after 3,500 small ones would hold 1,500 small and all 300 large
// rows (some 6.5 MB, over three times the cap) in one block handed to the
// client at once.
TEST_F(StreamHub, AGrownCatchUpPageStopsAtAQuarterOfTheClientsLimitWhenRowsGrow) {
  o.max_client_buffer_bytes = 8u << 20;
  db.exec("INSERT INTO events_mirror (topic, payload) SELECT 't/hub', jsonb_build_object('idempotency_key', 's-' || g, "
          "'text', repeat('x', 200)) FROM generate_series(1, 5000) g");
  db.exec("INSERT INTO events_mirror (topic, payload) SELECT 't/hub', jsonb_build_object('idempotency_key', 'l-' || g, "
          "'text', repeat('y', 20000)) FROM generate_series(1, 300) g");
  wait_past_horizon(5300);
  stream_hub hub(o);
  hub.start();
  auto behind = std::make_shared<stuck_client>();
  behind->drain();
  hub.add(behind, stream_filter{}, stream_since{stream_since::kind::after_position, position::start(), ""});
  ASSERT_TRUE(testing::eventually([&] { return behind->caught_up_.load(); }, 30s)) << behind->events_.load();
  hub.stop();
  const auto seen = behind->seen();
  EXPECT_EQ(seen.size(), 5300u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()) && std::adjacent_find(seen.begin(), seen.end()) == seen.end());
  // A quarter of the limit, plus the row that passed it.
  EXPECT_LE(behind->max_handed_bytes_.load(), (o.max_client_buffer_bytes / 4) + 21'000);
}

}  // namespace
}  // namespace evpipe::read
