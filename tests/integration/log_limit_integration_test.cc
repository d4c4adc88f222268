// A condition that repeats floods the log no more (issue 15): fifty reloads
// of a broken config, each confirmed by the failure counter in /metrics,
// write a bounded number of "reload failed" lines, and a later line counts
// the others, in the text and the JSON format.

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <regex>
#include <sstream>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

class LogLimit : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
  }
  test_db db;
};

TEST_P(LogLimit, AFloodOfOneConditionWritesBoundedLinesAndCountsTheRest) {
  const std::string format = GetParam();
  uint16_t port = free_port(), http = free_port();
  std::string good = "[postgres]\ndsn = \"" + db.dsn() + "\"\n[http]\nlisten = \"127.0.0.1:" + std::to_string(http) +
                     "\"\n[log]\nformat = \"" + format + "\"\n[[sources.tcp]]\nlisten = \"127.0.0.1:" +
                     std::to_string(port) + "\"\n";
  evpipe_process evp(good, "loglimit_" + format);
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  evp.write_config("[batch]\nmax_rows = \"many\"\n");
  const int reloads = 50;
  for (int i = 1; i <= reloads; ++i) {
    evp.kill(SIGHUP);
    // One at a time, each one seen: signals that arrive together count once.
    ASSERT_TRUE(eventually([&] {
      return metric_value(http_get(http, "/metrics"), "evpipe_config_reloads_total{result=\"failure\"}") == i;
    }, 30s)) << i << "\n" << evp.log();
  }
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(60s), 0) << evp.log();
  std::string log = evp.log();

  // Lines of the condition, and the counts of the summaries about it.
  long written = 0, suppressed = 0, summaries = 0;
  std::regex summary("([0-9]+) lines like this were suppressed in the last [0-9]+ s: reload failed");
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (format == "json") EXPECT_EQ(line.rfind("{\"time\":", 0), 0u) << line;
    std::smatch m;
    if (std::regex_search(line, m, summary)) {
      suppressed += std::stol(m[1]);
      ++summaries;
    } else if (line.find("reload failed, the running configuration stays") != std::string::npos) {
      ++written;
    }
  }
  EXPECT_EQ(written + suppressed, reloads) << log;
  EXPECT_GE(summaries, 1) << log;
  // 10 per 10 s window: the 50 reloads take a few seconds.
  EXPECT_LE(written, 30) << log;
  EXPECT_GE(written, 10) << log;
}

INSTANTIATE_TEST_SUITE_P(Formats, LogLimit, ::testing::Values("text", "json"));

}  // namespace
}  // namespace evpipe::testing
