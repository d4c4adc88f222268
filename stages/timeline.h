#pragma once
// When one write batch passed each step of its way from the socket to its
// acknowledgement (issue 19): the stage histograms say how long each stage
// takes on average over batches, a timeline says where one slow batch spent
// its time. pipeline/batch_trace.h judges and logs it.
//
// A plain value: stamped by the shard thread (queue, dedup, flush, commit),
// the sink (COPY and COMMIT, on the shard thread too), then copied to each
// origin's thread with the outcomes, which stamps the ack (TCP). Stamping is
// one clock read; a step not reached or not known stays 0.

#include <array>
#include <chrono>
#include <cstdint>
#include <string_view>

namespace evpipe::stages {

// The steps, in the order a batch meets them. The time between two steps is
// named after the later one (see step_interval_name).
enum class step : uint8_t {
  read,         // the first event of the batch was read from its socket (the event's received_ns)
  queued,       // pushed to its shard's queue (validate and route on the I/O thread before)
  popped,       // taken from the queue by the shard thread
  absorbed,     // through the dedup window into the write batch
  flushed,      // the write batch closed (max_rows, max_bytes, linger or an empty queue): its write begins
  copy_start,   // the COPY into events_mirror is sent
  copy_end,     // its data is sent (PQputCopyEnd)
  commit_sent,  // the COMMIT is sent (a lone COPY commits itself: its copy_end)
  committed,    // the database confirmed the commit
  ack_posted,   // the shard handed the outcomes to the origin's thread
  ack_run,      // the origin's thread took them (its ack_tracker advanced)
  ack_written,  // the ack that covers the batch's last event was written to the socket
  count_
};
inline constexpr size_t step_count = static_cast<size_t>(step::count_);

[[nodiscard]] constexpr std::string_view step_name(step s) noexcept {
  constexpr std::array<std::string_view, step_count> names = {
      "read",        "queued",    "popped",     "absorbed", "flushed", "copy_start",
      "copy_end",    "commit_sent", "committed", "ack_posted", "ack_run", "ack_written"};
  return s < step::count_ ? names[static_cast<size_t>(s)] : "unknown";
}

// What happens between the step before `s` and `s`: the name a trace gives
// to that span of time.
[[nodiscard]] constexpr std::string_view step_interval_name(step s) noexcept {
  constexpr std::array<std::string_view, step_count> names = {
      "read",     "validate", "queue",  "dedup",     "linger", "prepare",
      "copy",     "insert",   "commit", "post_ack",  "io_wait", "ack_write"};
  return s < step::count_ ? names[static_cast<size_t>(s)] : "unknown";
}

// Steady-clock nanoseconds, the clock of every stamp (and of received_ns).
[[nodiscard]] inline int64_t steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Page faults and involuntary context switches (getrusage); -1: not sampled.
struct usage_counts {
  int64_t minor_faults = -1;
  int64_t major_faults = -1;
  int64_t involuntary_switches = -1;
  [[nodiscard]] bool known() const noexcept { return minor_faults >= 0; }
};

struct batch_timeline {
  std::array<int64_t, step_count> at{};  // steady-clock ns per step; 0: not reached
  uint32_t shard = 0;
  uint32_t events = 0;        // events of the write batch (all origins)
  uint32_t attempts = 0;      // writes tried (1: committed at the first)
  uint64_t batch_no = 0;      // the shard's write batches since start, this one included (the first batches)
  int64_t connection_age_ns = 0;  // at ack_written: how long the origin's connection had been open (0: unknown)
  usage_counts shard_thread;  // the shard thread's, since its previous slow batch (sampled only for slow ones)

  void stamp(step s, int64_t ns) noexcept { at[static_cast<size_t>(s)] = ns; }
  void stamp(step s) noexcept { stamp(s, steady_ns()); }
  [[nodiscard]] int64_t of(step s) const noexcept { return at[static_cast<size_t>(s)]; }
  void clear() noexcept { *this = batch_timeline{}; }
};

}  // namespace evpipe::stages
