// Payload schemas through the running daemon (issue 13): a failing payload
// is dead-lettered as schema_violation with the pointer and keyword, version
// routing and unknown_schema_version, a schema that does not compile stops
// the start, and SIGHUP swaps the schema set while a producer streams: no
// event lost, the connection kept, and no event checked against a
// half-loaded (or missing) set.

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

namespace fs = std::filesystem;

std::string event(const std::string& key, const std::string& kind, const std::string& payload) {
  return "{\"trace_id\":\"" + uuid_for(static_cast<uint32_t>(std::hash<std::string>{}(key))) +
         "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"" + kind + "\",\"idempotency_key\":\"" + key +
         "\",\"payload\":" + payload + "}";
}

class Schemas : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
    dir = fs::path(env_or("TMPDIR", "/tmp")) / ("evpipe_it_" + std::to_string(::getpid()) + "_schemas_" +
                                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir / "kinds");
  }
  void TearDown() override { fs::remove_all(dir); }
  void write(const std::string& name, const std::string& text) {
    fs::create_directories((dir / "kinds" / name).parent_path());
    std::ofstream(dir / "kinds" / name, std::ios::trunc) << text;
  }
  std::string config(uint16_t tcp, uint16_t http, const std::string& extra = "") {
    return "[pipeline]\nshards = 2\n[postgres]\ndsn = \"" + db.dsn() + "\"\n[http]\nlisten = \"127.0.0.1:" +
           std::to_string(http) + "\"\n[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp) +
           "\"\n[schemas]\nenabled = true\ndir = \"" + (dir / "kinds").string() + "\"\n" + extra;
  }
  test_db db;
  fs::path dir;
};

TEST_F(Schemas, ViolationsAreDeadLetteredWithPointerAndKeywordAndVersionsRoute) {
  write("order_placed.json", R"({"type":"object","required":["order_id"],
    "properties":{"order_id":{"type":"string","format":"uuid"},
                  "lines":{"type":"array","items":{"properties":{"qty":{"type":"integer","minimum":1}}}}}})");
  write("task_created/1.json", R"({"required":["title"]})");
  write("task_created/2.json", R"({"required":["title","owner"]})");
  uint16_t tcp = free_port(), http = free_port();
  evpipe_process evp(config(tcp, http, "unknown_version = \"dead_letter\"\n"), "schemas_dlq");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(tcp);
  ndjson_client c(tcp);
  const std::string uuid = "550e8400-e29b-41d4-a716-446655440000";
  std::string lines = event("s-ok", "order_placed", R"({"order_id":")" + uuid + R"(","lines":[{"qty":2}]})") + "\n" +
                      event("s-qty", "order_placed", R"({"order_id":")" + uuid + R"(","lines":[{"qty":2},{"qty":0}]})") + "\n" +
                      event("s-id", "order_placed", R"({"order_id":"nope"})") + "\n" +
                      event("s-v1", "task_created", R"({"version":1,"title":"t"})") + "\n" +
                      event("s-v2", "task_created", R"({"version":2,"title":"t"})") + "\n" +
                      event("s-v3", "task_created", R"({"version":3,"title":"t"})") + "\n" +
                      event("s-other", "login_failed", R"({})") + "\n";
  c.send_all(lines);
  ASSERT_EQ(c.read_acks_until(7, 60s), 7u) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 3);  // s-ok, s-v1, s-other
  auto reasons = db.column("SELECT reason_code || ' | ' || failure_reason FROM dlq_events ORDER BY payload->>'idempotency_key'");
  ASSERT_EQ(reasons.size(), 4u);
  EXPECT_EQ(reasons[0], "schema_violation | /payload/order_id: format: not a uuid (order_placed.json#/properties/order_id)");
  EXPECT_EQ(reasons[1], "schema_violation | /payload/lines/1/qty: minimum: 0 is below the minimum 1 "
                        "(order_placed.json#/properties/lines/items/properties/qty)");
  EXPECT_EQ(reasons[2], "schema_violation | /payload: required: property \"owner\" is missing (task_created/2.json#)");
  EXPECT_EQ(reasons[3], "unknown_schema_version | kind task_created has no schema for version \"3\" (versions: 1, 2)");
  std::string metrics = http_get(http, "/metrics");
  EXPECT_NE(metrics.find("reason=\"schema_violation\"} 3"), std::string::npos) << metrics;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

TEST_F(Schemas, AnUnsupportedKeywordStopsTheStartNamingFileAndPointer) {
  write("a.json", R"({"properties":{"n":{"multipleOf":2}}})");
  uint16_t tcp = free_port(), http = free_port();
  evpipe_process evp(config(tcp, http), "schemas_refused");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  EXPECT_THROW(evp.start(tcp), std::runtime_error);
  EXPECT_TRUE(evp.log_has("a.json at #/properties/n/multipleOf: keyword \"multipleOf\" is not supported"))
      << evp.log();
}

// Sets A and B give every one of five kinds a schema: A wants payload field
// "x", B wants "y". A third of the events carry neither and must be
// dead-lettered whatever set is active: one that got through would have met
// a set missing its kind (half loaded, or none). Broken sets in between
// (one file that does not compile) must leave the running set in place.
TEST_F(Schemas, SighupSwapsWholeSetsUnderLoadLosingNothing) {
  auto write_set = [&](const char* field, bool broken) {
    for (int k = 0; k < 5; ++k) {
      std::string schema = std::string(R"({"type":"object","required":[")") + field + "\"]}";
      if (broken && k == 3) schema = R"({"not":{"required":["x"]}})";
      write("k" + std::to_string(k) + ".json", schema);
    }
  };
  write_set("x", false);
  uint16_t tcp = free_port(), http = free_port();
  evpipe_process evp(config(tcp, http), "schemas_reload");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(tcp);

  // One connection streams in chunks until told to stop (bounded in count).
  std::atomic<bool> stop{false};
  std::atomic<long> acked{0};
  std::atomic<bool> lost_connection{false};
  std::thread producer([&] {
    ndjson_client c(tcp);
    long sent = 0;
    const long max_events = 400'000, chunk = 200;
    while (!stop.load() && sent < max_events) {
      std::string data;
      for (long i = sent; i < sent + chunk; ++i) {
        const char* payload = i % 3 == 0 ? "{}" : i % 3 == 1 ? R"({"x":1})" : R"({"y":1})";
        data += event("sr-" + std::to_string(i), "k" + std::to_string(i % 5), payload) + "\n";
      }
      c.send_all(data);
      sent += chunk;
      if (c.read_acks_until(static_cast<uint64_t>(sent), 60s) < static_cast<uint64_t>(sent) || c.closed()) {
        lost_connection = true;
        break;
      }
      acked = sent;
    }
  });
  // Joined on every way out of the test body (an ASSERT returns early).
  stop_and_join join_producer{stop, producer};

  // Reloads are counted by the metrics (log lines of one kind are rate limited).
  auto reloads_seen = [&] {
    std::string m = http_get(http, "/metrics");
    auto v = [&](const char* sample) { return std::max(0.0, metric_value(m, sample)); };  // -1: not there yet
    return v("evpipe_config_reloads_total{result=\"success\"}") + v("evpipe_config_reloads_total{result=\"failure\"}");
  };
  const int reloads = 12;
  int broken = 0;
  for (int r = 0; r < reloads; ++r) {
    const bool bad = r % 3 == 2;
    broken += bad;
    write_set(r % 2 ? "x" : "y", bad);
    long before = acked.load();
    evp.kill(SIGHUP);
    ASSERT_TRUE(eventually([&] { return reloads_seen() == r + 1; }, 60s)) << evp.log();
    ASSERT_TRUE(eventually([&] { return acked.load() > before + 400 || lost_connection.load(); }, 60s));
  }
  stop = true;
  producer.join();
  ASSERT_FALSE(lost_connection.load()) << evp.log();
  const long total = acked.load();
  ASSERT_GT(total, 2000);

  std::string log = evp.log();
  std::string metrics = http_get(http, "/metrics");
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(60s), 0) << log;
  // Nothing lost: every acked event is a row or a dead letter.
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror") + db.count("SELECT count(*) FROM dlq_events"), total);
  // No event met a partial set: the empty payloads are all dead letters.
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE payload->'payload' = '{}'::jsonb"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code <> 'schema_violation'"), 0);
  // Both sets were in force at some point, each for its own field.
  EXPECT_GT(db.count("SELECT count(*) FROM events_mirror WHERE payload->'payload' ? 'x'"), 0);
  EXPECT_GT(db.count("SELECT count(*) FROM events_mirror WHERE payload->'payload' ? 'y'"), 0);
  // The broken sets were refused, each one a failed reload.
  EXPECT_EQ(metric_value(metrics, "evpipe_config_reloads_total{result=\"failure\"}"), broken) << metrics;
  EXPECT_NE(log.find("k3.json at #/not: keyword \"not\" is not supported"), std::string::npos) << log;
}

}  // namespace
}  // namespace evpipe::testing
