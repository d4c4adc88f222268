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

#include <algorithm>
#include <chrono>
#include <vector>

#include "bench/schema_bench_events.h"
#include "stages/validate.h"

#ifdef EVPIPE_BENCH_CODE_PAD
// Moves the code linked after this file (the libraries) by this many bytes:
// bench/schema_placement.sh measures the ratio over several placements.
#define EVPIPE_PAD_STR2(x) #x
#define EVPIPE_PAD_STR(x) EVPIPE_PAD_STR2(x)
__asm__(".text\n.skip " EVPIPE_PAD_STR(EVPIPE_BENCH_CODE_PAD) ", 0x90\n");
#endif

namespace {

using evpipe::bench::envelope_and_schema;
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
    auto r = envelope_and_schema(v, env, *set, w, events[i++ % events.size()]);
    if (!r.ok()) state.SkipWithError(r.message.c_str());
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EnvelopeAndSchema);

// The ratio itself, robust to a clock that changes speed: blocks of 64
// events, each timed twice in a row (envelope only, then envelope and
// schema, the order swapped every other block so that neither always finds
// the events' text in cache), about 30 us apart, so that both see the same
// clock. Reports each case's mean ns an event, the ratio of the sums, and
// the median of the blocks' ratios (which a block preempted by another
// process cannot move).
void BM_SchemaCostRatio(benchmark::State& state) {
  auto events = make_events();
  auto set = shipped_set();
  evpipe::stages::envelope_validator v;
  evpipe::stages::envelope env;
  schema::walker w;
  constexpr size_t block = 64;
  size_t at = 0, failures = 0;
  auto run = [&](size_t from, bool with_schema) {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t k = from; k < from + block; ++k) {
      const auto& e = events[k % events.size()];
      auto r = with_schema ? envelope_and_schema(v, env, *set, w, e) : v.check(e, e.capacity(), env);
      failures += !r.ok();
      benchmark::DoNotOptimize(r);
    }
    return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  };
  double envelope_ns = 0, schema_ns = 0;
  std::vector<double> ratios;
  bool swap = false;
  for (auto _ : state) {
    double a, b;
    if (swap) {
      b = run(at, true);
      a = run(at, false);
    } else {
      a = run(at, false);
      b = run(at, true);
    }
    swap = !swap;
    at += block;
    envelope_ns += a;
    schema_ns += b;
    ratios.push_back(b / a);
  }
  if (failures) state.SkipWithError("an event failed; the cases measure valid events");
  const double n = static_cast<double>(state.iterations() * block);
  std::nth_element(ratios.begin(), ratios.begin() + ratios.size() / 2, ratios.end());
  state.counters["envelope_ns"] = envelope_ns / n;
  state.counters["schema_ns"] = schema_ns / n;
  state.counters["ratio"] = schema_ns / envelope_ns;
  state.counters["block_ratio_median"] = ratios.empty() ? 0 : ratios[ratios.size() / 2];
}
BENCHMARK(BM_SchemaCostRatio);

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
