#pragma once
// Latency over time: one latency_histogram per second of the run, keyed by
// each event's intended send time, so a stall shows in the second it began
// (every event scheduled during it counts). evpipe-load and the floor client
// (perf/floor_client.cc) write the same CSV, so perf/run.sh can draw the two
// one above the other and spot seconds where the platform stalled.
//
// One timeline per thread (record() is not thread-safe); merge() at the end.

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "load/latency_histogram.h"

namespace evpipe::load {

class latency_timeline {
 public:
  explicit latency_timeline(int64_t start_ns = 0) : start_(start_ns) {}

  void record(int64_t intended_ns, int64_t latency_ns) {
    int64_t s = intended_ns < start_ ? 0 : (intended_ns - start_) / 1'000'000'000;
    // A run longer than a day is not a load run: clamp rather than grow.
    if (s > 86'400) s = 86'400;
    auto i = static_cast<size_t>(s);
    if (seconds_.size() <= i) seconds_.resize(i + 1);
    if (!seconds_[i]) seconds_[i] = std::make_unique<latency_histogram>();
    seconds_[i]->record(latency_ns);
  }

  void merge(const latency_timeline& o) {
    if (seconds_.size() < o.seconds_.size()) seconds_.resize(o.seconds_.size());
    for (size_t i = 0; i < o.seconds_.size(); ++i) {
      if (!o.seconds_[i]) continue;
      if (!seconds_[i]) seconds_[i] = std::make_unique<latency_histogram>();
      seconds_[i]->merge(*o.seconds_[i]);
    }
  }

  // CSV: second (of intended send time, from the start), events, then
  // p50/p99/p99.9/max in ms; seconds without events are left out.
  [[nodiscard]] bool write(const std::string& path) const {
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (!f) return false;
    std::fprintf(f, "second,events,p50_ms,p99_ms,p99_9_ms,max_ms\n");
    for (size_t i = 0; i < seconds_.size(); ++i) {
      if (!seconds_[i]) continue;
      const auto& h = *seconds_[i];
      std::fprintf(f, "%zu,%llu,%.3f,%.3f,%.3f,%.3f\n", i, static_cast<unsigned long long>(h.count()),
                   h.percentile(50) / 1e6, h.percentile(99) / 1e6, h.percentile(99.9) / 1e6, h.max() / 1e6);
    }
    return std::fclose(f) == 0;
  }

 private:
  int64_t start_;
  std::vector<std::unique_ptr<latency_histogram>> seconds_;
};

}  // namespace evpipe::load
