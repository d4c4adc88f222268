// Payload schemas (issue 13): CPU per event of the envelope checks alone and
// with the payload checked against schemas/kinds/project_created.json, a
// typical 10-field payload schema (uuids, a date-time, an enum, a pattern,
// bounded strings and numbers, an array, a nested object). The promise:
// with schema at most 1.3x envelope-only. Run: build/bench/schema_bench
#include <benchmark/benchmark.h>
#include <simdjson.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <random>

#include "stages/schema/compile.h"
#include "stages/schema/schema_set.h"
#include "stages/validate.h"

namespace {

namespace schema = evpipe::stages::schema;

std::string uuid(std::mt19937_64& rng) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 36; ++i) s += (i == 8 || i == 13 || i == 18 || i == 23) ? '-' : hex[rng() % 16];
  return s;
}

// project_created events whose payload has all 10 fields, all valid.
std::vector<std::string> make_events(size_t n = 1024) {
  std::mt19937_64 rng(42);
  static const char* statuses[] = {"planning", "active", "on_hold", "completed"};
  std::vector<std::string> out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = R"({"trace_id":")" + uuid(rng) + R"(","ts":"2025-01-15T10:30:00Z","kind":"project_created",)" +
             R"("idempotency_key":"project_created_)" + std::to_string(i) + R"(","payload":{"project_id":")" +
             uuid(rng) + R"(","name":"Project )" + std::to_string(rng() % 100000) + R"(","status":")" +
             statuses[rng() % 4] + R"(","created_by":")" + uuid(rng) +
             R"(","timestamp":"2025-01-15T10:30:00.123456+00:00","description":"Migrate the tracker to the new )" +
             R"(event pipeline","tags":["infra","q1","events"],"priority":)" + std::to_string(1 + rng() % 5) +
             R"(,"budget":)" + std::to_string(rng() % 100000) + R"(.5,"metadata":{"source":"api","version":"1.0.0"}}})";
    out[i].reserve(out[i].size() + simdjson::SIMDJSON_PADDING);
  }
  return out;
}

// The shipped project_created.json; `strip` 1 drops its `pattern`, 2 its
// `format`s too: how much of the walk those keywords take.
std::shared_ptr<const schema::schema_set> shipped_set(int strip = 0) {
  schema::set_options o;
  auto set = std::make_shared<schema::schema_set>(o);
  std::ifstream in(std::string(EVPIPE_SOURCE_DIR) + "/schemas/kinds/project_created.json");
  std::stringstream text;
  text << in.rdbuf();
  std::string schema_text = text.str();
  if (strip >= 1) schema_text = std::regex_replace(schema_text, std::regex(R"(, "pattern": "(?:[^"\\]|\\.)*")"), "");
  if (strip >= 2) schema_text = std::regex_replace(schema_text, std::regex(R"(, "format": "[^"]*")"), "");
  set->add("project_created", "", schema::compile_schema(schema_text, "project_created.json"));
  return set;
}

// The baseline: what intake does today for every event (parse + envelope).
void BM_EnvelopeOnly(benchmark::State& state) {
  auto events = make_events();
  evpipe::stages::envelope_validator v;
  evpipe::stages::envelope env;
  size_t i = 0;
  for (auto _ : state) {
    const auto& e = events[i++ % events.size()];
    auto r = v.check(e, e.capacity(), env);
    if (!r.ok()) state.SkipWithError(r.message.c_str());
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EnvelopeOnly);

// The same, then the payload against its kind's schema, on the same
// document (as pipeline/intake.cc does).
void BM_EnvelopeAndSchema(benchmark::State& state) {
  auto events = make_events();
  auto set = shipped_set();
  evpipe::stages::envelope_validator v;
  evpipe::stages::envelope env;
  schema::walker w;
  size_t i = 0;
  for (auto _ : state) {
    const auto& e = events[i++ % events.size()];
    auto r = v.check(e, e.capacity(), env);
    if (r.ok()) r = set->check(env.kind, v.document(), w);
    if (!r.ok()) state.SkipWithError(r.message.c_str());
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EnvelopeAndSchema);

// Only the walk, for the share of each keyword's cost.
void BM_SchemaWalkOnly(benchmark::State& state) {
  auto events = make_events();
  auto set = shipped_set(static_cast<int>(state.range(0)));
  std::vector<simdjson::dom::parser> parsers(events.size());
  std::vector<simdjson::dom::element> docs;
  for (size_t k = 0; k < events.size(); ++k) docs.push_back(parsers[k].parse(events[k]));
  schema::walker w;
  size_t i = 0;
  for (auto _ : state) {
    const auto& d = docs[i++ % docs.size()];
    auto r = set->check("project_created", d, w);
    if (!r.ok()) state.SkipWithError(r.message.c_str());
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SchemaWalkOnly)->Arg(0)->Arg(1)->Arg(2);  // 0: as shipped, 1: no pattern, 2: no pattern, no format

}  // namespace

BENCHMARK_MAIN();
