#include "pipeline/metrics.h"

#include "stages/route/probe.h"

#include <gtest/gtest.h>

#include <sstream>

namespace evpipe::pipeline {
namespace {

TEST(Metrics, PrefixGivesTheDashboardNames) {
  metrics_registry r("taylor", 10);
  r.add_shard();
  r.add_source("tcp");
  absl::flat_hash_map<std::string, uint64_t> ingest{{std::string("tracker/events/a") + label_sep + "created", 3}};
  r.add_ingested(ingest);
  absl::flat_hash_map<std::string, uint64_t> dlq{{std::string("t") + label_sep + "invalid_ts", 2}};
  r.add_dead_lettered(dlq);
  r.shards()[0]->event_latency.observe_ns(1500);
  auto text = r.render();
  EXPECT_NE(text.find("taylor_ingest_total{topic=\"tracker/events/a\",kind=\"created\"} 3"), std::string::npos);
  EXPECT_NE(text.find("taylor_dlq_total{topic=\"t\",reason=\"invalid_ts\"} 2"), std::string::npos);
  EXPECT_NE(text.find("# TYPE taylor_event_latency_seconds histogram"), std::string::npos);
  EXPECT_NE(text.find("taylor_event_latency_seconds_bucket{le=\"1e-06\"} 0"), std::string::npos);
  EXPECT_NE(text.find("taylor_event_latency_seconds_bucket{le=\"2.5e-06\"} 1"), std::string::npos);
  EXPECT_NE(text.find("taylor_event_latency_seconds_bucket{le=\"+Inf\"} 1"), std::string::npos);
  EXPECT_NE(text.find("taylor_event_latency_seconds_count 1"), std::string::npos);
}

TEST(Metrics, LabelValuesAreCappedAndFolded) {
  metrics_registry r("evpipe", 3);
  for (int i = 0; i < 10; ++i) {
    absl::flat_hash_map<std::string, uint64_t> m{
        {"autocore/ESP32_" + std::to_string(i) + "/telemetry" + label_sep + "telemetry", 1}};
    r.add_ingested(m);
  }
  auto text = r.render();
  EXPECT_NE(text.find("topic=\"autocore/ESP32_0/telemetry\""), std::string::npos);
  EXPECT_EQ(text.find("topic=\"autocore/ESP32_5/telemetry\""), std::string::npos);
  EXPECT_NE(text.find("evpipe_ingest_total{topic=\"other\",kind=\"telemetry\"} 7"), std::string::npos);
}

// Counts of one family's series, and their sum, from the rendered text.
std::pair<size_t, double> family(const std::string& text, const std::string& name) {
  size_t series = 0;
  double sum = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + "{", 0) != 0) continue;
    ++series;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return {series, sum};
}

// 150 topics x 150 kinds under a per-label cap of 500: the series cap holds
// the family to max_series + 1, and no count is lost.
TEST(Metrics, SeriesArePerFamilyCappedAndSumsStayExact) {
  metrics_registry r("evpipe", 500, 1000);
  for (int t = 0; t < 150; ++t) {
    absl::flat_hash_map<std::string, uint64_t> m;
    for (int k = 0; k < 150; ++k) m["topic/" + std::to_string(t) + label_sep + "kind" + std::to_string(k)] = 2;
    r.add_ingested(m);
  }
  auto [series, sum] = family(r.render(), "evpipe_ingest_total");
  EXPECT_LE(series, 1001u);
  EXPECT_EQ(sum, 150.0 * 150 * 2);
  EXPECT_NE(r.render().find("evpipe_ingest_total{topic=\"other\",kind=\"other\"}"), std::string::npos);
}

// Junk topics dead-lettered first do not use up the ingest family's topics.
TEST(Metrics, OneFamilyCannotStarveAnother) {
  metrics_registry r("evpipe", 100);
  for (int i = 0; i < 500; ++i) {
    absl::flat_hash_map<std::string, uint64_t> m{{"junk/" + std::to_string(i) + label_sep + "invalid_json", 1}};
    r.add_dead_lettered(m);
  }
  absl::flat_hash_map<std::string, uint64_t> good{{std::string("tracker/events/good") + label_sep + "created", 5}};
  r.add_ingested(good);
  auto text = r.render();
  EXPECT_NE(text.find("evpipe_ingest_total{topic=\"tracker/events/good\",kind=\"created\"} 5"), std::string::npos)
      << text.substr(0, 3000);
  auto [series, sum] = family(text, "evpipe_dlq_total");
  EXPECT_LE(series, 101u);
  EXPECT_EQ(sum, 500.0);
}

TEST(Metrics, LabelValuesAreEscaped) {
  metrics_registry r("evpipe", 10);
  absl::flat_hash_map<std::string, uint64_t> m{{std::string("a\"b\\c\nd") + label_sep + "k", 1}};
  r.add_ingested(m);
  EXPECT_NE(r.render().find("topic=\"a\\\"b\\\\c\\nd\""), std::string::npos);
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  histogram h;
  h.observe_ns(500);             // <= 1us
  h.observe_ns(3'000'000);       // <= 5ms
  h.observe_ns(60'000'000'000);  // over 10 s
  auto s = h.read();
  EXPECT_EQ(s.total(), 3u);
  EXPECT_EQ(s.counts[0], 1u);
  EXPECT_EQ(s.counts.back(), 1u);
}

TEST(Metrics, ReadinessNeedsEveryShard) {
  metrics_registry r("evpipe", 10);
  EXPECT_FALSE(r.all_shards_ready());
  auto& a = r.add_shard();
  auto& b = r.add_shard();
  a.db_ready = true;
  EXPECT_FALSE(r.all_shards_ready());
  b.db_ready = true;
  EXPECT_TRUE(r.all_shards_ready());
}

// The same readiness as a gauge per shard, for the EvpipeDatabaseNotReady
// alert (deploy/prometheus): it must show a shard that lost its database
// while nothing is written (no error is counted then).
TEST(Metrics, DatabaseReadinessIsAGaugePerShard) {
  metrics_registry r("evpipe", 10);
  auto& a = r.add_shard();
  auto& b = r.add_shard();
  a.db_ready = true;
  b.db_ready = false;
  auto text = r.render();
  EXPECT_NE(text.find("# TYPE evpipe_db_ready gauge\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nevpipe_db_ready{shard=\"0\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nevpipe_db_ready{shard=\"1\"} 0\n"), std::string::npos) << text;
}


// AutoCore's health fields (seed 004) per source in /health/ready's body.
TEST(Metrics, ReadyBodyHasEachSourcesHealth) {
  metrics_registry r("evpipe", 10);
  r.add_shard().db_ready = true;
  auto& mqtt = r.add_source("mqtt");
  auto& tcp = r.add_source("tcp");
  auto body = r.ready_state(std::chrono::seconds(30)).body;
  EXPECT_NE(body.find("{\"source\":\"mqtt\",\"broker_connected\":false,\"connections\":0,"
                      "\"last_message_time\":null,\"messages_processed\":0,\"errors\":0}"),
            std::string::npos)
      << body;
  mqtt.connections_active = 1;
  mqtt.note_received(3);
  mqtt.note_received(2);
  bump(mqtt.protocol_errors);
  tcp.note_received(0);  // a read without events is no message
  auto state = r.ready_state(std::chrono::seconds(30));
  EXPECT_TRUE(state.ready);
  body = state.body;
  EXPECT_TRUE(body.starts_with("{\"status\":\"ready\",\"source_health\":[")) << body;
  EXPECT_NE(body.find("\"broker_connected\":true,\"connections\":1,\"last_message_time\":\"20"), std::string::npos)
      << body;
  EXPECT_NE(body.find("\"messages_processed\":5,\"errors\":1}"), std::string::npos) << body;
  EXPECT_NE(body.find("{\"source\":\"tcp\",\"connections\":0,\"last_message_time\":null,\"messages_processed\":0,"),
            std::string::npos)
      << "no broker for TCP; " << body;
}

// Two sources of one kind: /health/ready lists each by its address, the
// metrics sum them in one series per kind; a retired source (stopped by a
// reload) leaves the list and keeps its counts.
TEST(Metrics, EachSourceIsListedAndTheMetricsSumAKind) {
  metrics_registry r("evpipe", 10);
  r.add_shard().db_ready = true;
  auto& a = r.add_source("mqtt", "mqtt://127.0.0.1:1883 as a");
  auto& b = r.add_source("mqtt", "mqtt://127.0.0.1:1884 as b");
  auto& http = r.add_source("http", "127.0.0.1:8080");
  a.connections_active = 1;
  a.note_received(3);
  b.note_received(4);
  bump(b.reconnects);
  bump(http.http_ok, 2);
  auto body = r.ready_state(std::chrono::seconds(30)).body;
  EXPECT_NE(body.find("{\"source\":\"mqtt\",\"address\":\"mqtt://127.0.0.1:1883 as a\",\"broker_connected\":true,"
                      "\"connections\":1,\"last_message_time\":\"20"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("\"messages_processed\":3,"), std::string::npos) << body;
  EXPECT_NE(body.find("{\"source\":\"mqtt\",\"address\":\"mqtt://127.0.0.1:1884 as b\",\"broker_connected\":false,"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("\"messages_processed\":4,"), std::string::npos) << body;
  auto text = r.render();
  EXPECT_NE(text.find("\nevpipe_events_received_total{source=\"mqtt\"} 7\n"), std::string::npos) << text;
  EXPECT_EQ(family(text, "evpipe_events_received_total").first, 2u) << "one series per kind";
  EXPECT_NE(text.find("\nevpipe_mqtt_connections_active 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nevpipe_mqtt_reconnects_total 1\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("\nevpipe_mqtt_reconnects_total "), text.rfind("\nevpipe_mqtt_reconnects_total ")) << "one sample";
  EXPECT_NE(text.find("\nevpipe_http_responses_total{code=\"200\"} 2\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("evpipe_nats_"), std::string::npos) << "no NATS source, no NATS series";

  b.retired = true;
  body = r.ready_state(std::chrono::seconds(30)).body;
  EXPECT_EQ(body.find("1884"), std::string::npos) << body;
  EXPECT_NE(body.find("1883"), std::string::npos) << body;
  text = r.render();
  EXPECT_NE(text.find("\nevpipe_events_received_total{source=\"mqtt\"} 7\n"), std::string::npos)
      << "a counter never goes back: " << text;
}

// Per-route counters, labelled by the route's name (escaped).
TEST(Metrics, RouteCountersByRouteName) {
  auto& c = stages::route::route_probe::instance().of("metrics \"test\" route");
  c.appended += 7;
  c.mismatched += 2;
  metrics_registry r("evpipe", 10);
  auto text = r.render();
  EXPECT_NE(text.find("evpipe_route_rows_appended_total{route=\"metrics \\\"test\\\" route\"} 7"), std::string::npos)
      << text;
  EXPECT_NE(text.find("evpipe_route_mismatch_total{route=\"metrics \\\"test\\\" route\"} 2"), std::string::npos);
  EXPECT_NE(text.find("evpipe_route_rows_upserted_total{route=\"metrics \\\"test\\\" route\"} 0"), std::string::npos);
}

// Tenants fold like topics (docs/tenants.md): past max_label_values
// distinct tenants a family's new tenants read "other", sums stay exact, and
// each family (ingested, dead-lettered, throttled) has its own budget.
TEST(Metrics, TenantLabelsAreCappedAndFoldedIntoOther) {
  metrics_registry r("evpipe", 3);
  auto& tcp = r.add_source("tcp");
  for (int i = 0; i < 10; ++i) {
    absl::flat_hash_map<std::string, uint64_t> m{{"t" + std::to_string(i), uint64_t(i + 1)}};
    r.add_ingested_by_tenant(m);
  }
  for (int i = 9; i >= 0; --i) {
    absl::flat_hash_map<std::string, uint64_t> m{{"t" + std::to_string(i) + label_sep + "tenant_mismatch", 1}};
    r.add_dead_lettered_by_tenant(m);
  }
  tcp.note_tenant_throttled("t5");
  tcp.note_tenant_throttled("t5");
  tcp.note_tenant_throttled("");  // no tenant: counted by source only
  auto text = r.render();
  EXPECT_NE(text.find("evpipe_ingest_by_tenant_total{tenant=\"t0\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("evpipe_ingest_by_tenant_total{tenant=\"t2\"} 3"), std::string::npos) << text;
  EXPECT_EQ(text.find("evpipe_ingest_by_tenant_total{tenant=\"t3\"}"), std::string::npos) << text;
  EXPECT_NE(text.find("evpipe_ingest_by_tenant_total{tenant=\"other\"} 49"), std::string::npos) << text;  // 4 + ... + 10
  auto [series, sum] = family(text, "evpipe_ingest_by_tenant_total");
  EXPECT_EQ(series, 4u);
  EXPECT_EQ(sum, 55.0);
  // The dead-letter family saw t9, t8, t7 first: its own three.
  EXPECT_NE(text.find("evpipe_dlq_by_tenant_total{tenant=\"t9\",reason=\"tenant_mismatch\"} 1"), std::string::npos);
  EXPECT_NE(text.find("evpipe_dlq_by_tenant_total{tenant=\"other\",reason=\"tenant_mismatch\"} 7"), std::string::npos);
  EXPECT_EQ(text.find("evpipe_dlq_by_tenant_total{tenant=\"t0\""), std::string::npos);
  EXPECT_NE(text.find("evpipe_throttled_by_tenant_total{tenant=\"t5\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("evpipe_tenant_throttled_total{source=\"tcp\"} 3"), std::string::npos) << text;
}

}  // namespace
}  // namespace evpipe::pipeline
