#pragma once
// The scene of the "room bell" tests of the MQTT and NATS sources (the TCP
// source has its own, tcp_pipeline_integration_test.cc): both shards' queues
// full behind commits that wait, a source paused for room, and nothing of
// its own in flight whose ack could wake it. Only the shard's ring
// (router::wait_for_room) can then wake it before its 1 s back-up timer does.
//
// The commits are held by rows another session inserted and has not
// committed, not by a table lock: the flood's first events have those keys,
// so each shard's first COPY waits on that session (the first event each
// shard receives is one of them). A test holds the source's own first
// message on a second session's key (held_keys), which a table lock could
// not tell apart from the flood.

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <memory>
#include <string>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {

// The [pipeline] and [batch] settings the scene needs: the smallest queue
// and small batches, so that a flood of a few hundred events fills both
// queues in one read of the connection.
inline constexpr const char* held_queues_tuning = "queue_capacity = 64\n[batch]\nmax_rows = 10\n";

// A session that holds, uncommitted, an events_mirror row of each key given.
class held_keys {
 public:
  held_keys(const test_db& db, const std::string& prefix, int n) : session_(db.dsn()) {
    session_.exec("BEGIN");
    for (int i = 0; i < n; ++i) {
      session_.exec("INSERT INTO events_mirror (topic, payload) VALUES ('held', $j$" +
                    valid_event(prefix + std::to_string(i)) + "$j$)");
    }
  }
  // Sessions whose locks wait on this one (evpipe's shards, once their COPY
  // meets a held key).
  long waiting_on_me(test_db& db) const {
    return db.count("SELECT count(*) FROM pg_stat_activity WHERE " + std::to_string(session_.pid()) +
                    " = ANY (pg_blocking_pids(pid))");
  }
  void release() { session_.exec("ROLLBACK"); }

 private:
  side_session session_;
};

// Both shards of an evpipe with a TCP source on `tcp_port` and the tuning
// above, full and waiting. `metrics` is its metric prefix ("evpipe").
class held_queues {
 public:
  static constexpr int flood = 216;  // 16 held keys first, then 200 more (~50 KB, one read)

  held_queues(test_db& db, uint16_t tcp_port, uint16_t http_port, const std::string& metrics, const std::string& run)
      : db_(db), http_port_(http_port), metrics_(metrics), run_(run), held_(db, run + "-held-", 16) {
    std::string data;
    for (int i = 0; i < 16; ++i) data += valid_event(run + "-held-" + std::to_string(i)) + "\n";
    client_ = std::make_unique<ndjson_client>(tcp_port);
    client_->send_all(data);
  }

  // `shards` shards' COPYs wait on the held keys (both, unless the test
  // holds one otherwise); then the rest of the flood, in one read, fills
  // both queues behind them. A shard takes what its queue holds when it
  // starts a write, so the events sent after its write waits stay queued
  // (and count as queued: sources pause). Nothing of the flood is left to
  // be read later and fill a queue again.
  void wait_full(long shards = 2) {
    ASSERT_TRUE(eventually([&] { return held_.waiting_on_me(db_) == shards; }))
        << shards << " shards should wait on the held keys, " << held_.waiting_on_me(db_) << " do";
    std::string data;
    for (int i = 0; i < flood - 16; ++i) data += valid_event(run_ + "-flood-" + std::to_string(i)) + "\n";
    client_->send_all(data);
    ASSERT_TRUE(eventually([&] {
      return metric("unacked_events{source=\"tcp\"}") == flood && metric("queue_depth{shard=\"0\"}") >= 64 &&
             metric("queue_depth{shard=\"1\"}") >= 64;
    })) << "the flood should be read in one go and fill both queues: " << metric("unacked_events{source=\"tcp\"}")
        << " of " << flood << " read, " << depths();
  }

  void release() { held_.release(); }

  // The flood's acks, once released: every one of its events is stored.
  uint64_t acks(std::chrono::milliseconds timeout) { return client_->read_acks_until(flood, timeout); }

  // The shards' queue depths, for a failure's message.
  std::string depths() const {
    return "queue depths " + std::to_string(metric("queue_depth{shard=\"0\"}")) + " and " +
           std::to_string(metric("queue_depth{shard=\"1\"}"));
  }

  double metric(const std::string& sample) const {
    return metric_value(http_get(http_port_, "/metrics"), metrics_ + "_" + sample);
  }

 private:
  test_db& db_;
  uint16_t http_port_;
  std::string metrics_, run_;
  held_keys held_;
  std::unique_ptr<ndjson_client> client_;
};

}  // namespace evpipe::testing
