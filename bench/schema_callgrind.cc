// Instruction counts per event for the cases of bench/schema_bench.cc, for
// a machine too noisy for wall-clock medians: run under
// `valgrind --tool=callgrind --collect-atstart=no` (bench/schema_callgrind.sh
// does, and prints Ir per event and the ratio). Each case runs `events`
// events (argv[1], default 20000) between a zero and a dump of callgrind's
// counters, after one untimed warm-up round, so parsing the schema, making
// the events and the first-touch costs are not counted. Outside valgrind the
// client requests do nothing and it just runs the loops.
#include <simdjson.h>

// From Debian's valgrind package; without it the driver still builds and
// runs its loops, and bench/schema_callgrind.sh needs valgrind anyway.
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_ZERO_STATS
#define CALLGRIND_TOGGLE_COLLECT
#define CALLGRIND_DUMP_STATS_AT(name) (void)(name)
#endif

#include <cstdio>
#include <cstdlib>

#include "bench/schema_bench_events.h"
#include "stages/validate.h"

namespace {

using namespace evpipe;

template <typename Fn>
void measure(const char* name, size_t count, Fn&& per_event) {
  per_event(count);  // warm-up: caches, the walker's path, simdjson's buffers
  CALLGRIND_ZERO_STATS;
  CALLGRIND_TOGGLE_COLLECT;
  per_event(count);
  CALLGRIND_TOGGLE_COLLECT;
  CALLGRIND_DUMP_STATS_AT(name);
}

}  // namespace

int main(int argc, char** argv) {
  const size_t count = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20000;
  const auto events = bench::make_events();
  const auto set = bench::shipped_set();
  stages::envelope_validator v;
  stages::envelope env;
  stages::schema::walker w;
  size_t failures = 0;

  measure("envelope_only", count, [&](size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const auto& e = events[i % events.size()];
      failures += !v.check(e, e.capacity(), env).ok();
    }
  });
  measure("envelope_and_schema", count, [&](size_t n) {
    for (size_t i = 0; i < n; ++i) {
      failures += !bench::envelope_and_schema(v, env, *set, w, events[i % events.size()]).ok();
    }
  });
  if (failures) {
    std::fprintf(stderr, "%zu events failed; the cases measure valid events\n", failures);
    return 1;
  }
  return 0;
}
