// The whole CPU path of an event, from bytes on a socket to an encoded COPY
// row with its outcome delivered: framing, validation, key hashing and
// routing (pipeline::intake, on this thread), the queue hand-off, and on the
// shard thread dedup, batching, COPY encoding and outcome delivery. The sink
// discards the batch, so no database time is included. Reports events/s and
// CPU time of the whole process (both threads) per event.
//
// Built twice: cpu_path_bench (glibc malloc) and cpu_path_bench_mimalloc, so
// the allocator's effect is measured side by side.
#include <benchmark/benchmark.h>
#include <simdjson.h>

#include <atomic>
#include <cstring>

#include "io/sources/tcp/line_framer.h"
#include "load/event_generator.h"
#include "pipeline/intake.h"
#include "pipeline/metrics.h"
#include "pipeline/router.h"

namespace {

using namespace evpipe;

class null_sink : public pipeline::batch_sink {
 public:
  pipeline::write_status write(stages::write_batch& b) override {
    benchmark::DoNotOptimize(b.copy_data().data());
    return pipeline::write_status::committed;
  }
  bool ready() const override { return true; }
  bool check() override { return true; }
  std::string last_error() const override { return {}; }
};

class counting_origin : public stages::event_origin {
 public:
  void on_outcomes(std::span<const stages::outcome> o) override { done.fetch_add(o.size()); }
  std::atomic<uint64_t> done{0};
};

void BM_CpuPath(benchmark::State& state) {
  const size_t shards = state.range(1);
  // 64 KiB "reads" of NDJSON, as a TCP source sees them.
  evpipe::load::generator_options g;
  g.payload_bytes = state.range(0);
  g.dup_frac = 0.01;
  evpipe::load::event_generator gen(g);
  std::string stream;
  size_t lines = 0;
  while (stream.size() < (8 << 20)) {
    gen.next(stream);
    stream.push_back('\n');
    ++lines;
  }

  pipeline::metrics_registry registry("bench", 100);
  pipeline::shard_options opts;
  opts.linger = std::chrono::microseconds(500);
  std::vector<std::unique_ptr<pipeline::shard>> ss;
  for (size_t i = 0; i < shards; ++i) {
    ss.push_back(std::make_unique<pipeline::shard>(i, opts, std::make_unique<null_sink>(), registry.add_shard(), registry));
  }
  pipeline::router router(std::move(ss), 1 << 20);
  router.start();
  auto origin = std::make_shared<counting_origin>();
  stages::envelope_validator validator;
  pipeline::intake in(shards, {});
  io::line_framer framer(1 << 20, simdjson::SIMDJSON_PADDING);
  uint64_t seq = 0;

  for (auto _ : state) {
    // One pass over the stream = `lines` events.
    for (size_t off = 0; off < stream.size();) {
      auto w = framer.writable();
      size_t n = std::min<size_t>({w.size, 64 * 1024, stream.size() - off});
      std::memcpy(w.data, stream.data() + off, n);
      framer.commit(n);
      off += n;
      in.reserve(n);
      for (auto it = framer.next(); it.what == io::line_framer::kind::line; it = framer.next()) {
        in.add(it.bytes, it.readable, ++seq, 0, "bench/topic", validator);
      }
      for (auto& b : in.batches()) {
        if (!b.events.empty()) b.origin = origin;
      }
      in.submitted();
      router.submit(in.batches());
    }
    while (origin->done.load() < seq) std::this_thread::yield();
  }
  router.stop(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  state.SetItemsProcessed(state.iterations() * lines);
  state.SetBytesProcessed(state.iterations() * stream.size());
  state.counters["shards"] = static_cast<double>(shards);
}
BENCHMARK(BM_CpuPath)
    ->Args({200, 1})->Args({400, 1})->Args({1000, 1})->Args({4000, 1})->Args({400, 2})
    ->MeasureProcessCPUTime()->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
