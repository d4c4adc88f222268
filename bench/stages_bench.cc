// Per-stage CPU cost, swept over event sizes. Each case reports events/s
// (items_per_second) and bytes/s. Run: build/bench/stages_bench
#include <benchmark/benchmark.h>
#include <concurrentqueue/concurrentqueue.h>
#include <simdjson.h>

#include <atomic>
#include <random>
#include <thread>

#include "load/event_generator.h"
#include "load/latency_histogram.h"
#include "stages/batch.h"
#include "stages/dedup.h"
#include "stages/validate.h"

namespace {

std::vector<std::string> make_events(size_t bytes, size_t n = 1024) {
  evpipe::load::generator_options g;
  g.payload_bytes = bytes;
  evpipe::load::event_generator gen(g);
  std::vector<std::string> out(n);
  for (auto& e : out) {
    gen.next(e);
    e.reserve(e.size() + simdjson::SIMDJSON_PADDING);
  }
  return out;
}

void BM_Validate(benchmark::State& state) {
  auto events = make_events(state.range(0));
  evpipe::stages::envelope_validator v;
  evpipe::stages::envelope env;
  size_t i = 0, bytes = 0;
  for (auto _ : state) {
    const auto& e = events[i++ % events.size()];
    auto r = v.check(e, e.capacity(), env);
    benchmark::DoNotOptimize(r);
    bytes += e.size();
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(bytes);
}
BENCHMARK(BM_Validate)->Arg(200)->Arg(400)->Arg(1000)->Arg(4000)->Arg(16000);

// Baseline: a DOM parse of the whole event, then the same field look-ups.
// It validates the whole document too, but builds a tree first.
void BM_DomParseBaseline(benchmark::State& state) {
  auto events = make_events(state.range(0));
  simdjson::dom::parser p;
  size_t i = 0, bytes = 0;
  for (auto _ : state) {
    const auto& e = events[i++ % events.size()];
    simdjson::dom::element doc;
    if (p.parse(e.data(), e.size(), false).get(doc)) state.SkipWithError("parse");
    std::string_view a, b, c, d;
    bool ok = !doc["trace_id"].get(a) && !doc["ts"].get(b) && !doc["kind"].get(c) && !doc["idempotency_key"].get(d);
    benchmark::DoNotOptimize(ok);
    bool is_obj = doc["payload"].is_object();
    benchmark::DoNotOptimize(is_obj);
    bytes += e.size();
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(bytes);
}
BENCHMARK(BM_DomParseBaseline)->Arg(200)->Arg(400)->Arg(1000)->Arg(4000)->Arg(16000);

void BM_DedupWindow(benchmark::State& state) {
  evpipe::stages::dedup_window w(state.range(0));
  uint64_t n = 0;
  for (auto _ : state) {
    std::string key = "run-0-" + std::to_string(n++);
    auto h = evpipe::stages::hash_key(key.data(), key.size());
    benchmark::DoNotOptimize(w.insert(h));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DedupWindow)->Arg(1000)->Arg(1'000'000);

void BM_CopyEncode(benchmark::State& state) {
  auto events = make_events(state.range(0));
  std::string out;
  out.reserve(8 << 20);
  size_t i = 0, bytes = 0;
  for (auto _ : state) {
    if (out.size() > (4 << 20)) out.clear();
    const auto& e = events[i++ % events.size()];
    evpipe::stages::copy_format::append_event_row(out, "tracker/events/projects/created", e);
    bytes += e.size();
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(bytes);
}
BENCHMARK(BM_CopyEncode)->Arg(400)->Arg(4000);

// Hand-off between a producer and a consumer thread through the shard queue,
// in batches of range(0) events (as sources do per read).
void BM_QueueHandoff(benchmark::State& state) {
  const size_t per_batch = state.range(0);
  moodycamel::ConcurrentQueue<std::vector<uint64_t>> q;
  std::atomic<bool> done{false};
  std::atomic<uint64_t> consumed{0};
  std::thread consumer([&] {
    std::vector<uint64_t> item;
    while (!done.load(std::memory_order_relaxed)) {
      if (q.try_dequeue(item)) consumed.fetch_add(item.size(), std::memory_order_relaxed);
    }
  });
  uint64_t produced = 0;
  for (auto _ : state) {
    q.enqueue(std::vector<uint64_t>(per_batch, 1));
    produced += per_batch;
    while (produced - consumed.load(std::memory_order_relaxed) > 64 * per_batch) {
    }
  }
  while (consumed.load() < produced) {
  }
  done = true;
  consumer.join();
  state.SetItemsProcessed(produced);
}
BENCHMARK(BM_QueueHandoff)->Arg(1)->Arg(64)->Arg(512)->UseRealTime();

// evpipe-load's latency histogram: one record per acked event.
void BM_HistogramRecord(benchmark::State& state) {
  evpipe::load::latency_histogram h;
  std::mt19937_64 rng(1);
  std::vector<int64_t> values(4096);
  for (auto& v : values) v = 1000 + static_cast<int64_t>(rng() % 100'000'000);
  size_t i = 0;
  for (auto _ : state) h.record(values[i++ & 4095]);
  benchmark::DoNotOptimize(h.count());
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HistogramRecord);

}  // namespace

BENCHMARK_MAIN();
