// The NATS source against a three-node JetStream cluster on loopback (an R3
// stream): one node is killed and restarted mid-stream, and evpipe is
// SIGKILLed five times and restarted, while messages flow. Every event is
// stored exactly once (issue 14).

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <iostream>

#include "tests/support/harness.h"
#include "tests/support/key_census.h"
#include "tests/support/nats_server.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

std::vector<std::pair<std::string, std::string>> messages(const std::string& run, int from, int n) {
  std::vector<std::pair<std::string, std::string>> out;
  for (int i = from; i < from + n; ++i) out.emplace_back("tracker.events.c", valid_event(run + "-" + std::to_string(i)));
  return out;
}

class NatsCluster : public ::testing::Test {
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

TEST_F(NatsCluster, NodeKilledAndEvpipeSigkilledFiveTimesStillStoresEveryEventOnce) {
  nats_cluster cluster("r3");
  nats_client client(cluster.urls());
  client.add_stream("EVENTS", "tracker.>", 3);
  std::string servers;
  for (int i = 0; i < 3; ++i) servers += (i ? ", \"" : "\"") + cluster.node(i).url() + "\"";
  uint16_t http_port = free_port();
  evpipe_process evp("[pipeline]\nshards = 2\n"
                     "[postgres]\ndsn = \"" + db.dsn() + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
                     "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
                     "[stream]\nlisten = \"\"\n"
                     "[[sources.nats]]\nservers = [" + servers + "]\nstream = \"EVENTS\"\n"
                     "ack_wait_s = 3\nfetch_batch = 128\nmax_ack_pending = 1024\n",
                     "nats_cluster");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");

  // The producer repeats a chunk whose publish acks did not all come (a node
  // went away meanwhile): the stream may then hold a message twice, which is
  // one key twice, as any at-least-once producer makes.
  const int total = 8000, chunk = 400;
  std::atomic<int> published{0};
  std::thread producer([&] {
    nats_client pub(cluster.urls());
    for (int i = 0; i < total; i += chunk) {
      for (int attempt = 0; attempt < 50; ++attempt) {
        try {
          pub.publish_async(messages("r3", i, chunk));
          break;
        } catch (const std::exception& e) {
          std::cerr << "chunk " << i << ", attempt " << attempt << ": " << e.what() << "\n";
          std::this_thread::sleep_for(200ms);
        }
      }
      published.store(i + chunk);
      std::this_thread::sleep_for(20ms);  // spread over the kills below
    }
  });

  evp.start(http_port);
  for (int round = 0; round < 5; ++round) {
    double at = metric_of(http_port, "evpipe_events_received_total{source=\"nats\"}");
    eventually([&] { return metric_of(http_port, "evpipe_events_received_total{source=\"nats\"}") >= at + 300; }, 20s, 5ms);
    if (round == 1) cluster.node(1).stop(SIGKILL);  // a node away while evpipe is killed and restarted
    if (round == 3) cluster.node(1).start();
    evp.kill(SIGKILL);
    evp.start(http_port);
  }
  producer.join();
  ASSERT_TRUE(eventually([&] {
    auto st = client.consumer("EVENTS", "evpipe");
    return st.exists && st.pending == 0 && st.ack_pending == 0 &&
           metric_of(http_port, "evpipe_unacked_events{source=\"nats\"}") == 0;
  }, 120s)) << evp.log();
  EXPECT_TRUE(each_key_once(db, "r3-%", total))
      << "the stream holds " << client.stream_messages("EVENTS") << " messages";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), total);
  EXPECT_GT(client.consumer("EVENTS", "evpipe").delivered, static_cast<uint64_t>(total))
      << "the kills left nothing unacked: the test did not test redelivery";
}

}  // namespace
}  // namespace evpipe::testing
