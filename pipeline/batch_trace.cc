#include "pipeline/batch_trace.h"

#include <sys/resource.h>

#include <mutex>

#include <spdlog/spdlog.h>

namespace evpipe::pipeline {

namespace {

std::atomic<int64_t> threshold_ns{0};
trace_counters totals;
// One trace line a second, and one stall line a second, process-wide.
log_pacer trace_pacer(std::chrono::seconds(1));
log_pacer stall_pacer(std::chrono::seconds(1));
// The process's counts at the previous line (guarded by usage_mu).
std::mutex usage_mu;
stages::usage_counts process_before{0, 0, 0};

stages::usage_counts of(const rusage& ru) noexcept {
  return {static_cast<int64_t>(ru.ru_minflt), static_cast<int64_t>(ru.ru_majflt), static_cast<int64_t>(ru.ru_nivcsw)};
}

stages::usage_counts minus(const stages::usage_counts& a, const stages::usage_counts& b) noexcept {
  if (!a.known() || !b.known()) return {};
  return {a.minor_faults - b.minor_faults, a.major_faults - b.major_faults,
          a.involuntary_switches - b.involuntary_switches};
}

// The process's counts since the previous line; called only for a line.
stages::usage_counts process_since_last_line() {
  auto now = process_usage();
  std::lock_guard lock(usage_mu);
  auto d = minus(now, process_before);
  process_before = now;
  return d;
}

void append_usage(std::string& out, std::string_view who, const stages::usage_counts& u) {
  if (!u.known()) return;
  fmt::format_to(std::back_inserter(out), "; {} {} minor / {} major faults, {} involuntary switches", who,
                 u.minor_faults, u.major_faults, u.involuntary_switches);
}

double ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

}  // namespace

void set_slow_batch_threshold(std::chrono::milliseconds threshold) noexcept {
  threshold_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(threshold).count(),
                     std::memory_order_relaxed);
}

int64_t slow_batch_threshold_ns() noexcept { return threshold_ns.load(std::memory_order_relaxed); }

trace_counters& trace_totals() noexcept { return totals; }

stages::usage_counts thread_usage() noexcept {
  rusage ru{};
  if (getrusage(RUSAGE_THREAD, &ru) != 0) return {};
  return of(ru);
}

stages::usage_counts process_usage() noexcept {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return {};
  return of(ru);
}

stages::usage_counts thread_usage_since_last() noexcept {
  thread_local stages::usage_counts before{0, 0, 0};
  auto now = thread_usage();
  auto d = minus(now, before);
  if (now.known()) before = now;
  return d;
}

int64_t elapsed_ns(const stages::batch_timeline& t, stages::step last) noexcept {
  const int64_t from = t.of(stages::step::read), to = t.of(last);
  return from > 0 && to > 0 ? to - from : 0;
}

slowest_span slowest(const stages::batch_timeline& t, stages::step last) noexcept {
  slowest_span best;
  int64_t prev = t.of(stages::step::read);
  if (prev == 0) return best;
  for (size_t i = 1; i <= static_cast<size_t>(last) && i < stages::step_count; ++i) {
    const int64_t at = t.at[i];
    if (at == 0) continue;  // not reached or not stamped on this path: the next span covers it
    if (at - prev > best.ns) best = {static_cast<stages::step>(i), at - prev};
    prev = at;
  }
  return best;
}

bool is_slow(const stages::batch_timeline& t, stages::step last, int64_t threshold) noexcept {
  return threshold > 0 && elapsed_ns(t, last) > threshold;
}

std::string describe_slow_batch(const stages::batch_timeline& t, stages::step last,
                                const stages::usage_counts& process, const stages::usage_counts& io_thread,
                                uint64_t left_out) {
  std::string out;
  auto it = std::back_inserter(out);
  const slowest_span worst = slowest(t, last);
  fmt::format_to(it, "slow batch: {:.1f} ms from read to {}, most in {} ({:.1f} ms); shard {}, batch {}, {} events, "
                 "{} attempt{}; at ms:",
                 ms(elapsed_ns(t, last)), stages::step_name(last), stages::step_interval_name(worst.step),
                 ms(worst.ns), t.shard, t.batch_no, t.events, t.attempts, t.attempts == 1 ? "" : "s");
  const int64_t from = t.of(stages::step::read);
  for (size_t i = 1; i <= static_cast<size_t>(last) && i < stages::step_count; ++i) {
    if (t.at[i] == 0) continue;
    fmt::format_to(it, " {} {:.2f}", stages::step_name(static_cast<stages::step>(i)), ms(t.at[i] - from));
  }
  if (t.connection_age_ns > 0) fmt::format_to(it, "; connection open {:.0f} ms", ms(t.connection_age_ns));
  append_usage(out, "since the previous trace: process", process);
  append_usage(out, "io thread", io_thread);
  append_usage(out, "shard thread", t.shard_thread);
  if (left_out > 0) fmt::format_to(it, "; {} slow batches not logged since the previous line", left_out);
  return out;
}

bool finish_timeline(const stages::batch_timeline& t, stages::step last, bool on_io_thread) {
  if (!is_slow(t, last, slow_batch_threshold_ns())) return false;
  bump(totals.slow_batches);
  uint64_t left_out = 0;
  if (trace_pacer.admit(stages::steady_ns(), left_out)) {
    const auto io = on_io_thread ? thread_usage_since_last() : stages::usage_counts{};
    spdlog::warn("{}", describe_slow_batch(t, last, process_since_last_line(), io, left_out));
  }
  return true;
}

void note_io_lateness(int64_t late_ns, std::string_view thread) {
  const int64_t threshold = slow_batch_threshold_ns();
  if (threshold <= 0 || late_ns <= threshold) return;
  bump(totals.io_stalls);
  bump(totals.io_stall_ns, static_cast<uint64_t>(late_ns));
  uint64_t left_out = 0;
  if (!stall_pacer.admit(stages::steady_ns(), left_out)) return;
  std::string line = fmt::format("io thread stall: a timer on {} fired {:.1f} ms late", thread, ms(late_ns));
  append_usage(line, "since the previous trace: process", process_since_last_line());
  append_usage(line, "this thread", thread_usage_since_last());
  if (left_out > 0) fmt::format_to(std::back_inserter(line), "; {} stalls not logged since the previous line", left_out);
  spdlog::warn("{}", line);
}

bool log_pacer::admit(int64_t now_ns, uint64_t& left_out) noexcept {
  int64_t next = next_ns_.load(std::memory_order_relaxed);
  if (now_ns < next || !next_ns_.compare_exchange_strong(next, now_ns + interval_ns_, std::memory_order_relaxed)) {
    held_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  left_out = held_.exchange(0, std::memory_order_relaxed);
  return true;
}

}  // namespace evpipe::pipeline
