// top/metrics_text.cc and top/top_view.cc: the Prometheus text format as
// evpipe writes it, percentiles from bucket deltas, and the screen's fit.

#include "top/metrics_text.h"

#include <gtest/gtest.h>

#include <sstream>

#include "top/top_view.h"

namespace evpipe::top {
namespace {

// The words of the first screen line that starts with `first`.
std::vector<std::string> fields(const std::vector<std::string>& lines, const std::string& first) {
  for (const auto& l : lines) {
    if (l.rfind(first + " ", 0) != 0) continue;
    std::vector<std::string> out;
    std::istringstream words(l);
    for (std::string w; words >> w;) out.push_back(w);
    return out;
  }
  return {};
}

const char* first = R"(# HELP evpipe_events_received_total Events read.
# TYPE evpipe_events_received_total counter
evpipe_events_received_total{source="tcp"} 1000
evpipe_connections_active{source="tcp"} 3
evpipe_dlq_total{topic="a",reason="invalid_json"} 5
evpipe_dlq_total{topic="b",reason="invalid_json"} 2
evpipe_dlq_total{topic="a",reason="too_large"} 1
evpipe_queue_depth{shard="0"} 7
evpipe_queue_depth{shard="1"} 0
evpipe_batches_total 10
evpipe_copy_rows_total 900
evpipe_event_latency_seconds_bucket{le="0.001"} 100
evpipe_event_latency_seconds_bucket{le="0.01"} 200
evpipe_event_latency_seconds_bucket{le="+Inf"} 200
evpipe_event_latency_seconds_count 200
evpipe_odd{path="a\"b\\c"} 1
not a sample line at all {
)";

const char* second = R"(evpipe_events_received_total{source="tcp"} 3000
evpipe_connections_active{source="tcp"} 4
evpipe_dlq_total{topic="a",reason="invalid_json"} 9
evpipe_dlq_total{topic="b",reason="invalid_json"} 2
evpipe_dlq_total{topic="a",reason="too_large"} 1
evpipe_queue_depth{shard="0"} 0
evpipe_queue_depth{shard="1"} 0
evpipe_batches_total 20
evpipe_copy_rows_total 2900
evpipe_event_latency_seconds_bucket{le="0.001"} 100
evpipe_event_latency_seconds_bucket{le="0.01"} 1100
evpipe_event_latency_seconds_bucket{le="+Inf"} 1200
evpipe_event_latency_seconds_count 1200
)";

TEST(MetricsText, ParsesSamplesLabelsAndEscapes) {
  auto s = parse_metrics(first);
  EXPECT_EQ(s.bad_lines, 1u);
  EXPECT_EQ(s.sum("evpipe_dlq_total"), 8);
  EXPECT_EQ(s.sum("evpipe_dlq_total", {{"reason", "invalid_json"}}), 7);
  EXPECT_EQ(s.family("evpipe_odd").at(0)->label("path"), "a\"b\\c");
  EXPECT_EQ(s.family("evpipe_event_latency_seconds_bucket").back()->label("le"), "+Inf");
}

TEST(MetricsText, PercentilesComeFromTheBucketsBetweenTwoScrapes) {
  auto a = parse_metrics(first), b = parse_metrics(second);
  // Between the scrapes: 0 under 1 ms, 900 in (1 ms, 10 ms], 100 above.
  EXPECT_NEAR(*quantile_between(a, b, "evpipe_event_latency_seconds", 0.5), 0.001 + 0.009 * 500 / 900, 1e-9);
  EXPECT_EQ(*quantile_between(a, b, "evpipe_event_latency_seconds", 0.99), 0.01);  // the +Inf bucket: its lower edge
  EXPECT_FALSE(quantile_between(b, b, "evpipe_event_latency_seconds", 0.5).has_value());
}

TEST(TopView, ShowsRatesTotalsAndFitsEightyByTwentyFour) {
  auto a = parse_metrics(first), b = parse_metrics(second);
  view_input in;
  in.url = "http://127.0.0.1:9464/metrics";
  in.before = &a;
  in.now = &b;
  in.interval_s = 2;
  in.ready = "ready";
  auto lines = render_view(in, 80, 24);
  ASSERT_LE(lines.size(), 24u);
  std::string screen;
  for (const auto& l : lines) {
    EXPECT_LE(l.size(), 80u) << l;
    screen += l + "\n";
  }
  EXPECT_NE(screen.find("database: ready"), std::string::npos) << screen;
  // tcp: 2,000 events in 2 s; 3,000 received; 4 connections, 0 unacked, 0 pauses/s.
  EXPECT_EQ(fields(lines, "tcp"), (std::vector<std::string>{"tcp", "1,000", "3,000", "4", "0", "0"})) << screen;
  // Shard 0's queue; then 10 batches of 2,000 rows in 2 s, over all shards.
  EXPECT_EQ(fields(lines, "0"), (std::vector<std::string>{"0", "0"})) << screen;
  EXPECT_EQ(fields(lines, "all"), (std::vector<std::string>{"all", "0", "5", "200", "-", "-", "0", "20"})) << screen;
  EXPECT_EQ(fields(lines, "invalid_json"), (std::vector<std::string>{"invalid_json", "11", "2"})) << screen;
  EXPECT_EQ(fields(lines, "too_large"), (std::vector<std::string>{"too_large", "1", "0"})) << screen;
  EXPECT_NE(screen.find("p50 6.0ms p99 10.0ms p99.9 10.0ms, 1,000 events"), std::string::npos) << screen;
  // A small terminal: cut, and says so.
  auto small = render_view(in, 40, 10);
  ASSERT_EQ(small.size(), 10u);
  EXPECT_NE(small.back().find("more lines"), std::string::npos);
}

// `shards` shards, labelled as evpipe writes them; shard i has done (i + 1) *
// `step` batches of 100 rows, each written in 2 ms, and 3 * i retries.
std::string per_shard_text(int shards, int step) {
  std::string t;
  for (int i = 0; i < shards; ++i) {
    std::string l = "{shard=\"" + std::to_string(i) + "\"}";
    std::string wl = "{stage=\"write\",shard=\"" + std::to_string(i) + "\"";
    double batches = (i + 1) * step;
    t += "evpipe_queue_depth" + l + " " + std::to_string(i) + "\n";
    t += "evpipe_batches_total" + l + " " + std::to_string(batches) + "\n";
    t += "evpipe_copy_rows_total" + l + " " + std::to_string(batches * 100) + "\n";
    t += "evpipe_db_retries_total" + l + " " + std::to_string(3 * i * step) + "\n";
    t += "evpipe_stage_latency_seconds_bucket" + wl + ",le=\"0.001\"} 0\n";
    t += "evpipe_stage_latency_seconds_bucket" + wl + ",le=\"0.0025\"} " + std::to_string(batches) + "\n";
    t += "evpipe_stage_latency_seconds_bucket" + wl + ",le=\"+Inf\"} " + std::to_string(batches) + "\n";
    t += "evpipe_stage_latency_seconds_sum" + wl + "} " + std::to_string(batches * 0.002) + "\n";
    t += "evpipe_stage_latency_seconds_count" + wl + "} " + std::to_string(batches) + "\n";
  }
  return t;
}

TEST(TopView, OneRowPerShardWithItsOwnWriteFiguresAndTheRestFoldedPastEight) {
  for (int shards : {2, 8, 10}) {
    auto a = parse_metrics(per_shard_text(shards, 1)), b = parse_metrics(per_shard_text(shards, 3));
    view_input in;
    in.before = &a;
    in.now = &b;
    in.interval_s = 2;
    auto lines = render_view(in, 80, 24);
    std::string screen;
    for (const auto& l : lines) {
      EXPECT_LE(l.size(), 80u) << l;
      screen += l + "\n";
    }
    EXPECT_LE(lines.size(), 24u) << screen;
    EXPECT_EQ(screen.find("more lines"), std::string::npos) << screen;
    EXPECT_TRUE(fields(lines, "all").empty()) << screen;
    const int shown = shards > 8 ? 7 : shards;
    for (int i = 0; i < shown; ++i) {
      // (i + 1) * 2 batches in 2 s, 100 rows each, 2 ms each; 6 * i retries in 2 s; 3 * (i + 1) batches in all.
      EXPECT_EQ(fields(lines, std::to_string(i)),
                (std::vector<std::string>{std::to_string(i), std::to_string(i), format_count(i + 1), "100", "2.0ms",
                                          "2.5ms", format_count(3 * i), std::to_string(3 * (i + 1))}))
          << screen;
    }
    if (shards > 8) {
      // Shards 7, 8 and 9 in one row: queues 24; 8 + 9 + 10 = 27 batches per s.
      EXPECT_EQ(fields(lines, "7-9"), (std::vector<std::string>{"7-9", "24", "27", "100", "2.0ms", "-", "72", "81"}))
          << screen;
      EXPECT_TRUE(fields(lines, "8").empty()) << screen;
    }
  }
}

}  // namespace
}  // namespace evpipe::top
