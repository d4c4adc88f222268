#include "pipeline/batch_trace.h"

#include <gtest/gtest.h>

namespace evpipe::pipeline {
namespace {

using stages::step;

constexpr int64_t ms = 1'000'000;

// A batch read at 1 s whose steps come `gaps` ms after each other (0: that
// step not stamped).
stages::batch_timeline timeline_with(std::initializer_list<std::pair<step, double>> at_ms) {
  stages::batch_timeline t;
  t.stamp(step::read, 1000 * ms);
  for (auto [s, v] : at_ms) t.stamp(s, 1000 * ms + static_cast<int64_t>(v * ms));
  t.shard = 1;
  t.events = 12;
  t.attempts = 1;
  t.batch_no = 7;
  return t;
}

TEST(BatchTrace, TheSlowestSpanIsNamedByTheStepThatEndsIt) {
  auto t = timeline_with({{step::queued, 0.1}, {step::popped, 0.3}, {step::absorbed, 0.4}, {step::flushed, 0.5},
                          {step::copy_start, 0.6}, {step::copy_end, 0.9}, {step::commit_sent, 0.9},
                          {step::committed, 201.0}, {step::ack_posted, 201.1}, {step::ack_run, 201.2},
                          {step::ack_written, 201.4}});
  auto worst = slowest(t, step::ack_written);
  EXPECT_EQ(worst.step, step::committed);
  EXPECT_EQ(stages::step_interval_name(worst.step), "commit");
  EXPECT_NEAR(static_cast<double>(worst.ns) / ms, 200.1, 1e-6);
  EXPECT_NEAR(static_cast<double>(elapsed_ns(t, step::ack_written)) / ms, 201.4, 1e-6);
  // Judged at an earlier step, only the steps up to it count.
  EXPECT_EQ(slowest(t, step::copy_end).step, step::copy_end);
}

TEST(BatchTrace, AStepNotStampedLeavesItsTimeToTheNextOne) {
  // A path without a COPY (dead letters only): flushed, then commit_sent.
  auto t = timeline_with({{step::queued, 0.1}, {step::popped, 0.2}, {step::absorbed, 0.3}, {step::flushed, 0.4},
                          {step::commit_sent, 80.0}, {step::committed, 81.0}, {step::ack_posted, 81.1}});
  auto worst = slowest(t, step::ack_posted);
  EXPECT_EQ(worst.step, step::commit_sent);
  EXPECT_EQ(stages::step_interval_name(worst.step), "insert");
  EXPECT_NEAR(static_cast<double>(worst.ns) / ms, 79.6, 1e-6);
}

TEST(BatchTrace, SlowMeansOverTheThresholdAndZeroIsOff) {
  auto t = timeline_with({{step::committed, 50.0}, {step::ack_written, 60.0}});
  EXPECT_TRUE(is_slow(t, step::ack_written, 50 * ms));
  EXPECT_FALSE(is_slow(t, step::committed, 50 * ms)) << "exactly the threshold is not over it";
  EXPECT_FALSE(is_slow(t, step::ack_written, 0)) << "0 turns it off";
  EXPECT_FALSE(is_slow(t, step::ack_run, 1)) << "a step not reached is not judged";
  stages::batch_timeline unread;  // no read stamp: nothing to measure from
  unread.stamp(step::ack_written, 10'000 * ms);
  EXPECT_FALSE(is_slow(unread, step::ack_written, 1));
}

TEST(BatchTrace, TheLineHasEveryStepsOffsetTheShardAndTheCounts) {
  auto t = timeline_with({{step::queued, 0.1}, {step::popped, 0.25}, {step::absorbed, 0.3}, {step::flushed, 0.4},
                          {step::copy_start, 0.5}, {step::copy_end, 0.7}, {step::commit_sent, 0.7},
                          {step::committed, 230.0}, {step::ack_posted, 230.1}, {step::ack_run, 230.2},
                          {step::ack_written, 231.0}});
  t.connection_age_ns = 1500 * ms;
  t.shard_thread = {3, 0, 2};
  std::string line = describe_slow_batch(t, step::ack_written, {12, 1, 4}, {5, 0, 1}, 2);
  EXPECT_EQ(line,
            "slow batch: 231.0 ms from read to ack_written, most in commit (229.3 ms); shard 1, batch 7, 12 events, "
            "1 attempt; at ms: queued 0.10 popped 0.25 absorbed 0.30 flushed 0.40 copy_start 0.50 copy_end 0.70 "
            "commit_sent 0.70 committed 230.00 ack_posted 230.10 ack_run 230.20 ack_written 231.00; connection open "
            "1500 ms; since the previous trace: process 12 minor / 1 major faults, 4 involuntary switches; io thread "
            "5 minor / 0 major faults, 1 involuntary switches; shard thread 3 minor / 0 major faults, 2 involuntary "
            "switches; 2 slow batches not logged since the previous line");
  // Counts not sampled are left out.
  t.shard_thread = {};
  line = describe_slow_batch(t, step::ack_posted, {}, {}, 0);
  EXPECT_EQ(line.find("faults"), std::string::npos) << line;
  EXPECT_EQ(line.find("ack_run"), std::string::npos) << "only the steps up to the one judged: " << line;
}

TEST(BatchTrace, ThePacerLetsOneLineAnIntervalAndCountsTheRest) {
  log_pacer pacer(std::chrono::seconds(1));
  uint64_t left_out = 99;
  EXPECT_TRUE(pacer.admit(10 * 1000 * ms, left_out));
  EXPECT_EQ(left_out, 0u);
  EXPECT_FALSE(pacer.admit(10 * 1000 * ms + 1, left_out));
  EXPECT_FALSE(pacer.admit(10 * 1000 * ms + 999 * ms, left_out));
  EXPECT_TRUE(pacer.admit(11 * 1000 * ms, left_out));
  EXPECT_EQ(left_out, 2u);
}

TEST(BatchTrace, FinishingCountsOnlySlowTimelines) {
  set_slow_batch_threshold(std::chrono::milliseconds(50));
  const uint64_t before = trace_totals().slow_batches.load();
  EXPECT_FALSE(finish_timeline(timeline_with({{step::ack_written, 10.0}}), step::ack_written, true));
  EXPECT_TRUE(finish_timeline(timeline_with({{step::committed, 70.0}, {step::ack_written, 75.0}}), step::ack_written,
                              true));
  EXPECT_EQ(trace_totals().slow_batches.load(), before + 1);
  set_slow_batch_threshold(std::chrono::milliseconds(0));
  EXPECT_FALSE(finish_timeline(timeline_with({{step::ack_written, 10'000.0}}), step::ack_written, true));
  EXPECT_EQ(trace_totals().slow_batches.load(), before + 1);
}

TEST(BatchTrace, IoLatenessOverTheThresholdIsAStall) {
  set_slow_batch_threshold(std::chrono::milliseconds(50));
  const uint64_t stalls = trace_totals().io_stalls.load(), late = trace_totals().io_stall_ns.load();
  note_io_lateness(10 * ms, "io-1");
  EXPECT_EQ(trace_totals().io_stalls.load(), stalls);
  note_io_lateness(80 * ms, "io-1");
  EXPECT_EQ(trace_totals().io_stalls.load(), stalls + 1);
  EXPECT_EQ(trace_totals().io_stall_ns.load(), late + 80 * ms);
  set_slow_batch_threshold(std::chrono::milliseconds(0));
  note_io_lateness(80 * ms, "io-1");
  EXPECT_EQ(trace_totals().io_stalls.load(), stalls + 1);
}

TEST(BatchTrace, ThreadCountsSinceTheLastCallGrowFromZero) {
  auto first = thread_usage_since_last();
  ASSERT_TRUE(first.known());
  auto second = thread_usage_since_last();
  EXPECT_GE(second.minor_faults, 0);
  EXPECT_LE(second.minor_faults, first.minor_faults + 1000);
  EXPECT_TRUE(process_usage().known());
}

}  // namespace
}  // namespace evpipe::pipeline
