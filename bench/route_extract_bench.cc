// Route extraction cost per event (issue 10: at most 0.3 µs added per
// 400-byte event). Device telemetry messages of ~400 bytes, routed to a
// 7-column typed row, measured three ways against a parse-only baseline:
//   BM_RouteParseOnly        simdjson DOM parse of the message (what the
//                            validator already pays on the I/O thread);
//   BM_RouteExtractParsed    extract_row on an already parsed message: the
//                            cost routing adds where the message is parsed anyway;
//   BM_RouteExtractBatch     route_stage::extract_batch: copy, parse and
//                            extract, per message, in batches of 256.
// Run: build/bench/route_extract_bench
#include <benchmark/benchmark.h>
#include <simdjson.h>

#include <random>

#include "config/config.h"
#include "stages/route/extract.h"

namespace {

using namespace evpipe::stages::route;

constexpr const char* routes_toml = R"(
[[routes]]
name = "telemetry"
topics = ["autocore/+/telemetry"]
envelope = "none"
table = "telemetry"
idempotency = ["device_id", "ts"]
columns = [
  { name = "device_id", source = "topic[1]", type = "text" },
  { name = "temperature", type = "float8" },
  { name = "humidity", type = "float8" },
  { name = "voltage", type = "float8" },
  { name = "memory_free", type = "int8" },
  { name = "ts", source = "timestamp", type = "timestamptz", required = true },
  { name = "received_at", source = "received_at", type = "timestamptz" },
]
)";

// About 400 bytes: the seed's telemetry fields plus the diagnostics a real
// device sends along (which the route ignores).
std::vector<std::string> make_messages(size_t n = 1024) {
  std::mt19937 rng(42);
  std::vector<std::string> out(n);
  for (size_t i = 0; i < n; ++i) {
    char buf[512];
    int len = std::snprintf(
        buf, sizeof buf,
        R"({"device_id":"ESP32_%03zu","temperature":%.1f,"humidity":%.1f,"voltage":%.2f,"memory_free":%u,)"
        R"("timestamp":"2025-01-28T10:%02zu:%02zuZ","uptime":%u,"rssi":-%u,"firmware_version":"1.2.0",)"
        R"("ip_address":"192.168.1.%zu","wifi":{"ssid":"autocore-lab","channel":6,"bssid":"aa:bb:cc:dd:ee:ff"},)"
        R"("sensors":[{"id":"dht22","ok":true},{"id":"ina219","ok":true}],"boot_reason":"power_on",)"
        R"("heap_fragmentation":%u,"loop_ms":%u})",
        i % 100, 20 + (rng() % 100) / 10.0, 40 + (rng() % 100) / 10.0, 3.2 + (rng() % 10) / 100.0,
        40000u + static_cast<unsigned>(rng() % 10000), (i / 60) % 60, i % 60, static_cast<unsigned>(rng() % 100000),
        static_cast<unsigned>(40 + rng() % 50), i % 250, static_cast<unsigned>(rng() % 30),
        static_cast<unsigned>(rng() % 20));
    out[i].assign(buf, len);
  }
  return out;
}

double mean_bytes(const std::vector<std::string>& v) {
  size_t total = 0;
  for (const auto& s : v) total += s.size();
  return static_cast<double>(total) / v.size();
}

void BM_RouteParseOnly(benchmark::State& state) {
  auto msgs = make_messages();
  std::vector<simdjson::padded_string> padded(msgs.begin(), msgs.end());
  simdjson::dom::parser parser;
  size_t i = 0;
  for (auto _ : state) {
    auto doc = parser.parse(padded[i++ % padded.size()]);
    benchmark::DoNotOptimize(doc);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["message_bytes"] = mean_bytes(msgs);
}
BENCHMARK(BM_RouteParseOnly);

void BM_RouteExtractParsed(benchmark::State& state) {
  auto msgs = make_messages();
  route_set routes(evpipe::config::load_string(routes_toml).routes);
  // Parsed once, ahead: the loop measures extraction alone. One parser per
  // document keeps every tree alive.
  std::vector<simdjson::padded_string> padded(msgs.begin(), msgs.end());
  std::vector<simdjson::dom::parser> parsers(64);
  std::vector<simdjson::dom::element> docs;
  for (size_t i = 0; i < parsers.size(); ++i) docs.push_back(parsers[i].parse(padded[i]).value());
  std::string out, identity;
  out.reserve(1 << 20);
  extract_error err;
  const bool with_identity = state.range(0) != 0;
  size_t i = 0;
  for (auto _ : state) {
    size_t k = i++ % docs.size();
    if (out.size() > (1 << 19)) out.clear();
    auto st = extract_row(routes.at(0), docs[k], {msgs[k], "autocore/ESP32_001/telemetry", 1'700'000'000'000'000},
                          out, &err, with_identity ? &identity : nullptr);
    benchmark::DoNotOptimize(st);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["message_bytes"] = mean_bytes(msgs);
}
BENCHMARK(BM_RouteExtractParsed)->Arg(0)->Arg(1)->ArgName("identity");

void BM_RouteExtractBatch(benchmark::State& state) {
  auto msgs = make_messages();
  route_set routes(evpipe::config::load_string(routes_toml).routes);
  route_stage stage(routes);
  route_scratch scratch;
  std::vector<route_rows> rows(routes.size());
  std::vector<extract_error> results;
  constexpr size_t batch = 256;
  std::vector<routed_message> in;
  for (size_t i = 0; i < batch; ++i) in.push_back({{msgs[i], "autocore/ESP32_001/telemetry", 0}, 0});
  for (auto _ : state) {
    rows[0].clear();
    stage.extract_batch(in, scratch, rows, results);
    benchmark::DoNotOptimize(rows[0].tuples.data());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["message_bytes"] = mean_bytes(msgs);
}
BENCHMARK(BM_RouteExtractBatch);

}  // namespace

BENCHMARK_MAIN();
