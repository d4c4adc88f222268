// Many evpipe processes, one table (issue 14): three evpipe processes with two
// shards each on one JetStream durable consumer, writing one events_mirror,
// with keys that overlap between messages (so two copies of a key can meet in
// two processes) and SIGKILLs. Each message is processed by one process, and
// every key has exactly one row: coordination is the server's (one consumer)
// and PostgreSQL's (the unique index), nothing of evpipe's own.

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <memory>

#include "tests/support/harness.h"
#include "tests/support/key_census.h"
#include "tests/support/nats_server.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

std::string config(const test_db& db, const std::string& url, uint16_t http_port) {
  return "[pipeline]\nshards = 2\n"
         "[postgres]\ndsn = \"" + db.dsn() + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
         "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
         "[stream]\nlisten = \"\"\n"
         "[[sources.nats]]\nservers = [\"" + url + "\"]\nstream = \"EVENTS\"\ndurable = \"shared\"\n"
         "ack_wait_s = 3\nfetch_batch = 64\nmax_ack_pending = 256\n";
}

// Message i carries key (run, i / 2): every key is sent twice, the copies
// next to each other in the stream, so they are often pulled by two
// different processes at once.
std::vector<std::pair<std::string, std::string>> overlapping(const std::string& run, int from, int n) {
  std::vector<std::pair<std::string, std::string>> out;
  for (int i = from; i < from + n; ++i) {
    out.emplace_back("tracker.events.x", valid_event(run + "-" + std::to_string(i / 2), i % 2 ? "copy" : "first"));
  }
  return out;
}

class NatsManyProcesses : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
    if (::access(env_or("EVPIPE_TEST_NATS_SERVER", "/usr/sbin/nats-server").c_str(), X_OK) != 0) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "nats-server is not installed";
      GTEST_SKIP() << "nats-server is not installed (scripts/test.sh installs it)";
    }
  }
  test_db db;
};

TEST_F(NatsManyProcesses, ThreeProcessesOnOneDurableStoreEveryKeyOnceThroughSigkills) {
  nats_server server("many");
  nats_client client(server.url());
  client.add_stream("EVENTS", "tracker.>");
  client.add_consumer("EVENTS", "shared", 3000);

  std::vector<std::unique_ptr<evpipe_process>> evp;
  std::vector<uint16_t> ports;
  for (int i = 0; i < 3; ++i) {
    ports.push_back(free_port());
    evp.push_back(std::make_unique<evpipe_process>(config(db, server.url(), ports[i]), "nats_many_" + std::to_string(i)));
  }
  ASSERT_EQ(evp[0]->run_command("migrate"), 0) << evp[0]->log("migrate.log");
  for (int i = 0; i < 3; ++i) evp[i]->start(ports[i]);
  auto settled = [&](uint64_t total) {
    auto st = client.consumer("EVENTS", "shared");
    return st.ack_floor_stream >= total && st.pending == 0 && st.ack_pending == 0;
  };

  // Phase 1, nothing killed: the server hands each message to one process.
  const int first = 3000;
  client.publish_async(overlapping("many", 0, first));
  ASSERT_TRUE(eventually([&] { return settled(first); }, 90s)) << evp[0]->log();
  double sum = 0;
  int busy = 0;
  for (int i = 0; i < 3; ++i) {
    double got = metric_of(ports[i], "evpipe_events_received_total{source=\"nats\"}");
    sum += got;
    busy += got > 0 ? 1 : 0;
  }
  EXPECT_EQ(sum, first) << "a message was processed by two processes";
  EXPECT_EQ(busy, 3) << "the durable did not spread the messages";
  EXPECT_TRUE(each_key_once(db, "many-%", first / 2));

  // Phase 2: while messages flow, each process is SIGKILLed in turn and
  // restarted; what it held comes back to the others (or to itself) after
  // the ack wait.
  // The producer is paced so that the kills fall while messages flow; once it
  // is done, a round does not wait for messages that will not come.
  const int second = 6000;
  std::atomic<bool> published{false};
  std::thread producer([&] {
    nats_client pub(server.url());
    for (int i = 0; i < second; i += 500) {
      pub.publish_async(overlapping("many", first + i, 500));
      std::this_thread::sleep_for(250ms);
    }
    published.store(true);
  });
  for (int round = 0; round < 5; ++round) {
    auto& victim = *evp[round % 3];
    uint16_t port = ports[round % 3];
    double at = metric_of(port, "evpipe_events_received_total{source=\"nats\"}");
    eventually([&] {
      return published.load() || metric_of(port, "evpipe_events_received_total{source=\"nats\"}") >= at + 200;
    }, 10s, 5ms);
    victim.kill(SIGKILL);
    victim.start(port);
  }
  producer.join();
  ASSERT_TRUE(eventually([&] { return settled(first + second); }, 120s)) << evp[0]->log();
  EXPECT_TRUE(each_key_once(db, "many-%", (first + second) / 2));
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), (first + second) / 2);
}

}  // namespace
}  // namespace evpipe::testing
