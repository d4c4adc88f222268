// Payload schemas (issue 13): CPU per event of the envelope checks alone and
// with the payload checked against schemas/kinds/project_created.json, a
// typical 10-field payload schema (uuids, a date-time, an enum, a pattern,
// bounded strings and numbers, an array, a nested object). The promise:
// with schema at most 1.3x envelope-only. Run: build/bench/schema_bench
// (on a shared machine with --benchmark_enable_random_interleaving=true, so
// that load falls on both cases alike); bench/schema_callgrind.sh counts the
// same cases in instructions. Figures: docs/schemas.md, "Cost".
#include <benchmark/benchmark.h>
#include <simdjson.h>

#include "bench/schema_bench_events.h"
#include "stages/validate.h"

namespace {

using evpipe::bench::make_events;
using evpipe::bench::shipped_set;
namespace schema = evpipe::stages::schema;

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
    if (r.ok()) {
      if (auto s = set->check(env.kind, v.parsed(), w); !s.ok()) r = std::move(s);
    }
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
  for (size_t k = 0; k < events.size(); ++k) (void)parsers[k].parse(events[k]);
  schema::walker w;
  size_t i = 0;
  for (auto _ : state) {
    const auto& d = parsers[i++ % parsers.size()].doc;
    auto r = set->check("project_created", d, w);
    if (!r.ok()) state.SkipWithError(r.message.c_str());
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SchemaWalkOnly)->Arg(0)->Arg(1)->Arg(2);  // 0: as shipped, 1: no pattern, 2: no pattern, no format

}  // namespace

BENCHMARK_MAIN();
