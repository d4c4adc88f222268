// Routes in upsert mode, end to end: device status messages, sent out of
// order and redelivered (within the dedup window, after it, and after a
// restart), leave each device at its newest state and never move it back;
// a redelivered message writes nothing (no row version, no trigger call).

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "tests/support/device_status_route.h"
#include "tests/support/harness.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

class RoutesUpsert : public TcpPipeline {};

TEST_F(RoutesUpsert, StateNeverMovesBackwardsAndRedeliveriesWriteNothing) {
  uint16_t port = free_port(), http_port = free_port();
  tuning t;
  t.max_rows = 64;  // many batches, so a device's messages meet in one batch and across batches
  evpipe_process evp(config_for(db, port, http_port, t) + device_status_route, "routes_upsert");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(device_status_tables);
  evp.start(port);

  constexpr int devices = 40, times = 30;
  std::vector<std::string> lines = device_status_lines(devices, times);
  std::mt19937 rng(11);
  std::shuffle(lines.begin(), lines.end(), rng);
  // Redeliveries inside the stream: every 5th message again, later on.
  std::vector<std::string> stream = lines;
  for (size_t i = 0; i < lines.size(); i += 5) stream.insert(stream.begin() + std::min(stream.size(), i * 2 + 7), lines[i]);
  auto send = [&](const std::vector<std::string>& msgs) {
    std::string data;
    for (const auto& m : msgs) data += m + "\n";
    ndjson_client producer(port);
    producer.send_all(data);
    EXPECT_EQ(producer.read_acks_until(msgs.size(), 60s), msgs.size()) << evp.log();
  };
  send(stream);

  auto state = [&] {
    return db.column("SELECT string_agg(device_id || '=' || status || '@' || ip_address, ',' ORDER BY device_id) "
                     "FROM devices");
  };
  std::string expected;
  {
    std::vector<std::string> ids;
    for (int d = 0; d < devices; ++d) ids.push_back("dev-" + std::to_string(d));
    std::sort(ids.begin(), ids.end());
    for (const auto& id : ids) {
      expected += (expected.empty() ? "" : ",") + id + "=s" + std::to_string(times) + "@10.0." + id.substr(4) + "." +
                  std::to_string(times);
    }
  }
  ASSERT_EQ(db.count("SELECT count(*) FROM devices"), devices) << evp.log();
  EXPECT_EQ(state().at(0), expected) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
  const long writes = db.count("SELECT count(*) FROM device_writes");
  EXPECT_LE(writes, devices * times) << "at most one write per distinct message";
  auto counter = [&](const std::string& family) {
    return metric_value(http_get(http_port, "/metrics"), "taylor_route_" + family + "{route=\"device_status\"}");
  };
  const double upserted = counter("rows_upserted_total"), skipped = counter("skipped_older_total");
  EXPECT_EQ(upserted, writes) << "one count per row version written";
  EXPECT_EQ(upserted + skipped, devices * times) << "every distinct message either changed a row or was older";

  // Older messages never seen before, alone in their own batches: nothing moves back.
  std::vector<std::string> old;
  for (int d = 0; d < devices; ++d) old.push_back(device_status(d, 0));
  send(old);
  EXPECT_EQ(state().at(0), expected);
  EXPECT_EQ(db.count("SELECT count(*) FROM device_writes"), writes) << "an older state writes no row version";
  EXPECT_EQ(counter("rows_upserted_total"), upserted);
  EXPECT_EQ(counter("skipped_older_total"), skipped + devices);

  // A restart empties the dedup window: everything again writes nothing.
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(port);
  send(lines);
  EXPECT_EQ(state().at(0), expected);
  EXPECT_EQ(db.count("SELECT count(*) FROM device_writes"), writes)
      << "redelivered messages are recognised and write no row version";
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_route_keys"), 0)
      << "identity (device_id, last_seen) holds the key and order_by: the upsert's WHERE newer settles redeliveries";

  // A newer status still moves a device forward after all that.
  send({device_status(7, times + 1)});
  EXPECT_EQ(db.column("SELECT status FROM devices WHERE device_id = 'dev-7'").at(0), "s" + std::to_string(times + 1));
}

// Without order_by the last message to arrive wins, so a redelivery could
// move a device back: there the keys table (evpipe_route_keys) settles
// redeliveries, across a restart too. A row the table's CHECK refuses is
// dead-lettered as db_rejected, and the rest of its batch commits.
TEST_F(RoutesUpsert, WithoutOrderByTheKeysTableStopsARedeliveryAndARefusedRowIsDeadLettered) {
  uint16_t port = free_port(), http_port = free_port();
  std::string route = device_status_route;
  const std::string order_by = "order_by = \"last_seen\"\n";
  route.erase(route.find(order_by), order_by.size());
  evpipe_process evp(config_for(db, port, http_port) + route, "routes_upsert_keys");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(device_status_tables);
  db.exec("ALTER TABLE devices ADD CONSTRAINT status_not_bad CHECK (status <> 'bad')");
  evp.start(port);
  auto send = [&](const std::vector<std::string>& msgs) {
    std::string data;
    for (const auto& m : msgs) data += m + "\n";
    ndjson_client producer(port);
    producer.send_all(data);
    ASSERT_EQ(producer.read_acks_until(msgs.size(), 60s), msgs.size()) << evp.log();
  };
  std::string bad = device_status(1, 3);
  bad.replace(bad.find("\"s3\""), 4, "\"bad\"");
  send({device_status(0, 1), device_status(1, 1), bad, device_status(2, 1)});
  send({device_status(0, 2)});
  auto status_of = [&](int d) {
    return db.column("SELECT status FROM devices WHERE device_id = 'dev-" + std::to_string(d) + "'").at(0);
  };
  EXPECT_EQ(status_of(0), "s2");
  EXPECT_EQ(status_of(1), "s1") << "the refused row changed nothing";
  EXPECT_EQ(status_of(2), "s1") << "its batch committed";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'db_rejected' AND failure_reason LIKE "
                     "'%status_not_bad%'"),
            1)
      << evp.log();
  EXPECT_GT(db.count("SELECT count(*) FROM evpipe_route_keys"), 0) << "this route needs keys";
  // A restart empties the dedup window; the old message of dev-0 arrives
  // again: it is recognised, and the device stays at s2 (last-wins would
  // have moved it back to s1).
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(port);
  const long writes = db.count("SELECT count(*) FROM device_writes");
  send({device_status(0, 1), device_status(2, 1)});
  EXPECT_EQ(status_of(0), "s2") << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM device_writes"), writes) << "redeliveries write no row version";
  // A message not seen before still wins, as without order_by it should, even an older one.
  send({device_status(0, 0)});
  EXPECT_EQ(status_of(0), "s0");
}

// An `also` chain whose first route names the identity columns (an append
// keyed by its table's unique index) and whose second is an upsert with a
// digest identity and its key from the topic: the message's identity is the
// first route's, so the upsert cannot count on its own redelivery rule and
// its row keeps an evpipe_route_keys key. A message of the same identity
// after a restart changes neither table (it used to update the upsert's).
TEST_F(RoutesUpsert, InAnAlsoChainTheUpsertKeepsTheKeyOfAnotherRoutesIdentity) {
  uint16_t port = free_port(), http_port = free_port();
  const std::string chain = R"(
[[routes]]
name = "log"
topics = ["tracker/events/+"]
envelope = "none"
also = true
table = "state_log"
idempotency = ["event_id"]
columns = [
  { name = "event_id", type = "text", required = true },
  { name = "state", type = "text", required = true },
]
[[routes]]
name = "current"
topics = ["tracker/events/+"]
envelope = "none"
table = "current_state"
mode = "upsert"
key = ["device"]
order_by = "at"
columns = [
  { name = "device", source = "topic[2]", type = "text" },
  { name = "state", type = "text", required = true },
  { name = "at", source = "ts", type = "timestamptz", required = true },
]
)";
  evpipe_process evp(config_for(db, port, http_port) + chain, "routes_also_chain");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec("CREATE TABLE state_log (event_id text PRIMARY KEY, state text NOT NULL)");
  db.exec("CREATE TABLE current_state (device text PRIMARY KEY, state text, at timestamptz)");
  evp.start(port);
  auto send = [&](const std::string& state, const std::string& ts) {
    ndjson_client producer(port);
    producer.send_all("{\"event_id\":\"e1\",\"state\":\"" + state + "\",\"ts\":\"" + ts +
                      "\"}\n");
    ASSERT_EQ(producer.read_acks_until(1, 60s), 1u) << evp.log();
  };
  send("s1", "2025-01-28T10:00:01Z");
  ASSERT_EQ(db.column("SELECT state FROM current_state"), std::vector<std::string>{"s1"}) << evp.log();
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(port);
  send("s2", "2025-01-28T10:00:02Z");  // the same message by its identity (event_id e1)
  EXPECT_EQ(db.column("SELECT state FROM state_log"), std::vector<std::string>{"s1"});
  EXPECT_EQ(db.column("SELECT state FROM current_state"), std::vector<std::string>{"s1"})
      << "the upsert took a message its identity says was stored already";
}

// An upserted message is acked only once its row has committed: while a
// migration's lock holds the route's table, nothing is acked.
TEST_F(RoutesUpsert, MessagesAreAckedOnlyAfterTheirUpsertCommits) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port) + device_status_route, "routes_upsert_ack");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(device_status_tables);
  evp.start(port);
  std::string data;
  const auto lines = device_status_lines(10, 5);
  for (const auto& l : lines) data += l + "\n";
  EXPECT_TRUE(acked_only_after_commit(send_with_table_locked(db, port, "devices", data, lines.size()), lines.size()))
      << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM devices WHERE status = 's5'"), 10);
}

}  // namespace
}  // namespace evpipe::testing
