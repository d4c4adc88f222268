// perf/floor_client against the real PostgreSQL: open and closed loop store
// exactly the rows they report, in evpipe's events_mirror (generated columns
// filled, so the payload is the envelope evpipe stores), and write the
// figures perf/run.sh reads; bad use fails with a message. perf/nats_floor
// (the JetStream drain's floor) drains a stream into the same table, stores
// each message once with its subject as the topic, and acks every one.
// perf/tcp_floor (the TCP path's floor) stores each line once and acks it
// only after its commit.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/nats_server.h"
#include "tests/support/tcp_pipeline.h"

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

TEST(NatsFloor, DrainsTheStreamOnceAndAcksEveryMessage) {
  test_db db;
  if (!db.available()) {
    if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
    GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
  }
  evpipe_process evp("[postgres]\ndsn = \"" + db.dsn() + "\"\n[http]\nlisten = \"\"\n", "natsfloor");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  nats_server server("natsfloor");
  nats_client client(server.url());
  client.add_stream("FLOOR", "floor.>");
  // 2,500 messages, so that each of the 3 threads fetches several batches of
  // 300 and the last fetches ask for less than a batch.
  std::vector<std::pair<std::string, std::string>> msgs;
  for (int i = 0; i < 2500; ++i) {
    msgs.emplace_back("floor.events." + std::to_string(i % 2),
                      R"({"event_id":"nf-)" + std::to_string(i) + R"(","idempotency_key":"nf-)" + std::to_string(i) +
                          R"(","kind":"floor_test","payload":{"i":)" + std::to_string(i) + "}}");
  }
  client.publish_async(msgs);
  const std::string tmp = env_or("TMPDIR", "/tmp") + "/natsfloor" + std::to_string(::getpid());
  std::string cmd = std::string(NATS_FLOOR_BINARY) + " --dsn '" + db.dsn() + "' --server " + server.url() +
                    " --stream FLOOR --durable fl --connections 3 --fetch-batch 300 --count 2500 > " + tmp +
                    ".out 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << slurp(tmp + ".out");
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'nf-%'"), 2500);
  EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror"), 2500);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic NOT IN ('floor/events/0', 'floor/events/1')"), 0);
  // Every message acked (the acks are flushed before the process exits; the
  // server may still be applying them), nothing left to deliver.
  nats_client::consumer_state st;
  EXPECT_TRUE(eventually([&] {
    st = client.consumer("FLOOR", "fl");
    return st.exists && st.ack_pending == 0 && st.pending == 0 && st.ack_floor_stream == 2500;
  }, 10s)) << "exists " << st.exists << ", ack pending " << st.ack_pending << ", pending " << st.pending
           << ", ack floor " << st.ack_floor_stream;
  std::string out = slurp(tmp + ".out");
  EXPECT_NE(out.find("committed           2500"), std::string::npos) << out;

  // A stream that is not there: refused with its name.
  cmd = std::string(NATS_FLOOR_BINARY) + " --dsn '" + db.dsn() + "' --server " + server.url() +
        " --stream NO_SUCH_STREAM --count 10 > " + tmp + ".out 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 1);
  EXPECT_NE(slurp(tmp + ".out").find("NO_SUCH_STREAM"), std::string::npos) << slurp(tmp + ".out");
}

TEST(TcpFloor, StoresEachLineOnceAndAcksItOnlyAfterItsCommit) {
  test_db db;
  if (!db.available()) {
    if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
    GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
  }
  evpipe_process evp("[postgres]\ndsn = \"" + db.dsn() + "\"\n[http]\nlisten = \"\"\n", "tcpfloor");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  const std::string tmp = env_or("TMPDIR", "/tmp") + "/tcpfloor" + std::to_string(::getpid());
  std::remove((tmp + ".port").c_str());
  // Two clients, then it exits; `timeout` bounds it if the test fails first.
  const std::string cmd = "timeout -k 5 30 " + std::string(TCP_FLOOR_BINARY) + " --dsn '" + db.dsn() +
                          "' --connections 2 --clients 2 --port-file " + tmp + ".port --json " + tmp + ".json > " +
                          tmp + ".out 2>&1";
  std::atomic<bool> unused{false};
  int rc = -1;
  std::thread floor([&] { rc = std::system(cmd.c_str()); });
  stop_and_join joined{unused, floor};
  uint16_t port = 0;
  ASSERT_TRUE(eventually([&] {
    std::ifstream in(tmp + ".port");
    return static_cast<bool>(in >> port) && port != 0;
  }, 10s)) << slurp(tmp + ".out");
  auto lines = [](const std::string& prefix, int n, bool last_newline) {
    std::string data;
    for (int i = 0; i < n; ++i) {
      data += R"({"event_id":")" + prefix + std::to_string(i) + R"(","idempotency_key":")" + prefix +
              std::to_string(i) + R"(","kind":"floor_test","topic":"floor/tcp/)" + prefix + R"(","payload":{"i":)" +
              std::to_string(i) + "}}";
      if (i + 1 < n || last_newline) data += "\n";
    }
    return data;
  };

  // The first client's 300 lines while the table is locked: none acked
  // before the commit, all of them after it.
  const auto around = send_with_table_locked(db, port, "events_mirror", lines("a", 300, true), 300);
  EXPECT_TRUE(acked_only_after_commit(around, 300));
  // The second's last line has no newline: at the end of its stream it is a
  // line too.
  {
    ndjson_client c(port);
    c.send_all(lines("b", 700, false));
    c.shutdown_write();
    bool monotonic = true;  // every ack larger than the one before
    EXPECT_EQ(c.read_acks_until(700, 20s, &monotonic), 700u);
    EXPECT_TRUE(monotonic);
  }
  floor.join();
  EXPECT_EQ(WEXITSTATUS(rc), 0) << slurp(tmp + ".out");
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic = 'floor/tcp/a' AND idempotency_key LIKE 'a%'"),
            300);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic = 'floor/tcp/b' AND idempotency_key LIKE 'b%'"),
            700);
  EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror"), 1000);
  const std::string json = slurp(tmp + ".json");
  EXPECT_NE(json.find("\"rows\":1000,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"clients\":2,"), std::string::npos) << json;

  // A line jsonb refuses, then a good one: PostgreSQL refuses the COPY that
  // holds the first (with the second, when one read took both), the run
  // fails with why, and neither line is acked.
  const std::string bad = "timeout -k 5 30 " + std::string(TCP_FLOOR_BINARY) + " --dsn '" + db.dsn() +
                          "' --clients 1 --port-file " + tmp + ".port2 > " + tmp + ".out2 2>&1";
  std::remove((tmp + ".port2").c_str());
  std::thread bad_floor([&] { rc = std::system(bad.c_str()); });
  stop_and_join bad_joined{unused, bad_floor};
  ASSERT_TRUE(eventually([&] {
    std::ifstream in(tmp + ".port2");
    return static_cast<bool>(in >> port) && port != 0;
  }, 10s)) << slurp(tmp + ".out2");
  {
    ndjson_client c(port);
    c.send_all("{\"topic\":\"floor/tcp/c\",\n" + lines("c", 1, true));
    EXPECT_EQ(c.read_acks_until(2, 5s), 0u);
  }
  bad_floor.join();
  EXPECT_EQ(WEXITSTATUS(rc), 1);
  EXPECT_NE(slurp(tmp + ".out2").find("COPY into events_mirror failed"), std::string::npos) << slurp(tmp + ".out2");
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic = 'floor/tcp/c'"), 0);
}

}  // namespace
}  // namespace evpipe::testing
