#include "load/latency_histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace evpipe::load {
namespace {

TEST(LatencyHistogram, PercentilesMatchASortedReferenceTo3Digits) {
  std::mt19937_64 rng(7);
  // Log-uniform from 1 µs to 60 s.
  std::uniform_real_distribution<double> exp10(3.0, std::log10(60e9));
  std::vector<int64_t> values(200000);
  latency_histogram h;
  for (auto& v : values) {
    v = static_cast<int64_t>(std::pow(10.0, exp10(rng)));
    h.record(v);
  }
  std::sort(values.begin(), values.end());
  for (double p : {1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0}) {
    size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * values.size()));
    double exact = static_cast<double>(values[std::max<size_t>(rank, 1) - 1]);
    double got = static_cast<double>(h.percentile(p));
    EXPECT_GE(got, exact) << p;                  // the bucket's highest value
    EXPECT_LE((got - exact) / exact, 1.0 / 1024) << p;  // within 3 significant digits
  }
  EXPECT_EQ(h.count(), values.size());
  EXPECT_EQ(h.max(), static_cast<uint64_t>(values.back()));
}

TEST(LatencyHistogram, BucketsTileTheRangeWithoutGaps) {
  // Consecutive values map to the same or the next bucket, and a bucket's
  // highest value maps back to it.
  size_t last = latency_histogram::index_of(0);
  for (uint64_t v = 1; v < (uint64_t{1} << 22); ++v) {
    size_t i = latency_histogram::index_of(v);
    ASSERT_TRUE(i == last || i == last + 1) << v;
    ASSERT_EQ(latency_histogram::index_of(latency_histogram::highest_of(i)), i) << v;
    last = i;
  }
  EXPECT_LT(latency_histogram::index_of((uint64_t{1} << 36) - 1), latency_histogram::slots);
}

TEST(LatencyHistogram, MergeAddsCountsAndClampsHugeValues) {
  latency_histogram a, b;
  a.record(1000);
  b.record(2000);
  b.record(int64_t{1} << 40);  // beyond the range: counted at the top
  a.merge(b);
  EXPECT_EQ(a.count(), 3u);
  EXPECT_EQ(a.percentile(100), (uint64_t{1} << 36) - 1);
  EXPECT_EQ(a.percentile(33), 1000u);  // rank ceil(0.99) = 1: the smallest value
  EXPECT_NE(a.distribution().find("Total count = 3"), std::string::npos);
}

}  // namespace
}  // namespace evpipe::load
