// load/latency_timeline.h: events land in the second of their intended send
// time (not of their ack), merged timelines add up, and the CSV lists only
// seconds that had events.
#include "load/latency_timeline.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace evpipe::load {
namespace {

TEST(LatencyTimeline, SecondsOfIntendedTimeMergedAndWritten) {
  const int64_t start = 5'000'000'000;
  latency_timeline a(start), b(start);
  a.record(start + 100'000'000, 2'000'000);    // second 0, 2 ms
  a.record(start + 900'000'000, 300'000'000);  // second 0, a 300 ms stall: counted in second 0
  b.record(start + 2'500'000'000, 1'000'000);  // second 2, 1 ms
  b.record(start - 1, 4'000'000);              // before the start: second 0
  a.merge(b);
  const std::string path = ::testing::TempDir() + "latency_timeline_test.csv";
  ASSERT_TRUE(a.write(path));
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  EXPECT_EQ(s.str(),
            "second,events,p50_ms,p99_ms,p99_9_ms,max_ms\n"
            "0,3,4.002,300.000,300.000,300.000\n"  // p50 4 ms: the top of its bucket (1/1024 wide)
            "2,1,1.000,1.000,1.000,1.000\n");
}

}  // namespace
}  // namespace evpipe::load
