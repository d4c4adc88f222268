#include "load/latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace evpipe::load {

void latency_histogram::merge(const latency_histogram& o) {
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += o.counts_[i];
  total_ += o.total_;
  max_ = std::max(max_, o.max_);
}

uint64_t latency_histogram::percentile(double p) const {
  if (total_ == 0) return 0;
  auto rank = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(total_)));
  rank = std::clamp<uint64_t>(rank, 1, total_);
  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= rank) return std::min(highest_of(i), max_);
  }
  return max_;
}

std::string latency_histogram::distribution() const {
  std::string out = "       Value(ms)   Percentile   TotalCount 1/(1-Percentile)\n\n";
  char line[128];
  // HdrHistogram's ticks: 5 per halving of the remaining distance to 100%.
  for (double p = 0; p < 100.0;) {
    uint64_t v = percentile(p == 0 ? 1e-9 : p);
    auto below = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(total_)));
    std::snprintf(line, sizeof line, "%16.3f %12.6f %12llu %14.2f\n", v / 1e6, p / 100.0,
                  static_cast<unsigned long long>(below), p < 100.0 ? 1.0 / (1.0 - p / 100.0) : 0.0);
    out += line;
    double remaining = 100.0 - p;
    if (remaining < 1e-4 || below >= total_) break;
    p += remaining / 10.0;
  }
  std::snprintf(line, sizeof line, "%16.3f %12.6f %12llu\n", max_ / 1e6, 1.0,
                static_cast<unsigned long long>(total_));
  out += line;
  std::snprintf(line, sizeof line, "#[Max = %.3f ms, Total count = %llu]\n", max_ / 1e6,
                static_cast<unsigned long long>(total_));
  out += line;
  return out;
}

}  // namespace evpipe::load
