// perf/floor_client against the real PostgreSQL: open and closed loop store
// exactly the rows they report, in evpipe's events_mirror (generated columns
// filled, so the payload is the envelope evpipe stores), and write the
// figures perf/run.sh reads; bad use fails with a message.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "tests/support/harness.h"

namespace evpipe::testing {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(FloorClient, OpenAndClosedLoopStoreWhatTheyReport) {
  test_db db;
  if (!db.available()) {
    if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
    GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
  }
  evpipe_process evp("[postgres]\ndsn = \"" + db.dsn() + "\"\n[http]\nlisten = \"\"\n", "floorclient");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  const std::string tmp = env_or("TMPDIR", "/tmp") + "/floor" + std::to_string(::getpid());
  const std::string bin = FLOOR_CLIENT_BINARY;

  // Open loop: 1,000 rows due over 0.5 s on 2 connections.
  std::string cmd = bin + " --dsn '" + db.dsn() + "' --connections 2 --rate 2000 --count 1000 --run-id fo --quiet" +
                    " --json " + tmp + ".json --latency-timeline " + tmp + ".lat.csv --timeline " + tmp +
                    ".tl.csv > " + tmp + ".out 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << slurp(tmp + ".out");
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'fo-%'"), 1000);
  // Every row is a whole envelope: the generated columns evpipe relies on are set.
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE trace_id IS NULL OR payload->>'topic' <> topic"), 0);
  EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror"), 1000);
  std::string json = slurp(tmp + ".json");
  EXPECT_NE(json.find("\"acked\":1000,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"p99_9\":"), std::string::npos) << json;
  std::string lat = slurp(tmp + ".lat.csv");
  EXPECT_EQ(lat.rfind("second,events,p50_ms,p99_ms,p99_9_ms,max_ms\n0,", 0), 0u) << lat;

  // Closed loop: 3,000 rows over 3 streams in COPYs of 500.
  cmd = bin + " --dsn '" + db.dsn() + "' --connections 3 --rate max --count 3000 --batch-rows 500 --run-id fc" +
        " --quiet --json " + tmp + ".json > " + tmp + ".out 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << slurp(tmp + ".out");
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'fc-%'"), 3000);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'fc-2-%'"), 1000);  // each stream its share
  json = slurp(tmp + ".json");
  EXPECT_NE(json.find("\"acked\":3000,"), std::string::npos) << json;

  // Closed loop without a bound, and a table that is not there: refused.
  cmd = bin + " --dsn '" + db.dsn() + "' --rate max > " + tmp + ".out 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 2);
  EXPECT_NE(slurp(tmp + ".out").find("needs --count"), std::string::npos);
  cmd = bin + " --dsn '" + db.dsn() + "' --table no_such_table --rate 100 --count 10 > " + tmp + ".out 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 1);
  EXPECT_NE(slurp(tmp + ".out").find("no_such_table"), std::string::npos) << slurp(tmp + ".out");
}

}  // namespace
}  // namespace evpipe::testing
