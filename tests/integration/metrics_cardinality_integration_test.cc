// Issue 18 §4 through a running daemon: the labelled metric families stay
// within their series budget with exact sums, and one family's junk does not
// use up another's label budget. The evpipe binary runs as a child process
// against the real PostgreSQL that scripts/test.sh starts; events come over
// the TCP source, which takes each event's own "topic".

#include <gtest/gtest.h>

#include <sstream>

#include "tests/support/harness.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

std::string cardinality_config(const test_db& db, uint16_t tcp_port, uint16_t http_port, const std::string& metrics) {
  return "[pipeline]\nshards = 2\n"
         "[postgres]\ndsn = \"" + db.dsn() + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
         "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
         "[metrics]\n" + metrics +
         "[log]\nlevel = \"warn\"\n"
         "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) + "\"\ntopic = \"card/default\"\n";
}

// A valid event with its own topic and kind.
std::string event_on(const std::string& key, const std::string& topic, const std::string& kind) {
  std::string e = valid_event(key, "x", ",\"topic\":\"" + topic + "\"");
  e.replace(e.find("project_created"), std::string_view("project_created").size(), kind);
  return e;
}

// The series of one family in a /metrics body, and the sum of their values.
struct family_stats {
  size_t series = 0;
  double sum = 0;
};
family_stats family(const std::string& metrics, const std::string& name) {
  family_stats f;
  std::istringstream lines(metrics);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + "{", 0) != 0) continue;
    ++f.series;
    f.sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return f;
}

// 150 topics x 150 kinds: 22,500 combinations, one event each. With
// max_series = 1000 the ingest family has at most 1001 series (the last one
// (other, other)), and the counts folded into it keep the sum exact. The
// per-label cap (max_label_values = 500) alone would have allowed all 22,500.
TEST_F(TcpPipeline, IngestSeriesStayWithinMaxSeriesWithExactSums) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(cardinality_config(db, port, http_port, "max_label_values = 500\nmax_series = 1000\n"),
                     "card_series");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  const int topics = 150, kinds = 150, n = topics * kinds;
  std::string data;
  for (int t = 0; t < topics; ++t) {
    for (int k = 0; k < kinds; ++k) {
      data += event_on("card-" + std::to_string(t) + "-" + std::to_string(k), "card/t" + std::to_string(t),
                       "kind_" + std::to_string(k)) + "\n";
    }
  }
  {
    ndjson_client c(port);
    c.send_all(data);
    ASSERT_EQ(c.read_acks_until(n, 120s), uint64_t(n)) << evp.log();
  }
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), n);
  EXPECT_EQ(db.count("SELECT count(DISTINCT (topic, payload->>'kind')) FROM events_mirror"), n);
  auto metrics = http_get(http_port, "/metrics");
  auto ingest = family(metrics, "evpipe_ingest_total");
  EXPECT_LE(ingest.series, 1001u);
  EXPECT_GE(ingest.series, 1000u) << "the budget is used before folding";
  EXPECT_EQ(ingest.sum, double(n));
  EXPECT_GT(metric_value(metrics, "evpipe_ingest_total{topic=\"other\",kind=\"other\"}"), 0);
  std::cout << ingest.series << " series, /metrics " << metrics.size() << " bytes\n";
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

// 500 invalid events with junk topics first, then good events on 50 topics:
// with max_label_values = 100, the junk fills the DLQ family's topic budget
// only, and every good topic keeps its own series in the ingest family. (With
// one budget shared by both families, the good topics all read "other".)
TEST_F(TcpPipeline, JunkTopicsInTheDlqDoNotFoldGoodIngestTopics) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(cardinality_config(db, port, http_port, "max_label_values = 100\n"), "card_budget");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  std::string junk, good;
  for (int i = 0; i < 500; ++i) {
    // The topic comes first, so it is read before the payload fails.
    junk += "{\"topic\":\"junk/" + std::to_string(i) + "\",\"trace_id\":\"" + uuid_for(i) +
            "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"k\",\"idempotency_key\":\"junk-" + std::to_string(i) +
            "\",\"payload\":[1]}\n";
  }
  for (int t = 0; t < 50; ++t) {
    for (int j = 0; j < 4; ++j) {
      good += event_on("good-" + std::to_string(t) + "-" + std::to_string(j), "good/t" + std::to_string(t),
                       "created") + "\n";
    }
  }
  {
    ndjson_client c(port);
    c.send_all(junk);
    ASSERT_EQ(c.read_acks_until(500, 60s), 500u) << evp.log();
    c.send_all(good);
    ASSERT_EQ(c.read_acks_until(700, 60s), 700u) << evp.log();
  }
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE original_topic LIKE 'junk/%'"), 500);
  auto metrics = http_get(http_port, "/metrics");
  // The junk really used up the DLQ family's topics.
  auto dlq = family(metrics, "evpipe_dlq_total");
  EXPECT_EQ(dlq.sum, 500);
  EXPECT_LE(dlq.series, 101u);
  EXPECT_GT(metric_value(metrics, "evpipe_dlq_total{topic=\"other\",reason=\"invalid_payload\"}"), 0) << metrics;
  for (int t = 0; t < 50; ++t) {
    std::string sample = "evpipe_ingest_total{topic=\"good/t" + std::to_string(t) + "\",kind=\"created\"}";
    EXPECT_EQ(metric_value(metrics, sample), 4) << sample;
  }
  EXPECT_EQ(metric_value(metrics, "evpipe_ingest_total{topic=\"other\",kind=\"created\"}"), -1) << "folded";
  EXPECT_EQ(family(metrics, "evpipe_ingest_total").sum, 200);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
