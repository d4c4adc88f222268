#pragma once
// `evpipe top`: a live view of a running evpipe in the terminal, read from
// its /metrics every second (like `vector top`). Runs until `q` (or Ctrl-C),
// and puts the terminal back as it found it.

#include <string>

namespace evpipe::top {

struct top_options {
  std::string url = "http://127.0.0.1:9464/metrics";
  std::string prefix = "evpipe";  // [metrics] prefix
  int interval_ms = 1000;
};

// Returns the exit code (2 when the URL is not http://host:port[/path]).
int run_top(const top_options& options);

}  // namespace evpipe::top
