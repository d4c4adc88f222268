// Selective acks on the TCP source (docs/operations.md, "Acks"), end to end:
// with key routing, a connection's lines are in both shards. While one
// shard's commit waits (on a key another session holds uncommitted), the
// other shard's lines are committed, and the connection names them in
// "sack" runs at once, while the cumulative count stays behind the held
// line. Every line a run names has its row; no line is named twice; once the
// held commit goes through, the count covers every line. With
// selective_acks = false, the count alone: nothing is acked past the held
// line until it commits.

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "tests/support/harness.h"
#include "tests/support/held_queues.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

class TcpSelectiveAcks : public TcpPipeline {
 protected:
  static constexpr int others = 200;

  // Line 1 carries the held key; lines 2 to 201 the keys sel-<run>-0..199.
  static std::string lines(const std::string& run) {
    std::string data = valid_event(run + "-held-0") + "\n";
    for (int i = 0; i < others; ++i) data += valid_event(run + "-" + std::to_string(i)) + "\n";
    return data;
  }
};

TEST_F(TcpSelectiveAcks, LinesOfTheOtherShardAreAckedWhileAnEarlierLineWaits) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port), "sack_on");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  held_keys held(db, "sack1-held-", 1);
  ndjson_client c(port);
  c.send_all(lines("sack1"));
  // The held line's shard waits in its COPY; the other shard commits its
  // lines (about half of the 200, by key) and they are named in runs.
  std::set<uint64_t> named;
  long stored = 0;
  bool twice = false;
  ASSERT_TRUE(eventually([&] {
    (void)c.read_acks_until(others + 1, 200ms);
    named.clear();
    for (const auto& [a, b] : c.runs()) {
      for (uint64_t q = a; q <= b; ++q) twice = !named.insert(q).second || twice;
    }
    if (twice) return true;
    stored = db.stored_of("sack1-", others);
    return held.waiting_on_me(db) == 1 && stored > 0 && static_cast<long>(named.size()) == stored;
  }, 30s)) << "named " << named.size() << " lines, " << stored << " stored\n" << evp.log();
  ASSERT_FALSE(twice) << "a line was named in two runs";
  EXPECT_EQ(c.last_ack(), 0u) << "the count must wait for the held line 1";
  EXPECT_LT(stored, others) << "some lines should share the held line's shard";
  // Each named line is a committed row, and no line was named twice.
  uint64_t in_runs = 0;
  for (const auto& [a, b] : c.runs()) {
    ASSERT_GE(a, 2u);
    ASSERT_LE(a, b);
    ASSERT_LE(b, uint64_t{others} + 1);
    in_runs += b - a + 1;
  }
  EXPECT_EQ(in_runs, named.size());
  std::string keys;
  for (uint64_t q : named) keys += (keys.empty() ? "'sack1-" : ",'sack1-") + std::to_string(q - 2) + "'";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key IN (" + keys + ")"),
            static_cast<long>(named.size()));
  // Once the held session goes away, line 1 commits and the count covers all.
  held.release();
  bool monotonic = true;
  EXPECT_EQ(c.read_acks_until(others + 1, 30s, &monotonic), uint64_t{others} + 1) << evp.log();
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(db.stored_of("sack1-", others), others);
  EXPECT_EQ(db.stored_of("sack1-held-", 1), 1);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(TcpSelectiveAcks, TurnedOffTheCountAloneWaitsForTheHeldLine) {
  uint16_t port = free_port(), http_port = free_port();
  tuning t;
  t.tcp_extra = "selective_acks = false\n";
  evpipe_process evp(config_for(db, port, http_port, t), "sack_off");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  held_keys held(db, "sack2-held-", 1);
  ndjson_client c(port);
  c.send_all(lines("sack2"));
  long stored = 0;
  ASSERT_TRUE(eventually([&] {
    return held.waiting_on_me(db) == 1 && (stored = db.stored_of("sack2-", others)) > 0;
  }, 30s)) << evp.log();
  (void)c.read_acks_until(others + 1, 1s);  // committed lines, and a second for their acks
  EXPECT_EQ(c.last_ack(), 0u);
  EXPECT_TRUE(c.runs().empty());
  held.release();
  EXPECT_EQ(c.read_acks_until(others + 1, 30s), uint64_t{others} + 1) << evp.log();
  EXPECT_TRUE(c.runs().empty());
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
