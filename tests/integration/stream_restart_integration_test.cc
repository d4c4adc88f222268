// A stream client resumes across restarts of evpipe (read/stream) with no gap
// and no repeat: while two evpipe processes keep committing events to one
// table, the one that serves the stream is SIGKILLed and started again three
// times; its WebSocket (or SSE) client, cut off each time, reconnects with the
// last position it was given (`since`, or `Last-Event-ID`) and, over all its
// connections, gets every row of the table exactly once, in position order.
// Rows written while the stream's process is down (by the other process) are
// among them; rows of the transactions the kill cut off were never committed,
// so the client is compared with the table, not with what was sent.

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "tests/integration/stream_ws_client.h"
#include "tests/support/harness.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

const std::string start_position = "1-00000000000000000000000000000000";

// What a client saw over all its connections; shared between the reader's
// thread and the test.
struct delivered {
  std::mutex mutex;
  std::vector<std::string> keys;     // events, in the order received
  std::string last = start_position;  // the position to resume from
  std::string failure;               // the first broken promise ("" while none)
  std::atomic<size_t> count{0};
  std::atomic<int> connections{0};
  std::atomic<size_t> target{SIZE_MAX};  // stop once this many events came
  std::atomic<bool> stop{false};

  // An event at `position`: it must come after everything before it.
  void event(const std::string& position, const std::string& key) {
    std::lock_guard lock(mutex);
    if (position <= last && failure.empty()) {
      failure = "event " + position + " after " + last + " (repeat or out of order)";
    }
    last = position;
    keys.push_back(key);
    count = keys.size();
  }
  // caught_up at `position` (the tail's): resuming from it must not go back.
  void caught_up(const std::string& position) {
    std::lock_guard lock(mutex);
    if (position < last && failure.empty()) failure = "caught_up " + position + " before " + last;
    last = position;
  }
  void fail(const std::string& what) {
    std::lock_guard lock(mutex);
    if (failure.empty()) failure = what;
  }
  std::string resume_from() {
    std::lock_guard lock(mutex);
    return last;
  }
  [[nodiscard]] bool done() const { return stop || count >= target; }
};

// A WebSocket client that reconnects whenever its connection ends (evpipe
// killed) or stays silent for 3 s, each time subscribing from its last position.
void read_ws(uint16_t port, delivered& d) {
  while (!d.done()) {
    std::unique_ptr<ws_client> c;
    try {
      c = std::make_unique<ws_client>(port);
      c->send(R"({"type":"subscribe","since":")" + d.resume_from() + "\"}");
    } catch (const std::exception&) {  // evpipe is down, or not listening yet
      std::this_thread::sleep_for(20ms);
      continue;
    }
    ++d.connections;
    while (!d.done()) {
      auto m = c->next(3s);
      if (!m) break;  // closed (or silent; a timed-out client is not reusable)
      std::string type = field(*m, "type");
      if (type == "event") {
        d.event(field(*m, "position"), key_in(*m));
      } else if (type == "caught_up") {
        d.caught_up(field(*m, "position"));
      } else {
        d.fail("unexpected message " + *m);
      }
    }
  }
}

// The same with Server-Sent Events, resuming with Last-Event-ID.
void read_sse(uint16_t port, delivered& d) {
  while (!d.done()) {
    std::unique_ptr<sse_client> c;
    try {
      c = std::make_unique<sse_client>(port, "",
                                       "Accept: text/event-stream\r\nLast-Event-ID: " + d.resume_from() + "\r\n");
    } catch (const std::exception&) {
      std::this_thread::sleep_for(20ms);
      continue;
    }
    std::string head = c->head(3s);
    if (head.find("200 OK") == std::string::npos) {
      // Connected while the killed process's socket was still closing, or refused: try again.
      std::this_thread::sleep_for(20ms);
      continue;
    }
    ++d.connections;
    while (!d.done()) {
      auto f = c->next(3s);
      if (!f) break;
      if (f->event == "event") {
        d.event(f->id, key_in(f->data));
      } else if (f->event == "caught_up") {
        d.caught_up(f->id);
      } else {
        d.fail("unexpected frame " + f->event + ": " + f->data);
      }
    }
  }
}

// Sends events keyed `prefix-<n>` to one evpipe, 20 at a time, each chunk
// acknowledged before the next; when the connection breaks (its evpipe was
// killed) it connects again and goes on with new keys. The events of a
// broken chunk may or may not be committed: the test compares what the
// client got with the table, not with what was sent. Bounded in count.
struct producer {
  std::atomic<uint64_t> acked{0};
  std::atomic<bool> stop{false};
  void run(uint16_t port, const std::string& prefix, uint64_t max_events) {
    uint64_t next = 0;
    while (!stop && next < max_events) {
      std::unique_ptr<ndjson_client> p;
      try {
        p = std::make_unique<ndjson_client>(port);
      } catch (const std::exception&) {
        std::this_thread::sleep_for(20ms);
        continue;
      }
      uint64_t sent_here = 0;
      while (!stop && next < max_events) {
        std::string data;
        for (int j = 0; j < 20; ++j) data += valid_event(prefix + "-" + std::to_string(next++)) + "\n";
        try {
          p->send_all(data);
        } catch (const std::exception&) {
          break;
        }
        sent_here += 20;
        uint64_t got = p->read_acks_until(sent_here, 10s);
        if (got < sent_here) break;  // the connection ended
        acked += 20;
        std::this_thread::sleep_for(5ms);
      }
    }
  }
};

class StreamRestart : public TcpPipeline {
 protected:
  void SetUp() override {
    TcpPipeline::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    tcp_port = free_port();
    stream_port = free_port();
    tuning t;
    t.linger_ms = 1;
    t.tcp_extra = "\n[stream]\nlisten = \"127.0.0.1:" + std::to_string(stream_port) + "\"\npoll_ms = 5\n";
    evpipe = std::make_unique<evpipe_process>(config_for(db, tcp_port, free_port(), t), "stream_restart");
    ASSERT_EQ(evpipe->run_command("migrate"), 0) << evpipe->log("migrate.log");
    evpipe->start(tcp_port);
    // The second process writes the same table and serves no stream.
    second_port = free_port();
    tuning t2;
    t2.linger_ms = 1;
    t2.tcp_extra = "\n[stream]\nlisten = \"\"\n";
    second = std::make_unique<evpipe_process>(config_for(db, second_port, free_port(), t2), "stream_restart_second");
    second->start(second_port);
  }

  // The scenario for one kind of client (`reader`): it reads from the start
  // of the table while both processes write; the stream's process is killed
  // and restarted three times, each time once the client has read at least
  // 200 more events. In the end the client must hold exactly the table.
  void resume_across_restarts(const std::function<void(uint16_t, delivered&)>& reader) {
    delivered d;
    producer one, two;
    std::thread w1([&] { one.run(tcp_port, "one", 30000); });
    std::thread w2([&] { two.run(second_port, "two", 30000); });
    std::thread client([&] { reader(stream_port, d); });
    struct join_all {  // the threads end on every path out of the test
      std::vector<std::thread*> threads;
      std::function<void()> stop;
      ~join_all() {
        stop();
        for (auto* t : threads) t->join();
      }
    } joiner{{&w1, &w2, &client}, [&] {
      one.stop = two.stop = true;
      d.stop = true;
    }};

    size_t base = 0;
    for (int kill = 0; kill < 3; ++kill) {
      ASSERT_TRUE(eventually([&] { return d.count >= base + 200; }, 60s))
          << "restart " << kill << ": " << d.count << " events" << evpipe->log();
      int connections_before = d.connections;
      evpipe->kill(SIGKILL);
      // Down for a while: the second process goes on committing.
      uint64_t acked_at_kill = two.acked;
      std::this_thread::sleep_for(500ms);
      EXPECT_GT(two.acked, acked_at_kill) << "the second process committed nothing while the first was down";
      evpipe->start(tcp_port);
      // The client comes back on a new connection (and reads on).
      ASSERT_TRUE(eventually([&] { return d.connections > connections_before; }, 60s)) << evpipe->log();
      base = d.count;
    }
    ASSERT_TRUE(eventually([&] { return d.count >= base + 200; }, 60s)) << d.count << evpipe->log();
    one.stop = two.stop = true;
    w1.join();
    w2.join();
    joiner.threads = {&client};

    // Every row is committed (acks came after commits; broken chunks ended
    // with their process). All of them, in position order, once the horizon
    // has passed them all (nothing is open any more).
    long total = db.count("SELECT count(*) FROM events_mirror");
    ASSERT_GE(total, static_cast<long>(one.acked + two.acked));
    auto expected = db.column("SELECT payload->>'idempotency_key' FROM events_mirror ORDER BY tx, id");
    ASSERT_EQ(expected.size(), static_cast<size_t>(total));
    d.target = expected.size();
    ASSERT_TRUE(eventually([&] { return d.count >= expected.size(); }, 60s))
        << d.count << " of " << expected.size() << " events";
    d.stop = true;
    client.join();
    joiner.threads.clear();

    std::lock_guard lock(d.mutex);
    EXPECT_EQ(d.failure, "");
    std::set<std::string> unique(d.keys.begin(), d.keys.end());
    EXPECT_EQ(unique.size(), d.keys.size()) << "an event was delivered twice";
    EXPECT_EQ(d.keys.size(), expected.size());
    EXPECT_TRUE(d.keys == expected) << "the events differ from the table's rows in position order";
    EXPECT_GE(d.connections, 4);
    // Both processes' rows, including rows written after each restart.
    EXPECT_GT(db.count("SELECT count(*) FROM events_mirror WHERE payload->>'idempotency_key' LIKE 'one-%'"), 0);
    EXPECT_GT(db.count("SELECT count(*) FROM events_mirror WHERE payload->>'idempotency_key' LIKE 'two-%'"), 0);
  }

  uint16_t tcp_port = 0, stream_port = 0, second_port = 0;
  std::unique_ptr<evpipe_process> evpipe, second;
};

TEST_F(StreamRestart, AWebSocketClientResumesAcrossSigkilledRestartsWithNoGapAndNoRepeat) {
  resume_across_restarts(read_ws);
}

TEST_F(StreamRestart, AnSseClientResumesWithLastEventIdAcrossSigkilledRestartsWithNoGapAndNoRepeat) {
  resume_across_restarts(read_sse);
}

}  // namespace
}  // namespace evpipe::testing
