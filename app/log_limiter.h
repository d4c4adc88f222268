#pragma once
// Rate limit for repeated log lines: a condition that repeats (a producer
// resending the same bad line, a database refusing every batch, a flood of
// refused connections) writes at most `lines_per_interval` lines per
// interval, then one line that says how many were suppressed.
//
// Lines count as the same "site" when their level and their text, with every
// run of digits read as one "#" and cut at `template_chars`, are equal: the
// same message template with other counts, ports or durations. Only that
// template (not the suppressed lines' own text) appears in a summary.
//
// Thread-safe (one mutex): called by every thread that logs, before the line
// enters the log queue, so that a flood neither fills the queue nor pushes
// other lines out of it.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <absl/container/flat_hash_map.h>

namespace evpipe::app {

// Tuning (compile-time, like moodycamel's traits).
struct log_limit_traits {
  uint32_t lines_per_interval = 10;           // lines of one site written per interval
  std::chrono::milliseconds interval{10'000};  // the window, and how soon a summary follows
  size_t template_chars = 96;                  // a site's template: this many characters of its text
  size_t max_sites = 4096;                     // sites remembered; past this, idle ones are forgotten
};

class log_limiter {
 public:
  using clock = std::chrono::steady_clock;
  explicit log_limiter(log_limit_traits t = {}) : t_(t) {}

  // A site whose window ended with lines suppressed: to report.
  struct summary {
    int level = 0;
    std::string text;  // "<N> lines like this were suppressed in the last <s> s: <template>"
  };
  struct decision {
    bool write = true;
    std::vector<summary> summaries;  // write these first (any site, including this one)
  };
  [[nodiscard]] decision admit(int level, std::string_view message, clock::time_point now);
  // Summaries of every site with suppressed lines, whatever its window (at exit).
  [[nodiscard]] std::vector<summary> drain();

  // The site template of a message (digit runs as "#", cut): for tests.
  [[nodiscard]] std::string site_template(std::string_view message) const;

 private:
  struct site {
    int level = 0;
    clock::time_point window_start;
    uint32_t written = 0;
    uint64_t suppressed = 0;
  };
  summary summarise(const std::string& key, const site& s) const;
  void sweep(clock::time_point now, std::vector<summary>& out);

  log_limit_traits t_;
  std::mutex mu_;
  absl::flat_hash_map<std::string, site> sites_;
  clock::time_point last_sweep_{};
};

}  // namespace evpipe::app
