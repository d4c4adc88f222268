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
  const auto acks = send_with_table_locked(db, port, "devices", data, lines.size());
  ASSERT_GT(acks.waiters, 0) << "evpipe never waited for the lock: the test proved nothing\n" << evp.log();
  EXPECT_EQ(acks.while_locked, 0u) << "acked before the upsert committed";
  EXPECT_EQ(acks.after, lines.size()) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM devices WHERE status = 's5'"), 10);
}

}  // namespace
}  // namespace evpipe::testing
