// Routes in append mode, end to end through the evpipe binary and the real
// PostgreSQL that scripts/test.sh starts: bare device JSON and standard
// envelopes into typed tables, in the batch's transaction, acked after
// commit; route_mismatch and db_rejected rows dead-lettered while their
// neighbours commit; redeliveries (in the window and after a restart) stored once.

#include <gtest/gtest.h>

#include "tests/support/harness.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

constexpr const char* routes = R"(
[[routes]]
name = "telemetry"
topics = ["tracker/events/it"]
envelope = "none"
table = "telemetry"
idempotency = ["device_id", "ts"]
columns = [
  { name = "device_id", type = "text", required = true },
  { name = "temperature", type = "float8" },
  { name = "memory_free", type = "int8" },
  { name = "online", type = "bool", default = true },
  { name = "ts", source = "timestamp", type = "timestamptz", required = true },
  { name = "topic", source = "topic", type = "text" },
  { name = "extra", source = "diag", type = "jsonb" },
]

[[routes]]
name = "readings"
kinds = ["reading"]
mirror = true
table = "readings"
columns = [
  { name = "sensor", source = "payload.sensor", type = "text", required = true },
  { name = "value", source = "payload.value", type = "int4" },
  { name = "id", source = "trace_id", type = "uuid" },
]
)";

const char* tables = R"(
CREATE TABLE telemetry (device_id text NOT NULL, temperature float8 CHECK (temperature < 1000), memory_free int8,
                        online bool, ts timestamptz NOT NULL, topic text, extra jsonb);
CREATE TABLE readings (sensor text NOT NULL, value int4, id uuid);
)";

std::string telemetry(const std::string& device, int second, const std::string& temperature = "21.5") {
  return "{\"device_id\":\"" + device + "\",\"temperature\":" + temperature +
         ",\"memory_free\":45120,\"timestamp\":\"2025-01-28T10:30:" + (second < 10 ? "0" : "") +
         std::to_string(second) + "Z\",\"diag\":{\"rssi\":-61}}";
}

std::string reading(const std::string& key, const std::string& payload, const std::string& extra = "") {
  return "{\"trace_id\":\"" + uuid_for(static_cast<uint32_t>(std::hash<std::string>{}(key))) +
         "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"reading\",\"idempotency_key\":\"" + key +
         "\",\"payload\":" + payload + ",\"topic\":\"lab/readings\"" + extra + "}";
}

class RoutesAppend : public TcpPipeline {};

TEST_F(RoutesAppend, TypedRowsCommitWithTheirBatchAndBadOnesAreDeadLettered) {
  // Device JSON arrives on the first listener (its topic is the bare
  // route's), envelopes on the second.
  uint16_t port = free_port(), http_port = free_port(), envelope_port = free_port();
  evpipe_process evp(config_for(db, port, http_port) + "[[sources.tcp]]\nlisten = \"127.0.0.1:" +
                         std::to_string(envelope_port) + "\"\ntopic = \"lab/envelopes\"\n" + routes,
                     "routes_append");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(tables);
  evp.start(port);

  std::string data;
  uint64_t lines = 0;
  auto add = [&](const std::string& l) {
    data += l + "\n";
    ++lines;
  };
  for (int i = 0; i < 40; ++i) add(telemetry("ESP32_00" + std::to_string(i % 4), i));
  add(telemetry("ESP32_000", 0));                     // redelivered: the same device and time
  add(telemetry("ESP32_001", 5, "21.75"));            // same identity, other bytes: still the same message
  add("{\"temperature\":20,\"timestamp\":\"2025-01-28T10:31:00Z\"}");                        // no device_id
  add("{\"device_id\":\"E9\",\"temperature\":\"hot\",\"timestamp\":\"2025-01-28T10:31:00Z\"}");  // wrong type
  add("{\"device_id\":\"E9\",\"memory_free\":18446744073709551615,\"timestamp\":\"2025-01-28T10:31:00Z\"}");  // > int8
  add("{\"device_id\":\"E9\",\"timestamp\":\"2025-02-30T10:31:00Z\"}");                         // no such date
  add("{\"device_id\":\"E9\",\"timestamp\":\"2025-01-28T10:31:00Z\",\"temperature\":5000}");  // CHECK refuses it
  add("{not json");
  // Numbers beyond a double or 64 bits: where no column needs them, stored
  // as they are (jsonb holds them); a float8 column cannot.
  add("{\"device_id\":\"E8\",\"serial\":123456789012345678901234567890,\"peak\":1e400,"
      "\"timestamp\":\"2025-01-28T10:31:00Z\",\"diag\":{\"energy\":-2.5E+400,\"n\":[18446744073709551616]}}");
  add("{\"device_id\":\"E9\",\"temperature\":1e400,\"timestamp\":\"2025-01-28T10:32:00Z\"}");
  add(telemetry("ESP32_009", 59));  // after the bad ones: still stored
  // Standard envelopes: a kind with a route (also mirrored), and one without.
  const std::string envelopes = reading("r-1", "{\"sensor\":\"s1\",\"value\":7}") + "\n" +
                                reading("r-2", "{\"sensor\":\"s2\",\"value\":3000000000}") + "\n" +  // > int4
                                valid_event("plain-1", "not routed", ",\"topic\":\"lab/other\"") + "\n";
  auto send = [&] {
    ndjson_client producer(port), enveloped(envelope_port);
    producer.send_all(data);
    enveloped.send_all(envelopes);
    EXPECT_EQ(producer.read_acks_until(lines, 60s), lines) << evp.log();
    EXPECT_EQ(enveloped.read_acks_until(3, 60s), 3u) << evp.log();
  };
  send();

  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry"), 42) << evp.log();
  EXPECT_EQ(db.count("SELECT count(DISTINCT (device_id, ts)) FROM telemetry"), 42);
  EXPECT_EQ(metric_value(http_get(http_port, "/metrics"), "taylor_ingest_total{topic=\"tracker/events/it\",kind=\"telemetry\"}"),
            42)
      << "routed messages count as ingested, a bare one under its route's name";
  EXPECT_EQ(db.column("SELECT temperature::text FROM telemetry WHERE device_id = 'ESP32_001' AND ts = "
                      "'2025-01-28T10:30:05Z'"),
            std::vector<std::string>{"21.5"})
      << "the first copy is kept";
  EXPECT_EQ(db.column("SELECT concat_ws('|', memory_free, online, topic, extra->>'rssi') FROM telemetry WHERE "
                      "device_id = 'ESP32_009'"),
            std::vector<std::string>{"45120|t|tracker/events/it|-61"});
  EXPECT_EQ(db.column("SELECT concat_ws('|', extra->'energy' = '-2.5e400'::jsonb, extra->'n'->>0, temperature IS NULL) "
                      "FROM telemetry WHERE device_id = 'E8'"),
            std::vector<std::string>{"t|18446744073709551616|t"})
      << "numbers beyond a double in a jsonb column are stored exactly";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE payload ? 'device_id'"), 0)
      << "a route without mirror keeps no events_mirror row";

  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'route_mismatch' AND failure_reason = "
                     "'route \"telemetry\": column \"temperature\" (source \"temperature\"): 1e400 is out of range for "
                     "float8'"),
            1);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'route_mismatch'"), 6);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'route_mismatch' AND failure_reason = "
                     "'route \"telemetry\": column \"device_id\" (source \"device_id\"): required, but absent or null'"),
            1);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE failure_reason LIKE "
                     "'route \"readings\": column \"value\" (source \"payload.value\"): 3000000000 is out of range%'"),
            1);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'db_rejected' AND payload->>'temperature' = "
                     "'5000' AND failure_reason LIKE '%23514%'"),
            1)
      << "the CHECK constraint refuses one row; the rest of its batch commits";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'invalid_json'"), 1);
  {
    const std::string m = http_get(http_port, "/metrics");
    EXPECT_EQ(metric_value(m, "taylor_route_rows_appended_total{route=\"telemetry\"}"), 42) << m;
    EXPECT_EQ(metric_value(m, "taylor_route_rows_appended_total{route=\"readings\"}"), 1);
    EXPECT_EQ(metric_value(m, "taylor_route_mismatch_total{route=\"telemetry\"}"), 5);
    EXPECT_EQ(metric_value(m, "taylor_route_mismatch_total{route=\"readings\"}"), 1);
  }

  EXPECT_EQ(db.column("SELECT concat_ws('|', sensor, value, id IS NOT NULL) FROM readings"),
            std::vector<std::string>{"s1|7|t"});
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key IN ('r-1', 'plain-1')"), 2)
      << "mirror = true keeps the envelope's row; an unrouted kind takes today's path";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 2);

  // A restart empties the dedup window: the same messages again store nothing.
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(port);
  send();
  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry"), 42) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM readings"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 8) << "dead letters resent byte for byte are stored once";
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys"), 42)
      << "one key per stored bare message; mirrored envelopes are settled by events_mirror";
}

// A routed message is acked only once the row in its own table has
// committed: while a migration's lock holds the route's table, evpipe's
// write waits and nothing is acked; once the lock goes, everything is, and
// every row is there.
TEST_F(RoutesAppend, RoutedMessagesAreAckedOnlyAfterTheirTableCommits) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port) + routes, "routes_append_ack");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(tables);
  evp.start(port);
  std::string data;
  const uint64_t n = 50;
  for (uint64_t i = 0; i < n; ++i) data += telemetry("ACK_" + std::to_string(i % 5), static_cast<int>(i)) + "\n";
  EXPECT_TRUE(acked_only_after_commit(send_with_table_locked(db, port, "telemetry", data, n), n)) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry"), static_cast<long>(n));
}

// A table with a unique index on exactly the route's idempotency columns
// settles redeliveries itself: no evpipe_route_keys rows, and after a
// restart the same messages store nothing twice. A unique violation of
// another index of that table is the row's own fault: db_rejected, and the
// rest of its batch commits (it used to be retried forever).
TEST_F(RoutesAppend, TableWithUniqueIdentityIndexSettlesRedeliveries) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port) + routes, "routes_append_keyed");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(R"(
CREATE TABLE telemetry (device_id text NOT NULL, temperature float8, memory_free int8, online bool,
                        ts timestamptz NOT NULL, topic text, extra jsonb, UNIQUE (ts, device_id));
CREATE UNIQUE INDEX telemetry_one_reboot ON telemetry (memory_free) WHERE memory_free = 1;
CREATE TABLE readings (sensor text NOT NULL, value int4, id uuid);
)");
  evp.start(port);

  std::string data;
  uint64_t lines = 0;
  auto add = [&](const std::string& l) {
    data += l + "\n";
    ++lines;
  };
  for (int i = 0; i < 30; ++i) add(telemetry("ESP32_00" + std::to_string(i % 3), i));
  add(telemetry("ESP32_000", 0));  // redelivered in the stream
  add("{\"device_id\":\"R1\",\"memory_free\":1,\"timestamp\":\"2025-01-28T10:40:00Z\"}");
  add("{\"device_id\":\"R2\",\"memory_free\":1,\"timestamp\":\"2025-01-28T10:40:00Z\"}");  // refused: 23505
  add(telemetry("ESP32_009", 59));
  auto send = [&] {
    ndjson_client producer(port);
    producer.send_all(data);
    EXPECT_EQ(producer.read_acks_until(lines, 60s), lines) << evp.log();
  };
  send();
  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry"), 32) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry WHERE device_id = 'R1'"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'db_rejected' AND failure_reason LIKE "
                     "'%23505%' AND payload->>'device_id' = 'R2'"),
            1)
      << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys"), 0) << "the table's own index is the identity";

  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(port);
  send();
  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry"), 32) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 1) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys"), 0);

  // Without the index the same route falls back to evpipe_route_keys (the
  // sink looks again on every connection: a restart is one).
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  db.exec("ALTER TABLE telemetry DROP CONSTRAINT telemetry_ts_device_id_key");
  evp.start(port);
  data.clear();
  lines = 0;
  add(telemetry("ESP32_100", 1));
  add(telemetry("ESP32_100", 1));
  send();
  EXPECT_EQ(db.count("SELECT count(*) FROM telemetry"), 33) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys"), 1);
}

// Bare messages with mirror = true keep an events_mirror row whose
// idempotency_key column is NULL, so that table's unique key cannot tell a
// redelivery: evpipe_route_keys does, for a mirror-only route and for one
// with a table too. After a restart the same messages add no row anywhere
// (before, each redelivery added a second events_mirror row).
TEST_F(RoutesAppend, BareMirroredMessagesAreStoredOnceAcrossRestarts) {
  uint16_t system_port = free_port(), boot_port = free_port(), http_port = free_port();
  const std::string cfg = config_for(db, system_port, http_port) + "[[sources.tcp]]\nlisten = \"127.0.0.1:" +
                          std::to_string(boot_port) + "\"\ntopic = \"dev/E1/boot\"\n" + R"(
[[routes]]
name = "system"
topics = ["tracker/events/it"]
envelope = "none"
mirror = true

[[routes]]
name = "boot"
topics = ["dev/+/boot"]
envelope = "none"
mirror = true
table = "boots"
columns = [
  { name = "device_id", source = "topic[1]", type = "text" },
  { name = "reason", type = "text", required = true },
]
)";
  evpipe_process evp(cfg, "routes_bare_mirror");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec("CREATE TABLE boots (device_id text, reason text)");
  evp.start(system_port);
  auto send = [&] {
    ndjson_client system(system_port), boot(boot_port);
    system.send_all("{\"code\":17}\n{\"code\":18}\n{\"code\":17}\n{\"uptime\":5}\n");
    boot.send_all("{\"reason\":\"power_on\"}\n{\"reason\":\"watchdog\"}\n");
    EXPECT_EQ(system.read_acks_until(4, 60s), 4u) << evp.log();
    EXPECT_EQ(boot.read_acks_until(2, 60s), 2u) << evp.log();
  };
  send();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 5) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic = 'dev/E1/boot'"), 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM boots"), 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys"), 5);

  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(system_port);
  send();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 5) << "one mirror row per message, redelivered or not";
  EXPECT_EQ(db.count("SELECT count(*) FROM boots"), 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys"), 5);
  EXPECT_EQ(metric_value(http_get(http_port, "/metrics"), "taylor_duplicates_total"), 6)
      << "every redelivery counted as a duplicate";
}

}  // namespace
}  // namespace evpipe::testing
