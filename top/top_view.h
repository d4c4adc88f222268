#pragma once
// What `evpipe top` shows, computed from two scrapes of /metrics one
// interval apart (rates and latency percentiles are over that interval,
// totals and gauges are the latest), and drawn as lines that fit the
// terminal. Pure functions: the terminal and HTTP parts are in top_main.cc.

#include <string>
#include <vector>

#include "top/metrics_text.h"

namespace evpipe::top {

struct view_input {
  std::string url;          // what is scraped, for the title
  std::string prefix = "evpipe";
  const scrape* before = nullptr;  // nullptr on the first screen: no rates yet
  const scrape* now = nullptr;
  double interval_s = 1;    // time between the two scrapes
  std::string clock;        // "HH:MM:SS", for the title
  std::string ready;        // /health/ready: "ready", or its reason; "" = unknown
  std::string error;        // the last scrape's error, if any
};

// The screen, at most `height` lines of at most `width` characters.
[[nodiscard]] std::vector<std::string> render_view(const view_input& in, int width, int height);

// "12,345", "1.2k"... helpers, for tests.
[[nodiscard]] std::string format_count(double v);
[[nodiscard]] std::string format_seconds(double s);

}  // namespace evpipe::top
