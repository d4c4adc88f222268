#pragma once
// Waiting for a running evpipe's /metrics to say something.

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {

// The /metrics body of the evpipe at `port` once every sample has its
// expected value, or the last body read when `timeout` passes. Counters of
// background work (partition rounds, key pruning) move just after the commit
// whose effect a test has seen, so a test waits for them before it compares.
inline std::string metrics_when(uint16_t port, const std::vector<std::pair<std::string, double>>& expected,
                                std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  std::string m;
  (void)eventually([&] {
    m = http_get(port, "/metrics");
    for (const auto& [sample, value] : expected) {
      if (metric_value(m, sample) != value) return false;
    }
    return true;
  }, timeout);
  return m;
}

}  // namespace evpipe::testing
