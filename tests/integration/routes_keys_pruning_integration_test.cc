// evpipe_route_keys pruning (docs/routes.md, "Pruning the keys"), end to end
// through the evpipe binary and the PostgreSQL of scripts/test.sh: migrate
// adds the created_at index (idempotently); keys older than [route_keys]
// retention_s are deleted in small batches and counted; keys inside the
// retention stay, so a message redelivered after a restart inside the
// retention is still stored once, while one whose key was pruned is stored
// again (outside the guarantee, as documented).

#include <gtest/gtest.h>

#include <csignal>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

// An append route into a table without any index: every message needs a key.
constexpr const char* route = R"(
[route_keys]
retention_s = 3600
prune_batch = 7
prune_interval_ms = 50

[[routes]]
name = "telemetry"
topics = ["tracker/events/it"]
envelope = "none"
table = "telemetry"
idempotency = ["device_id", "ts"]
columns = [
  { name = "device_id", type = "text", required = true },
  { name = "temperature", type = "float8" },
  { name = "ts", source = "timestamp", type = "timestamptz", required = true },
]
)";

std::string telemetry(int i) {
  return "{\"device_id\":\"dev-" + std::to_string(i % 5) + "\",\"temperature\":21.5,\"timestamp\":\"2025-01-28T10:" +
         (i / 60 < 10 ? "0" : "") + std::to_string(i / 60) + ":" + (i % 60 < 10 ? "0" : "") + std::to_string(i % 60) +
         "Z\"}\n";
}
std::string messages(int first, int last) {
  std::string out;
  for (int i = first; i < last; ++i) out += telemetry(i);
  return out;
}

class RouteKeysPruning : public TcpPipeline {
 protected:
  // Sends lines and waits for all their acks.
  void send(uint16_t port, const std::string& data, evpipe_process& evp) {
    const uint64_t n = static_cast<uint64_t>(std::count(data.begin(), data.end(), '\n'));
    ndjson_client producer(port);
    producer.send_all(data);
    ASSERT_EQ(producer.read_acks_until(n, 60s), n) << evp.log();
  }
  // Polls until `sql` counts `want` (at most 30 s); the last count.
  long wait_count(const std::string& sql, long want) {
    long n = -1;
    for (int i = 0; i < 600 && (n = db.count(sql)) != want; ++i) std::this_thread::sleep_for(50ms);
    return n;
  }
};

TEST_F(RouteKeysPruning, OldKeysGoNewOnesStayAndStillDeduplicate) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port) + route, "route_keys_pruning");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  ASSERT_EQ(evp.run_command("migrate"), 0) << "migrate is idempotent: " << evp.log("migrate.log");
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND tablename = "
                     "'evpipe_route_keys' AND indexname = 'evpipe_route_keys_created_at' AND indexdef LIKE "
                     "'%(created_at)'"),
            1)
      << "migrate adds the index pruning goes by";
  db.exec("CREATE TABLE telemetry (device_id text NOT NULL, temperature float8, ts timestamptz NOT NULL)");
  evp.start(port);

  // 30 messages whose keys are then made 2 hours old (beyond the retention),
  // 20 more of which 5 are made 59 minutes old (inside it).
  send(port, messages(0, 30), evp);
  ASSERT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys"), 30) << evp.log();
  // The identity holds a timestamptz, so each key leads with the message's
  // time (8 bytes, sign bit flipped) before its 16-byte hash.
  const std::string key_time =
      "'2000-01-01 00:00:00+00'::timestamptz + ((('x' || encode(substr(key, 1, 8), 'hex'))::bit(64)::int8 "
      "# (-9223372036854775808)::int8) * interval '1 microsecond')";
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys WHERE length(key) = 24 AND " + key_time +
                     " BETWEEN '2025-01-28T10:00:00Z' AND '2025-01-28T10:00:29Z'"),
            30);
  EXPECT_EQ(db.count("SELECT count(DISTINCT substr(key, 1, 8)) FROM evpipe_route_keys"), 30);
  db.exec("UPDATE evpipe_route_keys SET created_at = now() - interval '2 hours'");
  send(port, messages(30, 50), evp);
  // (The pruner may be deleting the old keys meanwhile: only the new ones are counted.)
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys WHERE created_at > now() - interval '1 hour' AND "
                     "length(key) = 24 AND " + key_time + " BETWEEN '2025-01-28T10:00:30Z' AND '2025-01-28T10:00:49Z'"),
            20);
  db.exec("UPDATE evpipe_route_keys SET created_at = now() - interval '59 minutes' WHERE key IN "
          "(SELECT key FROM evpipe_route_keys WHERE created_at > now() - interval '1 hour' ORDER BY key LIMIT 5)");
  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry"), 50);
  // The pruner (every 50 ms, 7 keys a statement) deletes the 30 old keys.
  EXPECT_EQ(wait_count("SELECT count(*) FROM evpipe_route_keys", 20), 20) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys WHERE created_at < now() - interval '1 hour'"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys WHERE created_at < now() - interval '58 minutes'"), 5)
      << "keys inside the retention stay";
  std::this_thread::sleep_for(500ms);  // ten more rounds
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys"), 20) << "nothing inside the retention is pruned";
  {
    const std::string m = http_get(http_port, "/metrics");
    EXPECT_EQ(metric_value(m, "taylor_route_keys_pruned_total"), 30) << m;
    EXPECT_EQ(metric_value(m, "taylor_route_keys_prune_errors_total"), 0) << m;
  }

  // A restart empties the dedup window: the 20 messages whose keys stayed
  // are redeliveries inside the retention and store nothing; one of the 30
  // whose keys were pruned is stored again (outside the guarantee).
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(port);
  send(port, messages(30, 50), evp);
  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry"), 50) << "redeliveries inside the retention: stored once";
  send(port, messages(0, 1), evp);
  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry"), 51) << "a redelivery whose key was pruned is stored again";
  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry WHERE device_id = 'dev-0' AND ts = '2025-01-28T10:00:00Z'"), 2);
}

// retention_s = 0 keeps every key: no pruning at all.
TEST_F(RouteKeysPruning, RetentionZeroKeepsEveryKey) {
  uint16_t port = free_port(), http_port = free_port();
  std::string cfg = route;
  cfg.replace(cfg.find("retention_s = 3600"), 18, "retention_s = 0");
  evpipe_process evp(config_for(db, port, http_port) + cfg, "route_keys_pruning_off");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec("CREATE TABLE telemetry (device_id text NOT NULL, temperature float8, ts timestamptz NOT NULL)");
  evp.start(port);
  send(port, messages(0, 10), evp);
  db.exec("UPDATE evpipe_route_keys SET created_at = now() - interval '20 years'");
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys"), 10);
  EXPECT_EQ(metric_value(http_get(http_port, "/metrics"), "taylor_route_keys_pruned_total"), 0);
}

}  // namespace
}  // namespace evpipe::testing
