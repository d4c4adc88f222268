#pragma once
// Open-loop pacing: event i of a stream at `rate` events/s is meant to be
// sent at start + i/rate, whatever happened to the events before it. The
// sender asks how many events are due now and sends them; latency is then
// measured from intended(i), so a stall of the server counts against every
// event scheduled during it (no coordinated omission).

#include <algorithm>
#include <cstdint>

namespace evpipe::load {

class rate_pacer {
 public:
  rate_pacer(int64_t start_ns, double rate_per_s) : start_(start_ns), rate_(rate_per_s) {}

  // When event i is meant to be sent.
  [[nodiscard]] int64_t intended(uint64_t i) const noexcept {
    return start_ + static_cast<int64_t>(static_cast<double>(i) * 1e9 / rate_);
  }
  // How many events (counted from 0) are due at `now`: every i with
  // intended(i) <= now. None before the start.
  [[nodiscard]] uint64_t due(int64_t now) const noexcept {
    if (now < start_) return 0;
    auto n = static_cast<uint64_t>(static_cast<double>(now - start_) * rate_ / 1e9) + 1;
    // Guard the float rounding at bucket edges: never count an event early.
    while (n > 0 && intended(n - 1) > now) --n;
    return n;
  }

 private:
  int64_t start_;
  double rate_;
};

}  // namespace evpipe::load
