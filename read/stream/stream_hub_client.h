#pragma once
// stream_hub's view of one client (stream_hub.h), shared by the hub's two
// source files: stream_hub.cc (the tail and the hub's loop) and
// stream_catch_up.cc (catch-up from the table). Not for other users.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "read/stream/stream_hub.h"

namespace evpipe::read {

// A client as the hub thread sees it. Owned by that thread once added.
struct stream_hub::client_state {
  uint64_t id = 0;
  std::shared_ptr<stream_client> client;
  stream_filter filter;
  stream_since since;
  bool started = false;   // since resolved
  bool live = false;      // at the tail: fed by the fan-out; else caught up from the table
  position pos;           // everything up to here was handed to the client (or did not match)
  std::string since_time; // catch-up only: the first catch-up's time bound
  bool dead = false;      // given up after on_error()
  int64_t drops_seen = 0; // the newest retention drop when it started: later ones are checked as it catches up
  uint32_t page_rows = 0; // catch-up only: rows of its next page (0: catch_up_page; stream_hub_options)
  // A tail read's rows this (filtered) client takes, as runs [first, last);
  // reused from read to read.
  std::vector<std::pair<uint32_t, uint32_t>> runs;
  uint32_t run_start = 0;
  bool in_run = false;
};

}  // namespace evpipe::read
