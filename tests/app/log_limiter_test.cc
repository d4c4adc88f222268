// app/log_limiter.cc: repeated log lines are limited per site, and the
// suppressed ones are counted in a later line.

#include "app/log_limiter.h"

#include <gtest/gtest.h>

namespace evpipe::app {
namespace {

using namespace std::chrono_literals;
using clock_t_ = log_limiter::clock;

log_limit_traits small() {
  log_limit_traits t;
  t.lines_per_interval = 3;
  t.interval = 10'000ms;
  return t;
}

TEST(LogLimiter, ASiteWritesItsQuotaThenSaysHowManyWereSuppressed) {
  log_limiter l(small());
  auto t0 = clock_t_::now();
  int written = 0;
  for (int i = 0; i < 100; ++i) {
    auto d = l.admit(3, "tcp 127.0.0.1:7000: line " + std::to_string(i) + " refused", t0 + i * 1ms);
    written += d.write;
    EXPECT_TRUE(d.summaries.empty());
  }
  EXPECT_EQ(written, 3);
  // The next line of the site after the window: written, after the summary.
  auto d = l.admit(3, "tcp 127.0.0.1:7000: line 100 refused", t0 + 11s);
  EXPECT_TRUE(d.write);
  ASSERT_EQ(d.summaries.size(), 1u);
  EXPECT_EQ(d.summaries[0].level, 3);
  EXPECT_EQ(d.summaries[0].text, "97 lines like this were suppressed in the last 10 s: tcp #.#.#.#:#: line # refused");
}

TEST(LogLimiter, OtherSitesAndLevelsAreCountedApart) {
  log_limiter l(small());
  auto t0 = clock_t_::now();
  int a = 0, b = 0, c = 0;
  for (int i = 0; i < 10; ++i) {
    a += l.admit(3, "database unreachable", t0).write;
    b += l.admit(3, "broker refused the connection", t0).write;
    c += l.admit(4, "database unreachable", t0).write;
  }
  EXPECT_EQ(a, 3);
  EXPECT_EQ(b, 3);
  EXPECT_EQ(c, 3);
}

TEST(LogLimiter, AFloodThatStopsIsSummarisedByAnyLaterLineOrAtExit) {
  log_limiter l(small());
  auto t0 = clock_t_::now();
  for (int i = 0; i < 8; ++i) (void)l.admit(3, "stalled", t0);
  // Another site logs after the window: the summary comes with it.
  auto d = l.admit(2, "something else", t0 + 10s);
  ASSERT_EQ(d.summaries.size(), 1u);
  EXPECT_EQ(d.summaries[0].text, "5 lines like this were suppressed in the last 10 s: stalled");
  // Nothing left; a new flood is reported by drain() (at exit).
  EXPECT_TRUE(l.drain().empty());
  for (int i = 0; i < 5; ++i) (void)l.admit(2, "again", t0 + 10s);
  auto left = l.drain();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].text, "2 lines like this were suppressed in the last 10 s: again");
}

TEST(LogLimiter, TheTemplateIsCutAndDigitRunsAreOne) {
  log_limiter l;
  EXPECT_EQ(l.site_template("shard 12 took 3500 ms"), "shard # took # ms");
  EXPECT_EQ(l.site_template(std::string(500, 'x')).size(), log_limit_traits{}.template_chars);
}

TEST(LogLimiter, SitesStayBounded) {
  log_limit_traits t = small();
  t.max_sites = 16;
  log_limiter l(t);
  auto t0 = clock_t_::now();
  // Distinct texts that digits do not fold (letters): each a site.
  for (int i = 0; i < 100; ++i) {
    std::string text = "peer ";
    for (int v = i; v > 0; v /= 26) text += static_cast<char>('a' + v % 26);
    EXPECT_TRUE(l.admit(3, text, t0).write);  // over the bound: written, not remembered
  }
  EXPECT_TRUE(l.drain().empty());
}

}  // namespace
}  // namespace evpipe::app
