// The MQTT source end to end, stopping: repeated SIGKILL loses and duplicates
// nothing, SIGTERM acknowledges what it committed and disconnects.

#include <gtest/gtest.h>

#include "tests/integration/mqtt_source_fixture.h"

namespace evpipe::testing {
namespace {

using namespace mqtt_it;

// SIGKILL at random moments while evpipe drains a stream from Mosquitto, ten
// times; after the last restart every message is stored exactly once (the
// broker redelivers what evpipe never acknowledged; dedup drops the copies of
// what it had committed but not yet acknowledged).
//
// The kills are paced by progress, not by the clock: each comes once a random
// 1,000 to 5,000 more rows are stored than when the process started, so every
// kill lands mid-drain and ten of them fit in the stream whether the disk
// commits 150,000 rows in a few seconds or a sanitizer build crawls. The
// producer keeps at most `ahead` messages more than are stored and publishes
// until the tenth kill, at most max_n messages: the stream goes on through
// every kill and the drain after the last one stays short.
TEST_F(MqttSource, RepeatedSigkillLosesAndDuplicatesNothing) {
  mosquitto_broker broker("repeated_kill");
  uint16_t http_port = free_port();
  mqtt_options o;
  o.client_id = "evpipe-kill";
  evpipe_process evp(mqtt_config(db, broker.url(), http_port, o), "mqtt_repeated_kill");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  start_connected(evp, http_port);

  const int want_kills = 10;
  const long min_step = 1000, max_step = 5000;
  // Ten kills need at most 50,000 rows and what a commit overshoots each step
  // by (a batch is up to 4,096 rows a shard): max_n is far past that.
  const size_t chunk = 5000, ahead = 20000, max_n = 300000;
  std::atomic<bool> enough{false};
  std::atomic<size_t> published{0};
  std::atomic<long> stored{0};  // the last row count the kill loop saw
  std::atomic<bool> short_chunk{false};
  std::thread producer([&] {
    mqtt_test_client client(broker.port(), "producer-kill");
    for (size_t from = 0; from < max_n && !enough.load(); from += chunk) {
      while (!enough.load() && published.load() > static_cast<size_t>(stored.load()) + ahead) {
        std::this_thread::sleep_for(5ms);
      }
      std::vector<std::string> messages;
      for (size_t i = from; i < from + chunk; ++i) messages.push_back(valid_event("mk-" + std::to_string(i)));
      size_t acked = client.publish_all("tracker/events/kill", messages, 120s);
      published += acked;
      if (acked != messages.size()) {
        short_chunk = true;  // some may still arrive: the final count would mean nothing
        return;
      }
    }
  });
  std::mt19937 rng(777);
  int kills = 0;
  long rows_at_start = 0;  // stored when the running process started
  while (kills < want_kills) {
    long step = min_step + static_cast<long>(rng() % (max_step - min_step + 1));
    auto grown = [&] {
      stored = mirrored();
      return stored.load() >= rows_at_start + step;
    };
    if (!eventually(grown, 120s)) {
      ADD_FAILURE() << "no " << step << " rows stored after restart " << kills << " (" << rows_at_start << " before, "
                    << published.load() << " published)\n" << evp.log();
      break;
    }
    evp.kill(SIGKILL);
    ++kills;
    // One snapshot (a commit the killed process had sent may still land).
    auto counts = db.column("SELECT count(*) || ' ' || count(DISTINCT idempotency_key) FROM events_mirror").at(0);
    long rows = std::stol(counts);
    std::cout << "kill " << kills << " with " << rows << " rows (" << rows - rows_at_start << " since the start), "
              << published.load() << " published and acknowledged by the broker\n";
    EXPECT_EQ(counts, std::to_string(rows) + " " + std::to_string(rows)) << "a key stored twice";
    rows_at_start = rows;
    evp.start(http_port);
  }
  enough = true;
  producer.join();
  EXPECT_EQ(kills, want_kills);
  ASSERT_FALSE(short_chunk.load()) << "the broker did not acknowledge a chunk in time";
  const long n = static_cast<long>(published.load());
  std::cout << n << " messages published\n";
  EXPECT_TRUE(eventually([&] { return mirrored() >= n; }, 120s)) << evp.log();
  EXPECT_TRUE(eventually([&] { return unacked(http_port) == 0; })) << evp.log();
  EXPECT_EQ(mirrored(), n);
  EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror"), n);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

// SIGTERM while messages stream in: evpipe stops reading, commits what it
// read, sends those PUBACKs, says DISCONNECT and exits 0; every message it
// acknowledged is stored, and the acknowledged ones are a prefix of the
// stream (the rest stays with the broker for the next start).
TEST_F(MqttSource, SigtermAcknowledgesWhatItCommittedAndDisconnects) {
  fake_broker broker;
  uint16_t http_port = free_port();
  evpipe_process evp(mqtt_config(db, "mqtt://127.0.0.1:" + std::to_string(broker.port()), http_port), "mqtt_sigterm");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  broker.accept_client();
  const int n = 20000;
  std::vector<uint16_t> ids;
  for (int i = 0; i < n; ++i) {
    try {
      broker.publish("tracker/events/term", valid_event("term-" + std::to_string(i)), static_cast<uint16_t>(i % 65535 + 1));
    } catch (const std::exception&) {
      break;  // evpipe is done and has closed the connection (a slow build gets there first)
    }
    ids.push_back(static_cast<uint16_t>(i % 65535 + 1));
    if (i == n / 4) {
      // Mid-stream for evpipe too: it has read messages (a slow build may not
      // have read any of the 5,000 yet), and more keep coming.
      ASSERT_TRUE(eventually([&] { return received(http_port) >= 1; })) << evp.log();
      evp.kill(SIGTERM);
    }
  }
  auto acked = broker.read_pubacks(n, 60s);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
  EXPECT_TRUE(broker.saw_disconnect());
  ASSERT_GT(acked.size(), 0u);
  EXPECT_TRUE(std::equal(acked.begin(), acked.end(), ids.begin())) << "PUBACKs are a prefix, in order";
  long acked_stored = db.stored_of("term-", static_cast<long>(acked.size()));
  EXPECT_EQ(acked_stored, static_cast<long>(acked.size()));
  std::cout << acked.size() << " of " << ids.size() << " published acknowledged before the exit\n";
}

}  // namespace
}  // namespace evpipe::testing
