#pragma once
// Makes streams of events in the standard envelope for load runs, benchmarks
// and the perf scripts: a reproducible mix (by seed) of kinds and topics,
// optionally with invalid events (spread over every reason code) and resends
// of keys already sent. Every idempotency key carries the run id, so runs
// never collide in one table.
//
// Not thread-safe: one generator per producer thread.

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace evpipe::load {

struct generator_options {
  std::string run_id = "run";
  uint64_t seed = 1;
  size_t payload_bytes = 400;  // approximate size of the whole event line
  double invalid_frac = 0.0;   // events that must be dead-lettered
  double dup_frac = 0.0;       // resends of a key already sent
  uint32_t stream = 0;         // distinguishes generators of one run (connections)
  size_t too_large_bytes = 0;  // the server's event size limit: when set, invalid events
                               // include events one byte over it (too_large)
};

enum class event_class : uint8_t { valid, invalid, duplicate };

class event_generator {
 public:
  explicit event_generator(generator_options opts);

  // Appends the next event (without newline) to `out`; says what it is.
  event_class next(std::string& out);

  [[nodiscard]] uint64_t valid_sent() const noexcept { return valid_; }
  [[nodiscard]] uint64_t invalid_sent() const noexcept { return invalid_; }
  [[nodiscard]] uint64_t duplicates_sent() const noexcept { return dups_; }

  // The topic an event carries in its "topic" field (the stream mixes them).
  static const std::vector<std::string>& topics();

 private:
  void valid_event(std::string& out, uint64_t n, const std::string& topic);
  void invalid_event(std::string& out, uint64_t n);

  generator_options opts_;
  std::mt19937_64 rng_;
  uint64_t seq_ = 0;
  uint64_t valid_ = 0, invalid_ = 0, dups_ = 0;
  std::vector<uint64_t> recent_;  // numbers of valid events, for resends
  std::string filler_;
};

}  // namespace evpipe::load
