#pragma once
// Slow-batch traces (issue 19): what the stage histograms cannot say about
// one hiccup. Every write batch carries a timeline (stages/timeline.h); when
// the origin's ack is written (TCP) or the outcomes are handed over (the
// other sources), finish_timeline() judges it. A batch slower than [pipeline]
// slow_batch_ms from its first read to its ack is counted and logged on one
// line: every step's offset, the span that took longest, and the page faults
// and involuntary context switches of the process and of the threads
// involved since the previous trace. Also the I/O threads' stalls
// (app/io_stall_watch.h) are counted and logged here.
//
// Cost while nothing is slow: one subtraction and compare per finished
// timeline. Lines are rate limited (one a second, process-wide); the next
// line says how many slow batches were left out. All functions thread-safe.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "pipeline/metrics.h"
#include "stages/timeline.h"

namespace evpipe::pipeline {

// [pipeline] slow_batch_ms, set once at start (0: traces and stall checks off).
void set_slow_batch_threshold(std::chrono::milliseconds threshold) noexcept;
[[nodiscard]] int64_t slow_batch_threshold_ns() noexcept;

// Process-wide counts for /metrics (rendered by metrics_registry).
struct trace_counters {
  counter slow_batches{0};  // timelines finished over the threshold
  counter io_stalls{0};     // I/O thread timers that fired late by more than the threshold
  counter io_stall_ns{0};   // their lateness, summed
};
[[nodiscard]] trace_counters& trace_totals() noexcept;

// getrusage: the calling thread's (RUSAGE_THREAD) and the process's counts.
[[nodiscard]] stages::usage_counts thread_usage() noexcept;
[[nodiscard]] stages::usage_counts process_usage() noexcept;
// The calling thread's counts since its previous call (the first call: since
// the thread started).
[[nodiscard]] stages::usage_counts thread_usage_since_last() noexcept;

// From read to `last`, ns; 0 when either is not stamped.
[[nodiscard]] int64_t elapsed_ns(const stages::batch_timeline& t, stages::step last) noexcept;
// The longest span between two stamped steps up to `last`, named by its
// later step (stages::step_interval_name): where the batch lost its time.
struct slowest_span {
  stages::step step = stages::step::read;
  int64_t ns = 0;
};
[[nodiscard]] slowest_span slowest(const stages::batch_timeline& t, stages::step last) noexcept;
[[nodiscard]] bool is_slow(const stages::batch_timeline& t, stages::step last, int64_t threshold_ns) noexcept;

// The trace line (without the log's own prefix). `process` and `io_thread`:
// counts since the previous trace, or unknown; `left_out`: slow batches not
// logged since the previous line.
[[nodiscard]] std::string describe_slow_batch(const stages::batch_timeline& t, stages::step last,
                                              const stages::usage_counts& process,
                                              const stages::usage_counts& io_thread, uint64_t left_out);

// Judges a timeline that ends at `last` (stamped), on the thread that stamped
// it: when slow, counts it and logs its line, with this thread's counts as
// the I/O thread's when `on_io_thread`. Returns whether it was slow.
bool finish_timeline(const stages::batch_timeline& t, stages::step last, bool on_io_thread);

// An I/O thread's timer fired `late_ns` late (app/io_stall_watch.h): counts
// it when over the threshold and logs it (rate limited like the traces).
void note_io_lateness(int64_t late_ns, std::string_view thread);

// Lets one line through per interval, process-wide; counts what it holds back.
// Thread-safe.
class log_pacer {
 public:
  explicit log_pacer(std::chrono::nanoseconds interval) : interval_ns_(interval.count()) {}
  // True when a line may be logged now; then `left_out` is how many were held
  // back since the last one let through.
  bool admit(int64_t now_ns, uint64_t& left_out) noexcept;

 private:
  int64_t interval_ns_;
  std::atomic<int64_t> next_ns_{0};
  std::atomic<uint64_t> held_{0};
};

}  // namespace evpipe::pipeline
