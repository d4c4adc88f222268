#pragma once
// Acknowledgement bookkeeping for one ordered stream of events (a TCP
// connection): events are numbered from 1 as they are read; shards report
// their outcomes in any order; acked() is how many, counted from the first,
// all have a durable outcome. That count only ever grows, so an ack can be
// sent as one cumulative number.
//
// Owned by the connection's executor; not thread-safe. Holds a ring of one bit
// per event in flight, sized for the connection's unacked limit.

#include <cstdint>
#include <vector>

namespace evpipe::pipeline {

class ack_tracker {
 public:
  // window: the most events that may be read and unacknowledged at once.
  explicit ack_tracker(uint64_t window);

  // Numbers the next event read; returns its sequence number.
  uint64_t next() noexcept { return ++issued_; }
  // Marks an event done. Sequence numbers must be issued and not yet marked.
  void complete(uint64_t seq) noexcept;
  // Advances past every contiguously completed event; returns acked().
  uint64_t advance() noexcept;

  [[nodiscard]] uint64_t acked() const noexcept { return acked_; }
  [[nodiscard]] uint64_t issued() const noexcept { return issued_; }
  [[nodiscard]] uint64_t in_flight() const noexcept { return issued_ - acked_; }
  [[nodiscard]] uint64_t window() const noexcept { return mask_ + 1; }

 private:
  [[nodiscard]] bool test(uint64_t seq) const noexcept {
    uint64_t i = (seq - 1) & mask_;
    return (bits_[i >> 6] >> (i & 63)) & 1;
  }
  uint64_t mask_;
  std::vector<uint64_t> bits_;
  uint64_t issued_ = 0;
  uint64_t acked_ = 0;
};

}  // namespace evpipe::pipeline
