#include "load/rate_pacer.h"

#include <gtest/gtest.h>

namespace evpipe::load {
namespace {

TEST(RatePacer, IntendedTimesFollowTheRate) {
  rate_pacer p(1'000'000'000, 4000.0);  // one event every 250 us
  EXPECT_EQ(p.intended(0), 1'000'000'000);
  EXPECT_EQ(p.intended(1), 1'000'250'000);
  EXPECT_EQ(p.intended(4000), 2'000'000'000);
}

TEST(RatePacer, NothingIsDueBeforeItsTime) {
  rate_pacer p(1'000'000'000, 4000.0);
  EXPECT_EQ(p.due(0), 0u);              // long before the start (the bug this guards)
  EXPECT_EQ(p.due(999'999'999), 0u);
  EXPECT_EQ(p.due(1'000'000'000), 1u);  // event 0 at the start
  EXPECT_EQ(p.due(1'000'249'999), 1u);
  EXPECT_EQ(p.due(1'000'250'000), 2u);
  for (int64_t now = 1'000'000'000; now < 1'010'000'000; now += 777) {
    uint64_t n = p.due(now);
    ASSERT_LE(p.intended(n - 1), now);  // everything counted is due
    ASSERT_GT(p.intended(n), now);      // and the next one is not
  }
}

TEST(RatePacer, OddRatesDoNotDrift) {
  rate_pacer p(0, 3.0);  // 333,333,333.33 ns apart
  EXPECT_EQ(p.due(999'999'999), 3u);
  EXPECT_EQ(p.due(1'000'000'000), 4u);
  EXPECT_EQ(p.intended(3'000'000), int64_t{1'000'000} * 1'000'000'000);  // exactly 1e6 s later
}

}  // namespace
}  // namespace evpipe::load
