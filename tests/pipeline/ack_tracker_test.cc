#include "pipeline/ack_tracker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

namespace evpipe::pipeline {
namespace {

TEST(AckTracker, AdvancesOnlyOverAContiguousPrefix) {
  ack_tracker t(64);
  for (int i = 0; i < 5; ++i) t.next();
  t.complete(2);
  t.complete(3);
  EXPECT_EQ(t.advance(), 0u);  // 1 is still pending
  t.complete(1);
  EXPECT_EQ(t.advance(), 3u);
  t.complete(5);
  EXPECT_EQ(t.advance(), 3u);
  t.complete(4);
  EXPECT_EQ(t.advance(), 5u);
  EXPECT_EQ(t.in_flight(), 0u);
}

TEST(AckTracker, RandomCompletionOrderAcrossManyWraps) {
  ack_tracker t(100);  // rounded up to 128
  std::mt19937 rng(42);
  uint64_t last = 0;
  for (int round = 0; round < 200; ++round) {
    std::vector<uint64_t> seqs;
    for (int i = 0; i < 100; ++i) seqs.push_back(t.next());
    std::shuffle(seqs.begin(), seqs.end(), rng);
    for (auto s : seqs) {
      t.complete(s);
      uint64_t a = t.advance();
      ASSERT_GE(a, last);  // never goes back
      last = a;
    }
    ASSERT_EQ(t.acked(), t.issued());
  }
  EXPECT_EQ(t.acked(), 20000u);
}

TEST(AckTracker, WindowIsAtLeastTheRequestedSize) {
  EXPECT_GE(ack_tracker(1).window(), 64u);
  EXPECT_EQ(ack_tracker(65536).window(), 65536u);
  EXPECT_EQ(ack_tracker(65537).window(), 131072u);
}

TEST(AckTracker, TakeRangesHandsOutLinesBeyondThePrefixOnce) {
  ack_tracker t(64);
  for (int i = 0; i < 10; ++i) t.next();
  for (uint64_t s : {3, 4, 5, 7, 9, 10}) t.complete(s);
  EXPECT_EQ(t.advance(), 0u);
  EXPECT_EQ(t.unreported(), 6u);
  std::vector<ack_tracker::range> r;
  t.take_ranges(r, 2);  // a cap: the rest waits for the next call
  EXPECT_EQ(r, (std::vector<ack_tracker::range>{{3, 5}, {7, 7}}));
  EXPECT_EQ(t.unreported(), 2u);
  r.clear();
  t.take_ranges(r, 100);
  EXPECT_EQ(r, (std::vector<ack_tracker::range>{{9, 10}}));
  EXPECT_EQ(t.unreported(), 0u);
  r.clear();
  t.take_ranges(r, 100);
  EXPECT_TRUE(r.empty());  // each line once
  t.complete(1);
  t.complete(2);
  EXPECT_EQ(t.advance(), 5u);
  EXPECT_EQ(t.unreported(), 0u);  // 1 and 2 are covered by the count, not reported
  t.complete(8);
  t.complete(8);  // an outcome reported twice counts once
  EXPECT_EQ(t.unreported(), 1u);
  t.complete(6);
  EXPECT_EQ(t.advance(), 10u);  // passes reported and unreported lines alike
  EXPECT_EQ(t.unreported(), 0u);
  r.clear();
  t.take_ranges(r, 100);
  EXPECT_TRUE(r.empty());
}

// No range names a line twice or a line the count had already passed, and a
// take without a cap leaves no done line beyond the count unreported; across
// ring wraps, with random completion order and caps.
TEST(AckTracker, RangesNameEachDoneLineBeyondTheCountOnce) {
  ack_tracker t(100);  // rounded up to 128
  std::mt19937 rng(7);
  std::vector<int> in_range(1, 0);
  std::vector<bool> done(1, false);
  for (int round = 0; round < 300; ++round) {
    std::vector<uint64_t> seqs;
    const int n = 1 + static_cast<int>(rng() % 120);
    for (int i = 0; i < n; ++i) seqs.push_back(t.next());
    in_range.resize(t.issued() + 1, 0);
    done.resize(t.issued() + 1, false);
    std::shuffle(seqs.begin(), seqs.end(), rng);
    for (size_t k = 0; k < seqs.size(); ++k) {
      t.complete(seqs[k]);
      done[seqs[k]] = true;
      if (rng() % 3 != 0 && k + 1 != seqs.size()) continue;
      const uint64_t a = t.advance();
      const bool capped = rng() % 2 == 0;
      std::vector<ack_tracker::range> r;
      t.take_ranges(r, capped ? 1 + rng() % 4 : SIZE_MAX);
      uint64_t prev = a;
      for (const auto& x : r) {
        ASSERT_LE(x.first, x.last);
        ASSERT_GT(x.first, prev);  // in order, beyond the count
        ASSERT_LE(x.last, t.issued());
        for (uint64_t q = x.first; q <= x.last; ++q) {
          ASSERT_TRUE(done[q]) << q;
          ASSERT_EQ(++in_range[q], 1) << q;
        }
        prev = x.last;
      }
      if (!capped) {
        ASSERT_EQ(t.unreported(), 0u);
        for (uint64_t q = a + 1; q <= t.issued(); ++q) ASSERT_EQ(in_range[q], done[q] ? 1 : 0) << q;
      }
    }
    ASSERT_EQ(t.acked(), t.issued());
    ASSERT_EQ(t.unreported(), 0u);
  }
}

}  // namespace
}  // namespace evpipe::pipeline
