#include "pipeline/ack_tracker.h"

#include <bit>

namespace evpipe::pipeline {

ack_tracker::ack_tracker(uint64_t window) {
  uint64_t size = std::bit_ceil(window < 64 ? uint64_t{64} : window);
  mask_ = size - 1;
  done_.assign(size / 64, 0);
  reported_.assign(size / 64, 0);
}

void ack_tracker::complete(uint64_t seq) noexcept {
  const uint64_t i = slot(seq);
  const uint64_t b = uint64_t{1} << (i & 63);
  if (done_[i >> 6] & b) return;  // marked already: counted once
  done_[i >> 6] |= b;
  ++unreported_;
}

uint64_t ack_tracker::advance() noexcept {
  while (acked_ < issued_) {
    uint64_t i = slot(acked_ + 1);
    if (!bit(done_, i)) break;
    const uint64_t m = ~(uint64_t{1} << (i & 63));
    done_[i >> 6] &= m;
    if (bit(reported_, i)) {
      reported_[i >> 6] &= m;
    } else {
      --unreported_;
    }
    ++acked_;
  }
  return acked_;
}

void ack_tracker::take_ranges(std::vector<range>& out, size_t max_ranges) {
  size_t taken = 0;
  uint64_t seq = acked_ + 1;
  while (unreported_ > 0 && taken < max_ranges && seq <= issued_) {
    // Skip to the first line from `seq` on, within its word, that is done
    // and not reported. Slots of lines passed by advance() and of lines not
    // yet issued are clear in both rings.
    const uint64_t i = slot(seq);
    const uint64_t word = (done_[i >> 6] & ~reported_[i >> 6]) >> (i & 63);
    if (word == 0) {
      seq += 64 - (i & 63);
      continue;
    }
    seq += static_cast<uint64_t>(std::countr_zero(word));
    if (seq > issued_) break;
    range r{seq, seq};
    for (;;) {
      const uint64_t j = slot(seq);
      reported_[j >> 6] |= uint64_t{1} << (j & 63);
      --unreported_;
      r.last = seq++;
      if (seq > issued_) break;
      const uint64_t k = slot(seq);
      if (!bit(done_, k) || bit(reported_, k)) break;
    }
    out.push_back(r);
    ++taken;
  }
}

}  // namespace evpipe::pipeline
