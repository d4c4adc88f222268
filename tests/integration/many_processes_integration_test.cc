// Many evpipe processes, one table, without NATS (issue 14): three evpipe
// processes with two shards each write one events_mirror, with keys that
// overlap between processes, and are SIGKILLed in turn and restarted while
// events flow. Through an MQTT shared subscription (Mosquitto hands each
// message to one member of the group) and behind TCP (each producer
// connection to one of the three, as a load balancer would spread them).
// Every key is stored exactly once and every acked event is there: the
// coordination is the broker's and PostgreSQL's (the unique index on
// idempotency_key), nothing of evpipe's own. The NATS counterpart is
// nats_many_processes_integration_test.cc.

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <memory>
#include <thread>

#include "tests/support/closed_loop_producer.h"
#include "tests/support/harness.h"
#include "tests/support/key_census.h"
#include "tests/support/mqtt_peer.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

// One process's configuration: its own HTTP port, no stream server (three
// processes would want the one default port), and `source` as its source.
std::string config(const test_db& db, uint16_t http_port, const std::string& source) {
  return "[pipeline]\nshards = 2\n"
         "[events]\nmax_event_bytes = 4096\n"
         "[postgres]\ndsn = \"" + db.dsn() + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
         "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
         "[stream]\nlisten = \"\"\n"
         "[log]\nlevel = \"info\"\n" + source;
}

class ManyProcesses : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
  }
  std::string logs() const {
    std::string out;
    for (const auto& e : evp) out += e->earlier_logs() + "--- current ---\n" + e->log();
    return out;
  }
  void behind_tcp(const std::string& storage);
  test_db db;
  std::vector<std::unique_ptr<evpipe_process>> evp;
};

// Three processes behind TCP, `storage` their [storage] section.
void ManyProcesses::behind_tcp(const std::string& storage) {
  constexpr long keys = 8000;
  uint16_t tcp[3], http[3];
  for (int i = 0; i < 3; ++i) {
    tcp[i] = free_port();
    http[i] = free_port();
    evp.push_back(std::make_unique<evpipe_process>(
        config(db, http[i], storage + "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp[i]) +
                                "\"\ntopic = \"tracker/events/many\"\n"),
        "many_tcp_" + std::to_string(i)));
  }
  ASSERT_EQ(evp[0]->run_command("migrate"), 0) << evp[0]->log("migrate.log");
  for (int i = 0; i < 3; ++i) evp[i]->start(tcp[i]);

  // Three producers, one connection each to its own process, sending the same
  // keys tcp-0 .. tcp-7999: every key reaches all three processes, often at
  // the same moment. A producer whose process is killed connects again once
  // it is back and resends from its first key not acked.
  std::vector<std::unique_ptr<producer>> producers;
  for (int i = 0; i < 3; ++i) producers.push_back(std::make_unique<producer>(tcp[i], "tcp", keys));
  auto acked_sum = [&] {
    long s = 0;
    for (const auto& p : producers) s += p->acked();
    return s;
  };
  int mid_stream_kills = 0;  // kills of a process whose producer was still sending
  for (int round = 0; round < 5; ++round) {
    long at = acked_sum();
    eventually([&] { return acked_sum() >= at + 600; }, 20s, 5ms);
    // The victim is the process whose producer is furthest behind (taking
    // turns while they are even), so that the kill breaks a stream that is
    // still flowing however the load has spread over the three: on a loaded
    // machine a producer can finish while another process restarts.
    int victim = round % 3;
    for (int i = 0; i < 3; ++i) {
      if (producers[i]->acked() + 200 < producers[victim]->acked()) victim = i;
    }
    mid_stream_kills += producers[victim]->acked() < keys - 200 ? 1 : 0;
    evp[victim]->kill(SIGKILL);
    // Acked means committed: whatever any producer has seen acked is in the
    // table now, whichever process stored it, the dead one included.
    for (const auto& p : producers) {
      long acked = p->acked();
      EXPECT_EQ(missing_keys(db, "tcp", 0, acked), 0) << "round " << round << ": acked up to " << acked;
    }
    evp[victim]->start(tcp[victim]);
  }
  ASSERT_TRUE(eventually([&] {
    for (const auto& p : producers) {
      if (p->acked() < keys && !p->failed()) return false;
    }
    return true;
  }, 120s)) << logs();
  for (const auto& p : producers) {
    EXPECT_FALSE(p->failed()) << "a producer could not reconnect";
    EXPECT_EQ(p->acked(), keys);
    p->finish();
  }
  int reconnects = 0;
  for (const auto& p : producers) reconnects += p->reconnects();
  EXPECT_GE(mid_stream_kills, 3) << "the load ended before the kills: nothing was tested";
  EXPECT_GE(reconnects, mid_stream_kills) << "a kill did not break its producer's connection";
  EXPECT_EQ(missing_keys(db, "tcp", 0, keys), 0);
  EXPECT_TRUE(each_key_once(db, "tcp-%", keys));
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), keys);
}

TEST_F(ManyProcesses, ThreeProcessesBehindTcpStoreEveryKeyOnceAndEveryAckedEventThroughSigkills) { behind_tcp(""); }

// The same on a partitioned events_mirror (docs/partitions.md): no unique
// index on the key there, so one row per key rests on evpipe_mirror_keys,
// which the three processes' batches insert into concurrently (a key already
// stored by another process fails that COPY, and the batch is written again
// without it).
TEST_F(ManyProcesses, ThreeProcessesOnAPartitionedTableStoreEveryKeyOnceThroughSigkills) {
  behind_tcp("[storage]\npartition = \"day\"\n");
  if (HasFatalFailure()) return;
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_partitioned_table WHERE partrelid = 'events_mirror'::regclass"), 1)
      << "events_mirror is not partitioned: the test proved nothing new";
  EXPECT_EQ(db.count("SELECT count(*) FROM evpipe_mirror_keys WHERE idempotency_key LIKE 'tcp-%'"), 8000);
}

TEST_F(ManyProcesses, ThreeProcessesInOneMqttSharedGroupStoreEveryKeyOnceThroughSigkills) {
  if (::access(env_or("EVPIPE_TEST_MOSQUITTO", "/usr/sbin/mosquitto").c_str(), X_OK) != 0) {
    if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "mosquitto is not installed";
    GTEST_SKIP() << "mosquitto is not installed (scripts/test.sh installs it)";
  }
  mosquitto_broker broker("many");
  uint16_t http[3];
  for (int i = 0; i < 3; ++i) {
    http[i] = free_port();
    // A persistent session each (evpipe's default): what Mosquitto had sent a
    // killed member and not had acked, and what it queued for it meanwhile,
    // is delivered when the member is back.
    evp.push_back(std::make_unique<evpipe_process>(
        config(db, http[i], "[[sources.mqtt]]\nurl = \"" + broker.url() + "\"\nclient_id = \"evpipe-many-" +
                                std::to_string(i) + "\"\ntopics = [\"tracker/events/#\"]\nshared_group = \"many\"\n"
                                "keepalive_s = 5\nbase_ms = 50\nmax_ms = 500\n"),
        "many_mqtt_" + std::to_string(i)));
  }
  ASSERT_EQ(evp[0]->run_command("migrate"), 0) << evp[0]->log("migrate.log");
  auto start_subscribed = [&](int i) {
    evp[i]->start(http[i]);
    return eventually([&] { return metric_of(http[i], "evpipe_mqtt_sessions_subscribed") == 1; });
  };
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(start_subscribed(i)) << evp[i]->log();

  // Message n carries key mq-(n / 2): every key is published twice, the
  // copies next to each other, so the broker's round robin hands them to two
  // different processes.
  constexpr int messages = 9000, chunk = 500;
  std::atomic<int> published{0};
  std::atomic<bool> publish_failed{false};
  std::thread publisher([&] {
    mqtt_test_client pub(broker.port(), "producer-many");
    for (int from = 0; from < messages; from += chunk) {
      std::vector<std::string> payloads;
      for (int n = from; n < from + chunk; ++n) {
        payloads.push_back(valid_event("mq-" + std::to_string(n / 2), n % 2 ? "copy" : "first"));
      }
      if (pub.publish_all("tracker/events/many", payloads) != payloads.size()) publish_failed.store(true);
      published.fetch_add(chunk);
      std::this_thread::sleep_for(20ms);  // spread over the kills below
    }
  });
  for (int round = 0; round < 5; ++round) {
    const int victim = round % 3;
    int at = published.load();
    eventually([&] { return published.load() >= std::min(messages, at + 1000); }, 30s, 5ms);
    evp[victim]->kill(SIGKILL);
    ASSERT_TRUE(start_subscribed(victim)) << evp[victim]->log();
  }
  publisher.join();
  ASSERT_FALSE(publish_failed.load()) << "the broker did not ack every publish";
  ASSERT_TRUE(eventually([&] {
    if (count_keys(db, "mq-%").keys < messages / 2) return false;
    for (int i = 0; i < 3; ++i) {
      if (metric_of(http[i], "evpipe_unacked_events{source=\"mqtt\"}") != 0) return false;
    }
    return true;
  }, 120s)) << logs();
  EXPECT_TRUE(each_key_once(db, "mq-%", messages / 2));
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), messages / 2);
}

}  // namespace
}  // namespace evpipe::testing
