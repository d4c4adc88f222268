// `evpipe check-config --check-db` against the real database: every problem
// a routed table can have is reported, naming the route and the key; a
// database that fits passes.

#include <gtest/gtest.h>

#include <fstream>

#include "tests/support/check_config.h"
#include "tests/support/harness.h"
#include "tests/support/tcp_pipeline.h"

namespace evpipe::testing {
namespace {

class RoutesCheckDb : public TcpPipeline {};

// Runs check-config --check-db; returns the exit code, stderr in `err`.
int check_db(const std::string& config, std::string& err) { return check_config_db(config, "checkdb", err); }

TEST_F(RoutesCheckDb, ReportsEachProblemWithItsRouteAndKey) {
  uint16_t port = free_port(), http_port = free_port();
  std::string cfg = config_for(db, port, http_port) + R"(
[[routes]]
name = "status"
topics = ["a/+/status"]
envelope = "none"
table = "devices"
mode = "upsert"
key = ["device_id"]
order_by = "last_seen"
columns = [
  { name = "device_id", source = "topic[1]", type = "text" },
  { name = "last_seen", source = "timestamp", type = "timestamptz", required = true },
  { name = "doc", source = "message", type = "jsonb" },
  { name = "seq", type = "int8" },
]
[[routes]]
name = "readings"
topics = ["a/+/readings"]
envelope = "none"
table = "readings"
columns = [
  { name = "value", type = "float8" },
  { name = "unit", type = "text" },
  { name = "level", type = "int4" },
]
[[routes]]
name = "missing"
topics = ["a/+/other"]
envelope = "none"
table = "nowhere"
columns = [{ name = "x", type = "int4" }]
)";
  evpipe_process evp(cfg, "checkdb");
  db.exec("CREATE TABLE devices (device_id text, last_seen timestamp, doc json, site text NOT NULL, "
          "seq int8 GENERATED ALWAYS AS IDENTITY)");
  db.exec("CREATE TABLE readings (value int4, level int4 GENERATED ALWAYS AS (value / 10) STORED)");
  std::string err;
  EXPECT_EQ(check_db(cfg, err), 2) << err;
  for (const char* expect :
       {"evpipe_route_keys does not exist: run `evpipe migrate",
        "[[routes]] \"status\" columns \"last_seen\": the route writes timestamptz, the column is timestamp",
        "[[routes]] \"status\" columns \"doc\": the route writes jsonb, the column is json",
        "[[routes]] \"status\" columns: \"site\" of \"devices\" is NOT NULL without a default, and the route does not fill it",
        "[[routes]] \"status\" key: \"devices\" has no unique index on exactly (device_id)",
        "[[routes]] \"readings\" columns \"value\": the route writes float8, the column is int4",
        "[[routes]] \"readings\" columns \"unit\": table \"readings\" has no such column",
        "[[routes]] \"readings\" columns \"level\": \"readings\" generates it (GENERATED ALWAYS AS): PostgreSQL "
        "computes it, the route cannot write it",
        "[[routes]] \"missing\" table: \"nowhere\" does not exist"}) {
    EXPECT_NE(err.find(expect), std::string::npos) << "missing: " << expect << "\nin:\n" << err;
  }

  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  // `run` refuses what check-config reports, rather than dead-letter every routed row.
  EXPECT_THROW(evp.start(port), std::runtime_error);
  EXPECT_TRUE(evp.log_has("[[routes]] \"readings\" columns \"value\": the route writes float8, the column is int4"))
      << evp.log();
  db.exec("DROP TABLE devices, readings");
  db.exec("CREATE TABLE devices (device_id varchar(64) PRIMARY KEY, last_seen timestamptz, doc jsonb, "
          "site text NOT NULL DEFAULT 'lab', seq int8 GENERATED ALWAYS AS IDENTITY)");
  db.exec("CREATE TABLE readings (value float8, unit text, level int4)");
  db.exec("CREATE TABLE nowhere (x int4)");
  EXPECT_EQ(check_db(cfg, err), 0) << err;
  evp.start(port);  // and now it runs
}

}  // namespace
}  // namespace evpipe::testing
