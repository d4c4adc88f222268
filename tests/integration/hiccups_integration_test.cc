// Slow-batch traces end to end (issue 19, docs/operations.md "Hiccups"): a
// batch made slow on purpose by a lock the test holds for 200 ms is logged on
// one line that names the step where the time went, and the histograms of
// the steps between the stages (queue, ack_post, ack_write) and the slow
// batch counter count it. The evpipe binary runs against the real PostgreSQL
// that scripts/test.sh starts.

#include <gtest/gtest.h>

#include <regex>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

using namespace std::chrono_literals;

// The warn lines of the log that are slow-batch traces.
std::vector<std::string> traces(const std::string& log) {
  std::vector<std::string> out;
  size_t at = 0;
  while ((at = log.find("slow batch: ", at)) != std::string::npos) {
    size_t end = log.find('\n', at);
    out.push_back(log.substr(at, end - at));
    at = end;
  }
  return out;
}

class Hiccups : public TcpPipeline {
 protected:
  // Starts evpipe and commits one event, so that the connections are warm.
  // The first batch after start may be slow itself (and traced): the lines
  // it logged are counted in warm_traces, and the next trace line is due a
  // second later (one a second).
  void start(evpipe_process& evp, ndjson_client*& client) {
    ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
    evp.start(tcp_port);
    client = new ndjson_client(tcp_port);
    client->send_all(valid_event("warm-0") + "\n");
    ASSERT_EQ(client->read_acks_until(1, 30s), 1u) << evp.log();
    std::this_thread::sleep_for(1100ms);
    warm_traces = traces(evp.log()).size();
    warm_slow = metric("taylor_slow_batches_total");
  }
  // The trace lines logged after the warm-up.
  std::vector<std::string> new_traces(const evpipe_process& evp) const {
    auto all = traces(evp.log());
    return std::vector<std::string>(all.begin() + static_cast<long>(std::min(warm_traces, all.size())), all.end());
  }
  // The same, once there are at least `n`: the counter goes up when the line
  // is queued for the log's own thread, which writes it a moment later.
  std::vector<std::string> new_traces_at_least(const evpipe_process& evp, size_t n) const {
    (void)eventually([&] { return new_traces(evp).size() >= n; }, 10s);
    return new_traces(evp);
  }
  double metric(const std::string& sample) { return metric_value(http_get(http_port, "/metrics"), sample); }
  // The ack_write histogram, the slow-batch counter and its trace are
  // recorded when the ack's write completes, which can be a moment after the
  // client has read it: a test waits for the count first.
  bool ack_writes_reach(double n) {
    return eventually([&] { return metric("taylor_stage_latency_seconds_count{stage=\"ack_write\"}") == n; }, 10s);
  }
  // Sends the event `key` while the test holds events_mirror locked for
  // 200 ms (its batch's COPY waits for the lock), then reads both acks.
  void send_under_table_lock(const evpipe_process& evp, ndjson_client& client, const std::string& key) {
    side_session holder(db.dsn());
    holder.exec("BEGIN");
    holder.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
    client.send_all(valid_event(key) + "\n");
    ASSERT_TRUE(eventually([&] { return db.lock_waiters("events_mirror") >= 1; }, 30s)) << evp.log();
    std::this_thread::sleep_for(200ms);
    holder.exec("COMMIT");
    ASSERT_EQ(client.read_acks_until(2, 30s), 2u) << evp.log();
  }

  uint16_t tcp_port = free_port();
  uint16_t http_port = free_port();
  size_t warm_traces = 0;
  double warm_slow = 0;
};

// A row of the same key inserted by an open transaction: the COPY is taken,
// its row waits on the other transaction's unique index entry, and the
// server answers the COPY (which commits itself) only once that transaction
// ends. The time goes between the data sent and the commit's answer.
TEST_F(Hiccups, RowLockShowsAsCommitTime) {
  evpipe_process evp(config_for(db, tcp_port, http_port), "hiccups_commit");
  ndjson_client* c = nullptr;
  start(evp, c);
  std::unique_ptr<ndjson_client> client(c);
  EXPECT_GE(warm_slow, 0) << "the counter is exported";

  side_session holder(db.dsn());
  holder.exec("BEGIN");
  holder.exec("INSERT INTO events_mirror (topic, payload) VALUES ('t', '" + valid_event("slow-1") + "'::jsonb)");
  const auto t0 = std::chrono::steady_clock::now();
  client->send_all(valid_event("slow-1") + "\n");
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(client->read_acks_until(2, 10ms), 1u) << "acked while its row could not commit";
  holder.exec("ROLLBACK");
  ASSERT_EQ(client->read_acks_until(2, 30s), 2u) << evp.log();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 200ms);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'slow-1'"), 1);

  // Counted and logged once the ack is written.
  ASSERT_TRUE(eventually([&] { return metric("taylor_slow_batches_total") == warm_slow + 1; }, 10s)) << evp.log();
  auto lines = new_traces_at_least(evp, 1);
  ASSERT_EQ(lines.size(), 1u) << evp.log();
  const std::string& line = lines[0];
  EXPECT_NE(line.find("from read to ack_written, most in commit ("), std::string::npos) << line;
  // Every step's offset, in order, the commit's about the 200 ms held.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      line, m,
      std::regex("at ms: queued [0-9.]+ popped [0-9.]+ absorbed [0-9.]+ flushed [0-9.]+ copy_start [0-9.]+ "
                 "copy_end [0-9.]+ commit_sent [0-9.]+ committed ([0-9.]+) ack_posted [0-9.]+ ack_run [0-9.]+ "
                 "ack_written [0-9.]+")))
      << line;
  EXPECT_GE(std::stod(m[1]), 150.0) << line;
  EXPECT_NE(line.find("1 events, 1 attempt;"), std::string::npos) << line;
  EXPECT_NE(line.find("since the previous trace: process "), std::string::npos) << line;
  EXPECT_NE(line.find("; io thread "), std::string::npos) << line;
  EXPECT_NE(line.find("; shard thread "), std::string::npos) << line;

  // The new steps' histograms counted both batches: the warm-up's and the slow one.
  EXPECT_TRUE(ack_writes_reach(2)) << http_get(http_port, "/metrics");
  const auto metrics = http_get(http_port, "/metrics");
  double queued = 0, posted = 0;
  for (int s = 0; s < 2; ++s) {
    const std::string shard = ",shard=\"" + std::to_string(s) + "\"}";
    queued += metric_value(metrics, "taylor_stage_latency_seconds_count{stage=\"queue\"" + shard);
    posted += metric_value(metrics, "taylor_stage_latency_seconds_count{stage=\"ack_post\"" + shard);
  }
  EXPECT_EQ(queued, 2);
  EXPECT_EQ(posted, 2);
  EXPECT_GE(metric_value(metrics, "taylor_io_stalls_total"), 0) << "the stall counter is exported";
}

// The whole table locked: the COPY statement itself waits for its lock
// before it takes any data, so the trace names the COPY, not the commit.
TEST_F(Hiccups, TableLockShowsAsCopyTime) {
  evpipe_process evp(config_for(db, tcp_port, http_port), "hiccups_copy");
  ndjson_client* c = nullptr;
  start(evp, c);
  std::unique_ptr<ndjson_client> client(c);

  ASSERT_NO_FATAL_FAILURE(send_under_table_lock(evp, *client, "slow-2"));
  ASSERT_TRUE(eventually([&] { return metric("taylor_slow_batches_total") == warm_slow + 1; }, 10s)) << evp.log();
  auto lines = new_traces_at_least(evp, 1);
  ASSERT_EQ(lines.size(), 1u) << evp.log();
  EXPECT_NE(lines[0].find("most in copy ("), std::string::npos) << lines[0];
}

// slow_batch_ms = 0: nothing is judged, however slow.
TEST_F(Hiccups, ZeroTurnsTracesOff) {
  std::string cfg = config_for(db, tcp_port, http_port);
  cfg.insert(cfg.find("[batch]"), "slow_batch_ms = 0\n");  // in [pipeline]
  evpipe_process evp(cfg, "hiccups_off");
  ndjson_client* c = nullptr;
  start(evp, c);
  std::unique_ptr<ndjson_client> client(c);
  ASSERT_NO_FATAL_FAILURE(send_under_table_lock(evp, *client, "slow-3"));
  // Once both acks' writes completed, the slow one would have been judged.
  EXPECT_TRUE(ack_writes_reach(2)) << "the histograms stay on\n" << http_get(http_port, "/metrics");
  EXPECT_EQ(metric("taylor_slow_batches_total"), 0);
  EXPECT_TRUE(traces(evp.log()).empty()) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
