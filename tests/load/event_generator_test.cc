#include "load/event_generator.h"

#include <gtest/gtest.h>

namespace evpipe::load {
namespace {

// Everything but "ts" (the time of generation) follows from the seed.
std::string without_ts(std::string e) {
  auto at = e.find("\"ts\":\"");
  if (at != std::string::npos) e.erase(at, e.find('"', at + 6) - at + 1);
  return e;
}

TEST(EventGenerator, SameSeedSameStream) {
  generator_options o;
  o.invalid_frac = 0.1;
  o.dup_frac = 0.1;
  event_generator a(o), b(o);
  for (int i = 0; i < 500; ++i) {
    std::string x, y;
    EXPECT_EQ(a.next(x), b.next(y));
    EXPECT_EQ(without_ts(x), without_ts(y));
  }
}

TEST(EventGenerator, TooLargeEventsOnlyWhenTheLimitIsGiven) {
  generator_options o;
  o.invalid_frac = 1.0;  // every event invalid: the reasons in turn
  event_generator without(o);
  for (int i = 0; i < 18; ++i) {
    std::string e;
    EXPECT_EQ(without.next(e), event_class::invalid);
    EXPECT_LT(e.size(), 400u);
  }
  o.too_large_bytes = 1000;
  event_generator with(o);
  int over = 0;
  for (int i = 0; i < 18; ++i) {
    std::string e;
    EXPECT_EQ(with.next(e), event_class::invalid);
    if (e.size() > 1000) {
      EXPECT_EQ(e.size(), 1001u) << "one byte over the limit";
      ++over;
    }
  }
  EXPECT_EQ(over, 2) << "one in nine invalid events";
}

}  // namespace
}  // namespace evpipe::load
