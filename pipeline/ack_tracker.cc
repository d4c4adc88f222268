#include "pipeline/ack_tracker.h"

#include <bit>

namespace evpipe::pipeline {

ack_tracker::ack_tracker(uint64_t window) {
  uint64_t size = std::bit_ceil(window < 64 ? uint64_t{64} : window);
  mask_ = size - 1;
  bits_.assign(size / 64, 0);
}

void ack_tracker::complete(uint64_t seq) noexcept {
  uint64_t i = (seq - 1) & mask_;
  bits_[i >> 6] |= uint64_t{1} << (i & 63);
}

uint64_t ack_tracker::advance() noexcept {
  while (acked_ < issued_ && test(acked_ + 1)) {
    uint64_t i = acked_ & mask_;
    bits_[i >> 6] &= ~(uint64_t{1} << (i & 63));
    ++acked_;
  }
  return acked_;
}

}  // namespace evpipe::pipeline
