#include "pipeline/ack_tracker.h"

#include <gtest/gtest.h>

#include <algorithm>
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

}  // namespace
}  // namespace evpipe::pipeline
