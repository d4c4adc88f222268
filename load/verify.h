#pragma once
// Checks a load run against the tables: every valid unique key sent is in
// events_mirror exactly once, every invalid event sent is in dlq_events, and
// nothing else of the run (its keys all start with "<run id>-") is there.
// compare() is the pure part; verify_run() queries PostgreSQL for it.

#include <cstdint>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace evpipe::load {

struct verify_report {
  uint64_t expected_rows = 0, found_rows = 0;
  uint64_t missing = 0, duplicated = 0, stray = 0;
  uint64_t expected_dlq = 0, found_dlq = 0;
  std::vector<std::string> examples;  // a few of the differences, for people
  [[nodiscard]] bool ok() const noexcept {
    return missing == 0 && duplicated == 0 && stray == 0 && found_dlq == expected_dlq;
  }
  [[nodiscard]] std::string summary() const;
};

// stored: (idempotency_key, rows with that key) for every row of the run.
[[nodiscard]] verify_report compare(const std::unordered_set<std::string>& expected_keys,
                                    const std::vector<std::pair<std::string, uint64_t>>& stored,
                                    uint64_t expected_dlq, uint64_t found_dlq);

// The keys evpipe-load's generator gave the valid events of a run:
// "<run>-<stream>-<n>" for n below valid_per_stream[stream].
[[nodiscard]] std::unordered_set<std::string> generated_keys(const std::string& run_id,
                                                             const std::vector<uint64_t>& valid_per_stream);

// Queries the database (libpq connection string or URI); throws
// std::runtime_error when it cannot.
[[nodiscard]] verify_report verify_run(const std::string& dsn, const std::string& run_id,
                                       const std::unordered_set<std::string>& expected_keys, uint64_t expected_dlq);

}  // namespace evpipe::load
