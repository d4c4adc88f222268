// route_by = "connection" (docs/operations.md, "Routing by connection"), end
// to end: every event of a TCP connection or an HTTP request goes to the one
// shard its connection leased, connections spread over the shards, and what
// key routing settled in one dedup window (copies of one key, an upsert
// route's messages of one device) is still settled when the copies arrive on
// connections of two shards: one row per key, state never moved backwards.

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <thread>

#include "tests/support/device_status_route.h"
#include "tests/support/harness.h"
#include "tests/support/http_request.h"
#include "tests/support/metrics_wait.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

class RouteByConnection : public TcpPipeline {
 protected:
  static tuning by_connection() {
    tuning t;
    t.tcp_extra = "route_by = \"connection\"\n";
    return t;
  }
  static std::string keys(const std::string& prefix, int n) {
    std::string data;
    for (int i = 0; i < n; ++i) data += valid_event(prefix + std::to_string(i)) + "\n";
    return data;
  }
};

TEST_F(RouteByConnection, AConnectionsEventsAllGoToOneShardAndTheNextConnectionToTheOther) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port, by_connection()), "by_conn_pin");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  // 1,000 keys spread over both shards by key; here they stay on one.
  ndjson_client a(port);
  a.send_all(keys("pin-a-", 1000));
  ASSERT_EQ(a.read_acks_until(1000, 60s), 1000u) << evp.log();
  // Which shard a leased depends on whether the harness's readiness probe
  // (a connection too) is gone yet; either way it holds all 1,000.
  std::string m;
  EXPECT_TRUE(eventually([&] {
    m = http_get(http_port, "/metrics");
    double s0 = metric_value(m, "taylor_copy_rows_total{shard=\"0\"}");
    double s1 = metric_value(m, "taylor_copy_rows_total{shard=\"1\"}");
    return s0 + s1 == 1000 && (s0 == 0 || s1 == 0);
  }, 10s)) << m;
  // While a holds its shard, the next connection leases the other.
  ndjson_client b(port);
  b.send_all(keys("pin-b-", 1000));
  ASSERT_EQ(b.read_acks_until(1000, 60s), 1000u) << evp.log();
  m = metrics_when(http_port, {{"taylor_copy_rows_total{shard=\"0\"}", 1000},
                               {"taylor_copy_rows_total{shard=\"1\"}", 1000},
                               {"taylor_shard_connections{shard=\"0\"}", 1},
                               {"taylor_shard_connections{shard=\"1\"}", 1}});
  EXPECT_EQ(metric_value(m, "taylor_copy_rows_total{shard=\"0\"}"), 1000) << m;
  EXPECT_EQ(metric_value(m, "taylor_copy_rows_total{shard=\"1\"}"), 1000) << m;
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'pin-%'"), 2000);
  // Closed connections give their shards back.
  a.shutdown_write();
  b.shutdown_write();
  m = metrics_when(http_port, {{"taylor_shard_connections{shard=\"0\"}", 0},
                               {"taylor_shard_connections{shard=\"1\"}", 0}});
  EXPECT_EQ(metric_value(m, "taylor_shard_connections{shard=\"0\"}"), 0) << m;
  EXPECT_EQ(metric_value(m, "taylor_shard_connections{shard=\"1\"}"), 0) << m;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(RouteByConnection, CopiesOfOneKeyOnConnectionsOfTwoShardsStoreOneRow) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port, by_connection()), "by_conn_copies");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  // Four connections, two a shard, each sending all 5,000 keys at once; the
  // connections of one shard in ascending order, of the other descending, so
  // the two shards' transactions meet on the same keys in opposite orders
  // (each waits on the other's uncommitted rows; PostgreSQL breaks any deadlock).
  constexpr int n = 5000;
  std::string up, down;
  for (int i = 0; i < n; ++i) {
    up += valid_event("cc-" + std::to_string(i)) + "\n";
    down += valid_event("cc-" + std::to_string(n - 1 - i)) + "\n";
  }
  std::vector<std::unique_ptr<ndjson_client>> conns;
  for (int p = 0; p < 4; ++p) conns.push_back(std::make_unique<ndjson_client>(port));
  std::vector<std::thread> producers;
  std::vector<uint64_t> acked(4, 0);
  for (int p = 0; p < 4; ++p) {
    producers.emplace_back([&, p] {
      conns[p]->send_all(p % 2 == 0 ? up : down);
      acked[p] = conns[p]->read_acks_until(n, 120s);
    });
  }
  for (auto& t : producers) t.join();
  for (auto a : acked) EXPECT_EQ(a, uint64_t{n}) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), n);
  EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror"), n);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
  // Every copy after the first is a duplicate, whether the dedup window or
  // the unique index found it.
  auto m = metrics_when(http_port, {{"taylor_duplicates_total", 3 * n}});
  EXPECT_EQ(metric_value(m, "taylor_duplicates_total"), 3 * n) << m;
  EXPECT_GT(metric_value(m, "taylor_copy_rows_total{shard=\"0\"}"), 0) << m;
  EXPECT_GT(metric_value(m, "taylor_copy_rows_total{shard=\"1\"}"), 0) << m;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(RouteByConnection, AConnectionReadsOnWhileAnotherShardsQueueIsFull) {
  uint16_t port = free_port(), http_port = free_port();
  tuning t = by_connection();
  t.queue_capacity = 64;
  t.max_rows = 50;
  t.tcp_extra += "max_unacked = 1000\n";  // b pauses for its shard's full queue, not for its own unacked lines
  evpipe_process evp(config_for(db, port, http_port, t), "by_conn_room");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  auto metric = [&](const std::string& sample) { return metric_value(http_get(http_port, "/metrics"), sample); };
  ndjson_client a(port);  // leases one shard
  a.send_all(valid_event("room-a-first") + "\n");
  ASSERT_EQ(a.read_acks_until(1, 30s), 1u) << evp.log();
  ndjson_client b(port);  // and b the other
  // The test's session holds the key b sends first, uncommitted: b's shard
  // waits on it in its first COPY, its queue fills, and b pauses.
  db.exec("BEGIN");
  db.exec("INSERT INTO events_mirror (topic, payload) VALUES ('held', '" + valid_event("room-held") + "')");
  b.send_all(valid_event("room-held") + "\n" + keys("room-b-", 1000));
  EXPECT_TRUE(eventually([&] { return metric("taylor_backpressure_waits_total{source=\"tcp\"}") >= 1; }))
      << "b never paused\n" << evp.log();
  // a's shard has room: a reads, commits and is acked all the while.
  a.send_all(keys("room-a-", 2000));
  const uint64_t a_acked = a.read_acks_until(2001, 60s);
  const uint64_t b_acked = b.read_acks_until(1001, 100ms);
  db.exec("COMMIT");
  EXPECT_EQ(a_acked, 2001u) << "a waited for the other shard's queue\n" << evp.log();
  EXPECT_EQ(b_acked, 0u) << "b's first line was acked before the row it waits on committed";
  EXPECT_EQ(b.read_acks_until(1001, 60s), 1001u) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'room-%'"), 3002);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(RouteByConnection, AnUpsertRoutesMessagesOnTwoShardsLeaveEachDeviceAtItsNewestState) {
  uint16_t port = free_port(), http_port = free_port();
  tuning t = by_connection();
  t.max_rows = 64;  // many batches on each shard
  evpipe_process evp(config_for(db, port, http_port, t) + device_status_route, "by_conn_upsert");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(device_status_tables);
  evp.start(port);
  // Every message on both connections (so on both shards), each in its own
  // shuffled order: a device's states arrive out of order and twice.
  constexpr int devices = 40, times = 30;
  const std::vector<std::string> lines = device_status_lines(devices, times);
  std::vector<std::unique_ptr<ndjson_client>> conns;
  for (int p = 0; p < 2; ++p) conns.push_back(std::make_unique<ndjson_client>(port));
  std::vector<std::thread> producers;
  std::vector<uint64_t> acked(2, 0);
  for (int p = 0; p < 2; ++p) {
    producers.emplace_back([&, p] {
      std::vector<std::string> mine = lines;
      std::mt19937 rng(17 + p);
      std::shuffle(mine.begin(), mine.end(), rng);
      std::string data;
      for (const auto& m : mine) data += m + "\n";
      conns[p]->send_all(data);
      acked[p] = conns[p]->read_acks_until(mine.size(), 120s);
    });
  }
  for (auto& th : producers) th.join();
  for (auto a : acked) EXPECT_EQ(a, lines.size()) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM devices"), devices);
  EXPECT_EQ(db.count("SELECT count(*) FROM devices WHERE status = 's" + std::to_string(times) + "'"), devices)
      << "every device at its newest state";
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
  EXPECT_LE(db.count("SELECT count(*) FROM device_writes"), devices * times)
      << "a message's second copy, on the other shard, writes no row version";
  auto m = http_get(http_port, "/metrics");  // both shards wrote (route rows are not COPY rows of the mirror)
  EXPECT_GT(metric_value(m, "taylor_batches_total{shard=\"0\"}"), 0) << m;
  EXPECT_GT(metric_value(m, "taylor_batches_total{shard=\"1\"}"), 0) << m;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(RouteByConnection, AnHttpRequestsEventsAllGoToOneShard) {
  uint16_t port = free_port(), http_port = free_port(), metrics_port = free_port();
  std::string cfg = config_for(db, port, metrics_port) + "[[sources.http]]\nlisten = \"127.0.0.1:" +
                    std::to_string(http_port) + "\"\nroute_by = \"connection\"\n";
  evpipe_process evp(cfg, "by_conn_http");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  auto r = http_request(http_port, "POST", "/v1/events", keys("http-", 1000), "Content-Type: application/x-ndjson\r\n");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("\"ok\":1000"), std::string::npos) << r.body.substr(0, 200);
  // The one shard its connection leased (which one depends on whether the
  // harness's readiness probe of the TCP port still holds shard 0).
  std::string m;
  double s0 = 0, s1 = 0;
  (void)eventually([&] {  // the counters move just after the commit the answer waited for
    m = http_get(metrics_port, "/metrics");
    s0 = metric_value(m, "taylor_copy_rows_total{shard=\"0\"}");
    s1 = metric_value(m, "taylor_copy_rows_total{shard=\"1\"}");
    return s0 + s1 == 1000;
  }, 10s);
  EXPECT_TRUE((s0 == 1000 && s1 == 0) || (s0 == 0 && s1 == 1000)) << m;
  // Its connection closed after the answer: no shard counts it any more.
  m = metrics_when(metrics_port, {{"taylor_shard_connections{shard=\"0\"}", 0},
                                  {"taylor_shard_connections{shard=\"1\"}", 0}});
  EXPECT_EQ(metric_value(m, "taylor_shard_connections{shard=\"0\"}") + metric_value(m, "taylor_shard_connections{shard=\"1\"}"), 0)
      << m;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
