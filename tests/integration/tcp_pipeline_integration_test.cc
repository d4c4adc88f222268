// End to end against the real PostgreSQL that scripts/test.sh starts: the
// evpipe binary runs as a child process; a producer sends NDJSON over TCP and
// reads the acks; the tables are then checked row by row.

#include <gtest/gtest.h>

#include <iostream>
#include <map>
#include <random>
#include <set>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"
#include "tests/support/tcp_proxy.h"

namespace evpipe::testing {
namespace {

// A mixed stream and what it must leave in the tables.
struct mixed_stream {
  std::string data;
  uint64_t lines = 0;
  std::set<std::string> keys;             // valid unique keys
  std::map<std::string, long> dlq;        // reason_code -> rows
  void add(const std::string& line) {
    data += line + "\n";
    ++lines;
  }
};

mixed_stream build_stream(const std::string& run, size_t valid) {
  mixed_stream s;
  std::mt19937 rng(7);
  std::vector<std::string> sent;
  for (size_t i = 0; i < valid; ++i) {
    std::string key = run + "-" + std::to_string(i);
    s.add(valid_event(key, "row " + std::to_string(i)));
    s.keys.insert(key);
    sent.push_back(key);
    // Every 7th event is resent at once, every 11th much later.
    if (i % 7 == 3) s.add(valid_event(key, "row " + std::to_string(i)));
    if (i % 11 == 5 && i > 200) s.add(valid_event(sent[rng() % (sent.size() - 100)], "resent"));
  }
  // Payloads that COPY's text format or a naive writer would break.
  std::string special = run + "-special";
  s.add(valid_event(special, "tab\\there, newline\\nthere, back\\\\slash, \\\"quoted\\\", caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \\u00e9 \xf0\x9f\x98\x80"));
  s.keys.insert(special);
  std::string topical = run + "-topic";
  s.add(valid_event(topical, "t", ",\"topic\":\"autocore/ESP32_001/telemetry\""));
  s.keys.insert(topical);
  std::string crlf = run + "-crlf";
  s.data += valid_event(crlf) + "\r\n";
  ++s.lines;
  s.keys.insert(crlf);
  s.add("");     // blank lines are counted and acked
  s.add("   ");

  s.add("{not json");
  s.add("plain text");
  s.dlq["invalid_json"] += 2;
  s.add("{\"trace_id\":\"" + uuid_for(1) + "\",\"kind\":\"k\",\"idempotency_key\":\"" + run + "-m\",\"payload\":{}}");
  s.dlq["missing_field"]++;
  s.add("{\"trace_id\":\"not-a-uuid\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"" + run + "-t\",\"payload\":{}}");
  s.dlq["invalid_trace_id"]++;
  s.add("{\"trace_id\":\"" + uuid_for(2) + "\",\"ts\":\"2025-02-30T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"" + run + "-ts\",\"payload\":{}}");
  s.dlq["invalid_ts"]++;
  s.add("{\"trace_id\":\"" + uuid_for(3) + "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"\",\"idempotency_key\":\"" + run + "-k\",\"payload\":{}}");
  s.dlq["invalid_kind"]++;
  s.add("{\"trace_id\":\"" + uuid_for(4) + "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"\",\"payload\":{}}");
  s.dlq["invalid_idempotency_key"]++;
  s.add("{\"trace_id\":\"" + uuid_for(5) + "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"" + run + "-p\",\"payload\":[1]}");
  s.dlq["invalid_payload"]++;
  s.add("{\"trace_id\":\"" + uuid_for(6) + "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"" + run + "-tp\",\"payload\":{},\"topic\":7}");
  s.dlq["invalid_topic"]++;
  s.add(valid_event(run + "-big", std::string(10000, 'x')));  // over max_event_bytes = 4096
  s.dlq["too_large"]++;
  s.add("{\"trace_id\":\"" + uuid_for(8) + "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"" + run + "-nul\",\"payload\":{\"s\":\"a\\u0000b\"}}");
  s.dlq["invalid_json"]++;
  return s;
}

// What a test changes in the configuration config_for() writes.
struct tuning {
  uint32_t queue_capacity = 65536;
  uint32_t max_rows = 500;
  uint32_t linger_ms = 2;
  uint32_t max_attempts = 0;
  std::string dsn;        // default: the test schema's
  std::string tcp_extra;  // more keys for the [[sources.tcp]] section
};

std::string config_for(const test_db& db, uint16_t tcp_port, uint16_t http_port, const tuning& t = {}) {
  return "[pipeline]\nshards = 2\nqueue_capacity = " + std::to_string(t.queue_capacity) + "\n"
         "[batch]\nmax_rows = " + std::to_string(t.max_rows) + "\nlinger_ms = " + std::to_string(t.linger_ms) + "\n"
         "[events]\nmax_event_bytes = 4096\n"
         "[postgres]\ndsn = \"" + (t.dsn.empty() ? db.dsn() : t.dsn) + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
         "max_attempts = " + std::to_string(t.max_attempts) + "\n"
         "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
         "[metrics]\nprefix = \"taylor\"\n"
         "[log]\nlevel = \"warn\"\n"
         "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) + "\"\ntopic = \"tracker/events/it\"\n" +
         t.tcp_extra;
}

class TcpPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
  }
  test_db db;
};

TEST_F(TcpPipeline, MixedStreamLandsExactlyOnceAndRestartAddsNothing) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port), "mixed");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  ASSERT_EQ(evp.run_command("migrate"), 0) << "migrate must be idempotent: " << evp.log("migrate.log");
  evp.start(port);

  auto stream = build_stream("mix", 3000);
  {
    ndjson_client producer(port);
    producer.send_all(stream.data);
    bool monotonic = true;
    EXPECT_EQ(producer.read_acks_until(stream.lines, 60s, &monotonic), stream.lines) << evp.log();
    EXPECT_TRUE(monotonic);
  }

  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), static_cast<long>(stream.keys.size()));
  auto keys = db.column("SELECT idempotency_key FROM events_mirror");
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()), stream.keys);
  // The stored payload is the envelope as sent, escapes and all.
  EXPECT_EQ(db.column("SELECT payload->'payload'->>'text' FROM events_mirror WHERE idempotency_key = 'mix-special'")
                .at(0),
            "tab\there, newline\nthere, back\\slash, \"quoted\", caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xc3\xa9 \xf0\x9f\x98\x80");
  EXPECT_EQ(db.column("SELECT topic FROM events_mirror WHERE idempotency_key = 'mix-topic'").at(0),
            "autocore/ESP32_001/telemetry");
  EXPECT_EQ(db.column("SELECT topic FROM events_mirror WHERE idempotency_key = 'mix-1'").at(0), "tracker/events/it");
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE trace_id IS NULL"), 0);

  for (const auto& [reason, n] : stream.dlq) {
    EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = '" + reason + "'"), n) << reason;
  }
  long dlq_total = 0;
  for (const auto& [r, n] : stream.dlq) dlq_total += n;
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), dlq_total);
  // Bad JSON keeps its bytes; bad envelopes keep their JSON; every row says why.
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'invalid_json' AND payload IS NULL "
                     "AND raw = convert_to('{not json', 'UTF8')"),
            1);
  EXPECT_EQ(db.column("SELECT payload->>'idempotency_key' FROM dlq_events WHERE reason_code = 'invalid_ts'").at(0),
            "mix-ts");
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE failure_reason = '' OR original_topic <> 'tracker/events/it'"), 0);
  EXPECT_EQ(db.column("SELECT length(raw) FROM dlq_events WHERE reason_code = 'too_large'").at(0), "4096");

  // Metrics under the dashboard prefix.
  auto metrics = http_get(http_port, "/metrics");
  EXPECT_NE(metrics.find("taylor_ingest_total{topic=\"tracker/events/it\",kind=\"project_created\"}"), std::string::npos);
  EXPECT_NE(metrics.find("taylor_dlq_total{topic=\"tracker/events/it\",reason=\"invalid_ts\"} 1"), std::string::npos);
  EXPECT_NE(metrics.find("taylor_event_latency_seconds_count"), std::string::npos);
  EXPECT_NE(http_get(http_port, "/health/ready").find("200 OK"), std::string::npos);
  EXPECT_NE(http_get(http_port, "/health/live").find("200 OK"), std::string::npos);

  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();

  // Restart (empty dedup window) and resend everything, with new events mixed
  // in: batches then hold both keys the table has and keys it lacks; only the
  // new ones land.
  std::string resend;
  uint64_t resend_lines = 0;
  size_t fresh = 0;
  for (size_t pos = 0; pos < stream.data.size();) {
    size_t nl = stream.data.find('\n', pos);
    resend.append(stream.data, pos, nl + 1 - pos);
    pos = nl + 1;
    if (++resend_lines % 5 == 0) {
      resend += valid_event("fresh-" + std::to_string(fresh++)) + "\n";
      ++resend_lines;
    }
  }
  evp.start(port);
  {
    ndjson_client producer(port);
    producer.send_all(resend);
    EXPECT_EQ(producer.read_acks_until(resend_lines, 60s), resend_lines) << evp.log();
  }
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), static_cast<long>(stream.keys.size() + fresh));
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'fresh-%'"), static_cast<long>(fresh));
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), dlq_total);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(TcpPipeline, ConcurrentConnectionsSendingTheSameKeysStoreEachOnce) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port), "concurrent");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  std::string data;
  for (int i = 0; i < 5000; ++i) data += valid_event("c-" + std::to_string(i)) + "\n";
  std::vector<std::thread> producers;
  std::vector<uint64_t> acked(4, 0);
  for (int p = 0; p < 4; ++p) {
    producers.emplace_back([&, p] {
      ndjson_client c(port);
      c.send_all(data);
      acked[p] = c.read_acks_until(5000, 60s);
    });
  }
  for (auto& t : producers) t.join();
  for (auto a : acked) EXPECT_EQ(a, 5000u);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 5000);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(TcpPipeline, TinyQueuesPauseReadingAndLoseNothing) {
  uint16_t port = free_port(), http_port = free_port();
  // Queues of 64 events, 100 unacked lines per connection, batches of 50:
  // sources spend most of the run paused by backpressure.
  std::string cfg = config_for(db, port, http_port, {.queue_capacity = 64, .max_rows = 50, .tcp_extra = "max_unacked = 100\n"});
  evpipe_process evp(cfg, "tiny");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  const int per_conn = 10000;
  std::vector<std::thread> producers;
  std::vector<uint64_t> acked(3, 0);
  for (int p = 0; p < 3; ++p) {
    producers.emplace_back([&, p] {
      std::string data;
      for (int i = 0; i < per_conn; ++i) data += valid_event("bp-" + std::to_string(p) + "-" + std::to_string(i)) + "\n";
      ndjson_client c(port);
      c.send_all(data);
      acked[p] = c.read_acks_until(per_conn, 120s);
    });
  }
  for (auto& t : producers) t.join();
  for (auto a : acked) EXPECT_EQ(a, static_cast<uint64_t>(per_conn));
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 3 * per_conn);
  auto metrics = http_get(http_port, "/metrics");
  EXPECT_NE(metrics.find("taylor_unacked_events{source=\"tcp\"} 0"), std::string::npos) << metrics.substr(0, 2000);
  EXPECT_GT(metric_value(metrics, "taylor_backpressure_waits_total{source=\"tcp\"}"), 10.0) << "the sources never paused: the test did not test backpressure";
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(TcpPipeline, SigtermUnderLoadLosesNothingAcked) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port), "sigterm");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  const int n = 40000;
  std::string data;
  for (int i = 0; i < n; ++i) data += valid_event("s-" + std::to_string(i)) + "\n";
  ndjson_client c(port);
  std::thread sender([&] {
    try {
      c.send_all(data);
    } catch (...) {
      // the server stops reading and closes: expected
    }
  });
  uint64_t first = c.read_acks_until(1, 30s);
  ASSERT_GE(first, 1u);
  evp.kill(SIGTERM);
  uint64_t last = c.read_acks_until(n, 30s);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
  sender.join();
  // Every acked line is in the table: lines are numbered from 1 in order.
  long stored = db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = ANY (ARRAY(SELECT 's-' || g FROM "
                         "generate_series(0, " + std::to_string(static_cast<long>(last) - 1) + ") g))");
  EXPECT_EQ(stored, static_cast<long>(last));
  EXPECT_GE(db.count("SELECT count(*) FROM events_mirror"), static_cast<long>(last));
}

TEST_F(TcpPipeline, RowsThePostgresRefusesAreDeadLetteredAndTheirBatchCommits) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port), "poison");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  // A rule the validator knows nothing about: PostgreSQL refuses these rows.
  db.exec("ALTER TABLE events_mirror ADD CONSTRAINT no_poison CHECK (payload->'payload'->>'text' <> 'poison')");
  evp.start(port);
  std::string data;
  std::set<std::string> good;
  for (int i = 0; i < 3000; ++i) {
    bool poison = i == 0 || i == 1234 || i == 1235 || i == 2999;
    std::string key = "pz-" + std::to_string(i);
    data += valid_event(key, poison ? "poison" : "fine") + "\n";
    if (!poison) good.insert(key);
  }
  {
    ndjson_client c(port);
    c.send_all(data);
    EXPECT_EQ(c.read_acks_until(3000, 60s), 3000u) << evp.log();
  }
  auto keys = db.column("SELECT idempotency_key FROM events_mirror");
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()), good);
  EXPECT_EQ(keys.size(), good.size());
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'db_rejected' AND payload->>'idempotency_key' "
                     "IN ('pz-0', 'pz-1234', 'pz-1235', 'pz-2999') AND failure_reason LIKE '%23514%no_poison%'"),
            4);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 4);
  auto metrics = http_get(http_port, "/metrics");
  EXPECT_NE(metrics.find("taylor_db_rejected_total{sqlstate=\"23514\"} 4"), std::string::npos);
  EXPECT_NE(metrics.find("reason=\"db_rejected\"} 4"), std::string::npos);

  // Once the rule is lifted, replaying the refused events mirrors them: their
  // keys were not kept as seen.
  db.exec("ALTER TABLE events_mirror DROP CONSTRAINT no_poison");
  {
    ndjson_client c(port);
    c.send_all(data);
    EXPECT_EQ(c.read_acks_until(3000, 60s), 3000u) << evp.log();
  }
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 3000);

  // Resending everything after a restart adds nothing.
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(), 0) << evp.log();
  evp.start(port);
  {
    ndjson_client c(port);
    c.send_all(data);
    EXPECT_EQ(c.read_acks_until(3000, 60s), 3000u) << evp.log();
  }
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 3000);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 4);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

// SIGKILL at random moments under load. The producer does what an at-least-
// once client does: after a reconnect it resends everything after its last
// ack. After each kill every acked event must be stored; at the end every
// event must be stored exactly once.
TEST_F(TcpPipeline, RepeatedSigkillLosesAndDuplicatesNothing) {
  uint16_t port = free_port(), http_port = free_port();
  std::string cfg = config_for(db, port, http_port, {.max_rows = 200});
  evpipe_process evp(cfg, "sigkill");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);

  const uint64_t n = 300000;  // outlasts 10 kills at any speed seen here
  std::string data;
  std::vector<size_t> offset;  // where line i starts in data
  for (uint64_t i = 0; i < n; ++i) {
    offset.push_back(data.size());
    data += valid_event("kill-" + std::to_string(i)) + "\n";
  }
  offset.push_back(data.size());

  std::atomic<uint64_t> acked{0};  // lines [0, acked) have a committed outcome
  std::atomic<bool> producing{true};
  std::thread producer([&] {
    uint64_t base = 0;
    auto deadline = std::chrono::steady_clock::now() + 120s;
    while (base < n && std::chrono::steady_clock::now() < deadline) {
      std::unique_ptr<ndjson_client> c;
      try {
        c = std::make_unique<ndjson_client>(port);
      } catch (const std::exception&) {
        std::this_thread::sleep_for(20ms);  // evpipe is down: try again
        continue;
      }
      std::thread sender([&, from = base] {
        try {
          c->send_all(data.substr(offset[from]));
        } catch (const std::exception&) {
          // killed mid-send: the unacked rest is resent on the next connection
        }
      });
      while (!c->closed() && base + c->last_ack() < n) {
        c->read_acks_until(n - base, 50ms);
        acked.store(base + c->last_ack());
      }
      c->shutdown_write();
      sender.join();
      base += c->last_ack();
    }
    producing.store(false);
  });

  std::mt19937 rng(12345);
  int kills = 0;
  for (; kills < 10 && producing.load(); ++kills) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 300));
    uint64_t acked_before = acked.load();
    std::cout << "kill " << kills + 1 << " with " << acked_before << " of " << n << " acked\n";
    evp.kill(SIGKILL);
    // Everything acked before the kill is in the table.
    long stored = db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = ANY (ARRAY(SELECT 'kill-' || g "
                           "FROM generate_series(0, " + std::to_string(static_cast<long>(acked_before) - 1) + ") g))");
    EXPECT_EQ(stored, static_cast<long>(acked_before)) << "kill " << kills;
    evp.start(port);
  }
  producer.join();
  EXPECT_EQ(kills, 10) << "the load ended before 10 kills: make it bigger";
  EXPECT_EQ(acked.load(), n);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), static_cast<long>(n));
  EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror WHERE idempotency_key LIKE 'kill-%'"),
            static_cast<long>(n));
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

// The database becomes unreachable (every connection reset, new ones
// refused) while events keep coming: nothing is acked until it returns, the
// ready check says so, and afterwards every event lands once.
TEST_F(TcpPipeline, DatabaseOutageHoldsAcksAndResumesWithoutLoss) {
  if (db.server_port() == 0) GTEST_SKIP() << "needs EVPIPE_TEST_DSN as a URI with host:port";
  tcp_proxy proxy(db.server_port());
  uint16_t port = free_port(), http_port = free_port();
  std::string cfg = config_for(db, port, http_port, {.queue_capacity = 256, .dsn = db.dsn_via(proxy.port())});
  evpipe_process evp(cfg, "outage");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  const uint64_t total = 22000;
  std::string before, during;
  for (uint64_t i = 0; i < 2000; ++i) before += valid_event("out-" + std::to_string(i)) + "\n";
  for (uint64_t i = 2000; i < total; ++i) during += valid_event("out-" + std::to_string(i)) + "\n";

  ndjson_client c(port);
  c.send_all(before);
  ASSERT_EQ(c.read_acks_until(2000, 30s), 2000u);

  proxy.cut();
  // evpipe stops reading once its queues are full, so this send blocks: it
  // runs beside the checks and finishes after the database returns.
  std::thread sender([&] { c.send_all(during); });
  EXPECT_EQ(c.read_acks_until(total, 2s), 2000u) << "acked while the database was unreachable";
  // Memory stays bounded: evpipe has read only what its queues, batches and
  // one read hold; the rest waits in TCP buffers.
  auto down = http_get(http_port, "/metrics");
  EXPECT_GT(metric_value(down, "taylor_backpressure_waits_total{source=\"tcp\"}"), 0.0);
  EXPECT_LT(metric_value(down, "taylor_unacked_events{source=\"tcp\"}"), 6000.0);
  std::cout << "while down: " << metric_value(down, "taylor_unacked_events{source=\"tcp\"}")
            << " of 20000 sent events read and unacked\n";
  bool not_ready = false;
  for (int i = 0; i < 40 && !not_ready; ++i) {
    not_ready = http_get(http_port, "/health/ready").find("503") != std::string::npos;
    if (!not_ready) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(not_ready) << "/health/ready stayed ready during the outage";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 2000);

  proxy.restore();
  EXPECT_EQ(c.read_acks_until(total, 60s), total) << evp.log();
  sender.join();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), static_cast<long>(total));
  EXPECT_GT(metric_value(http_get(http_port, "/metrics"), "taylor_db_retries_total"), 0.0);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(TcpPipeline, ConnectionLimitAndIdleTimeoutCloseHostileClients) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port, {.tcp_extra = "max_connections = 3\nidle_timeout_s = 1\n"}), "hostile");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);  // its readiness probe connects and goes: wait for that
  std::this_thread::sleep_for(200ms);

  ndjson_client idle(port), trickle(port), busy(port);
  std::this_thread::sleep_for(100ms);
  ndjson_client refused(port);  // the fourth: closed at once
  EXPECT_EQ(refused.read_acks_until(1, 2s), 0u);
  EXPECT_TRUE(refused.closed());

  // The trickler sends bytes that never make a line; the busy client sends a
  // line every 300 ms; the idle one sends nothing.
  std::string event = valid_event("busy-0");
  auto t0 = std::chrono::steady_clock::now();
  int busy_lines = 0;
  bool trickle_cut = false;  // a send failed: the server had closed it
  for (size_t i = 0; std::chrono::steady_clock::now() - t0 < 2500ms; ++i) {
    try {
      if (!trickle_cut) trickle.send_all(std::string(1, event[i % event.size()]));
    } catch (const std::exception&) {
      trickle_cut = true;
    }
    if (i % 3 == 0) busy.send_all(valid_event("busy-" + std::to_string(busy_lines++)) + "\n");
    std::this_thread::sleep_for(100ms);
  }
  idle.read_acks_until(1, 100ms);
  trickle.read_acks_until(1, 100ms);
  EXPECT_TRUE(idle.closed()) << "an idle client was not closed";
  EXPECT_TRUE(trickle_cut || trickle.closed()) << "a client trickling a never-ending line was not closed";
  EXPECT_EQ(busy.read_acks_until(busy_lines, 5s), static_cast<uint64_t>(busy_lines));
  EXPECT_FALSE(busy.closed());
  auto metrics = http_get(http_port, "/metrics");
  EXPECT_GE(metric_value(metrics, "taylor_connections_refused_total{source=\"tcp\"}"), 1.0);
  EXPECT_GE(metric_value(metrics, "taylor_connections_timed_out_total{source=\"tcp\"}"), 2.0);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

// Hostile events, each between two valid neighbours in the same batch: every
// one ends in exactly one of the two tables, the neighbours all land, and
// evpipe stays up.
TEST_F(TcpPipeline, NastyEventsEndInOneTableAndSpareTheirNeighbours) {
  uint16_t port = free_port(), http_port = free_port();
  std::string cfg = config_for(db, port, http_port, {.linger_ms = 200});  // one batch
  evpipe_process evp(cfg, "nasty");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);

  const std::string id = "\"trace_id\":\"550e8400-e29b-41d4-a716-446655440000\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\"";
  auto ev = [&](const std::string& key, const std::string& payload, const std::string& extra = "") {
    return "{" + id + ",\"idempotency_key\":\"" + key + "\",\"payload\":" + payload + extra + "}";
  };
  std::string deep_ok, deep_bad;
  for (int i = 0; i < 60; ++i) deep_ok += "[";
  for (int i = 0; i < 60; ++i) deep_ok += "]";
  for (int i = 0; i < 5000; ++i) deep_bad += "[";
  for (int i = 0; i < 5000; ++i) deep_bad += "]";
  const std::vector<std::string> nasty = {
      "\xEF\xBB\xBF" + ev("n-bom", "{}"),
      ev("n-trailing", "{}") + " {}",
      ev("n-trailing2", "{}") + "garbage",
      ev("n-dupkey", "{}", ",\"idempotency_key\":\"other\""),
      ev("n-dupfield", "{\"a\":1,\"a\":2}"),  // duplicate key inside the payload: valid JSON
      ev("n-deep-ok", "{\"d\":" + deep_ok + "}"),
      ev("n-deep-bad", "{\"d\":" + deep_bad + "}"),
      ev("n-hugeint", "{\"n\":123456789012345678901234567890123456789}"),
      ev("n-hugeexp", "{\"n\":1e999999}"),
      ev("n-tinyexp", "{\"n\":1e-999}"),
      ev("n-escapes", "{\"s\":\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0001 \\u00e9 \\u20ac \\ud83d\\ude00\"}"),
      ev("n-lone-high", "{\"s\":\"\\ud800\"}"),
      ev("n-lone-low", "{\"s\":\"\\udc00x\"}"),
      ev("n-overlong", "{\"s\":\"\xC0\xAF\"}"),
      ev("n-surrogate-utf8", "{\"s\":\"\xED\xA0\x80\"}"),
      ev("n-nul-escape", "{\"s\":\"a\\u0000b\"}"),
      ev("n-nul-key", "{\"a\\u0000\":1}"),
      std::string("{\"trace_id\":\"x\0y\"}", 19),  // a raw NUL byte
      ev("n-raw-tab", "{\"s\":\"a\tb\"}"),            // raw control character in a string
      ev("n-cr-inside", "{\"s\":1}\r\r"),
      "\r",
      ev("n-key-ctrl", "{}").replace(id.size() + 1, 0, " "),
      "{\"idempotency_key\":",
      "[]",
      "null",
      "\"just a string\"",
      std::string(200, '{'),
      ev("n-key-\\u00e9", "{}"),  // escaped key: stored under its unescaped value
  };
  std::string data;
  size_t lines = 0;
  for (size_t i = 0; i < nasty.size(); ++i) {
    data += valid_event("nb-" + std::to_string(i) + "-before") + "\n" + nasty[i] + "\n" +
            valid_event("nb-" + std::to_string(i) + "-after") + "\n";
    lines += 3;
  }
  {
    ndjson_client c(port);
    c.send_all(data);
    EXPECT_EQ(c.read_acks_until(lines, 30s), lines) << evp.log();
  }
  // Neighbours all landed.
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'nb-%'"),
            static_cast<long>(2 * nasty.size()));
  // Each nasty line is in exactly one table (one blank line, "\r", is neither).
  long mirrored = db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key NOT LIKE 'nb-%'");
  long dead = db.count("SELECT count(*) FROM dlq_events");
  EXPECT_EQ(mirrored + dead, static_cast<long>(nasty.size()) - 1) << "mirrored " << mirrored << ", dead " << dead;
  // Spot checks of where things went.
  for (const char* key : {"n-dupfield", "n-deep-ok", "n-tinyexp", "n-escapes", "n-cr-inside", "n-key-\xc3\xa9"}) {
    EXPECT_EQ(db.count(std::string("SELECT count(*) FROM events_mirror WHERE idempotency_key = '") + key + "'"), 1) << key;
  }
  EXPECT_EQ(db.column("SELECT payload->'payload'->>'s' FROM events_mirror WHERE idempotency_key = 'n-escapes'").at(0),
            "\" \\ / \b \f \n \r \t \x01 \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  // Not JSON that PostgreSQL could store: bytes kept raw (the 10 KB one over the 4 KiB limit as too_large).
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code IN ('invalid_json', 'too_large') "
                     "AND raw IS NOT NULL AND payload IS NULL"),
            dead);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE failure_reason = ''"), 0);
  // Still up and serving.
  EXPECT_NE(http_get(http_port, "/health/live").find("200 OK"), std::string::npos);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

// A batch that cannot commit for a reason that is not its data (here the
// table is locked by someone else and evpipe's lock_timeout expires) is
// dead-lettered as retries_exhausted after [postgres] max_attempts, so its
// events are acked with a durable outcome instead of holding the shard.
TEST_F(TcpPipeline, BatchesThatNeverCommitAreDeadLetteredAfterMaxAttempts) {
  if (db.server_port() == 0) GTEST_SKIP() << "needs EVPIPE_TEST_DSN as a URI";
  uint16_t port = free_port(), http_port = free_port();
  std::string cfg = config_for(db, port, http_port, {.max_attempts = 3, .dsn = db.dsn("%20-clock_timeout%3D200")});
  evpipe_process evp(cfg, "exhausted");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  std::string stuck, later;
  for (int i = 0; i < 100; ++i) stuck += valid_event("ex-" + std::to_string(i)) + "\n";
  for (int i = 0; i < 100; ++i) later += valid_event("ex-later-" + std::to_string(i)) + "\n";

  db.exec("BEGIN");
  db.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  ndjson_client c(port);
  c.send_all(stuck);
  EXPECT_EQ(c.read_acks_until(100, 30s), 100u) << evp.log();
  db.exec("COMMIT");

  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'retries_exhausted' "
                     "AND failure_reason LIKE '%3 attempts%55P03%' AND payload->>'idempotency_key' LIKE 'ex-%'"),
            100);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 0);
  c.send_all(later);  // the lock is gone: business as usual
  EXPECT_EQ(c.read_acks_until(200, 30s), 200u);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 100);
  // Replaying the dead letters (what a DLQ recovery does) mirrors them now:
  // evpipe did not keep their keys as seen.
  c.send_all(stuck);
  EXPECT_EQ(c.read_acks_until(300, 30s), 300u);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 200);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(TcpPipeline, HalfCloseGetsTheLastLineAckedThenTheConnectionCloses) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(config_for(db, port, http_port), "halfclose");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  ndjson_client c(port);
  // The last event has no trailing newline: end of stream ends it.
  c.send_all(valid_event("h-1") + "\n" + valid_event("h-2") + "\r\n" + valid_event("h-3"));
  c.shutdown_write();
  EXPECT_EQ(c.read_acks_until(3, 30s), 3u);
  c.read_acks_until(4, 3s);  // nothing more comes; the server closes
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key IN ('h-1', 'h-2', 'h-3')"), 3);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST_F(TcpPipeline, StartupErrorsAreOneLineAndNonZero) {
  // Unmigrated schema: refuses to run and says what to do.
  uint16_t port = free_port();
  evpipe_process evp(config_for(db, port, free_port()), "unmigrated");
  EXPECT_EQ(evp.run_command("run"), 1);
  EXPECT_NE(evp.log("run.log").find("evpipe migrate"), std::string::npos) << evp.log("run.log");
  // Unreachable database.
  evpipe_process bad("[postgres]\ndsn = \"postgresql://nobody@127.0.0.1:1/none\"\n[[sources.tcp]]\nlisten = \"127.0.0.1:" +
                         std::to_string(free_port()) + "\"\n",
                     "unreachable");
  EXPECT_EQ(bad.run_command("run"), 1);
  auto log = bad.log("run.log");
  EXPECT_NE(log.find("cannot connect to PostgreSQL"), std::string::npos) << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  // Config error: exit 2, names the key.
  evpipe_process wrong("[batch]\nmax_rows = -1\n", "badconfig");
  EXPECT_EQ(wrong.run_command("check-config"), 2);
  EXPECT_NE(wrong.log("check-config.log").find("[batch] max_rows"), std::string::npos);
}

}  // namespace
}  // namespace evpipe::testing
