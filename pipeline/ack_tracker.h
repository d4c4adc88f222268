#pragma once
// Acknowledgement bookkeeping for one ordered stream of events (a TCP
// connection): events are numbered from 1 as they are read; shards report
// their outcomes in any order; acked() is how many, counted from the first,
// all have a durable outcome. That count only ever grows, so an ack can be
// sent as one cumulative number.
//
// Selective acknowledgement: with events of one stream in several shards, a
// shard's commit completes lines beyond acked() while an earlier line waits
// in another shard. take_ranges() hands out those lines once each, as runs,
// so that they can be acknowledged without waiting for the earlier line
// (docs/operations.md, "Acks").
//
// Owned by the connection's executor; not thread-safe. Holds two rings of
// one bit per event in flight (done, reported), sized for the connection's
// unacked limit.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace evpipe::pipeline {

class ack_tracker {
 public:
  // A run of lines [first, last] (inclusive).
  struct range {
    uint64_t first = 0;
    uint64_t last = 0;
    bool operator==(const range&) const = default;
  };

  // window: the most events that may be read and unacknowledged at once.
  explicit ack_tracker(uint64_t window);

  // Numbers the next event read; returns its sequence number.
  uint64_t next() noexcept { return ++issued_; }
  // Marks an event done. Sequence numbers must be issued and not yet marked.
  void complete(uint64_t seq) noexcept;
  // Advances past every contiguously completed event; returns acked().
  uint64_t advance() noexcept;

  // Lines beyond acked() that are done and that take_ranges() has not
  // returned yet.
  [[nodiscard]] uint64_t unreported() const noexcept { return unreported_; }
  // Appends to `out`, in order, up to `max_ranges` runs of unreported lines
  // beyond acked(), and counts them as reported. Lines that acked() has
  // passed are never returned: the cumulative count covers them.
  void take_ranges(std::vector<range>& out, size_t max_ranges);

  [[nodiscard]] uint64_t acked() const noexcept { return acked_; }
  [[nodiscard]] uint64_t issued() const noexcept { return issued_; }
  [[nodiscard]] uint64_t in_flight() const noexcept { return issued_ - acked_; }
  [[nodiscard]] uint64_t window() const noexcept { return mask_ + 1; }

 private:
  [[nodiscard]] uint64_t slot(uint64_t seq) const noexcept { return (seq - 1) & mask_; }
  [[nodiscard]] static bool bit(const std::vector<uint64_t>& v, uint64_t i) noexcept {
    return (v[i >> 6] >> (i & 63)) & 1;
  }
  uint64_t mask_;
  std::vector<uint64_t> done_;
  std::vector<uint64_t> reported_;
  uint64_t issued_ = 0;
  uint64_t acked_ = 0;
  uint64_t unreported_ = 0;
};

}  // namespace evpipe::pipeline
