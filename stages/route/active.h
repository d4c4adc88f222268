#pragma once
// The routes of the running process, swapped whole on reload (SIGHUP).
//
// app/ publishes them at startup and when a reload changes [[routes]] (from
// the reload thread, once the new set compiled and its tables passed the
// database checks). Each intake follows them (routes_follower) and takes a
// new set only between two reads, so the events of one read, and so one
// event_batch, are all matched against one complete set; the batch carries
// that set (event_batch::routes) to its shard and sink, which write its rows
// with it. Events taken before a reload thus finish under the routes they
// were taken with, and a set is freed once no batch and no follower holds it.
// Uses stages::published, the one publish-and-follow mechanism.

#include <cstdint>
#include <memory>

#include "stages/route/route_set.h"

namespace evpipe::stages::route {

// nullptr or an empty set: no routes. Any thread.
void set_active_routes(std::shared_ptr<const route_set> routes);
// The routes published last (nullptr when there are none), held by the
// caller for as long as it uses them. Any thread; takes a lock: not for
// the hot path (use a routes_follower there).
[[nodiscard]] std::shared_ptr<const route_set> active_routes();

// Follows the published routes for one owner (an intake). Owned by it; not
// thread-safe. Costs one acquire load per look while nothing changes.
class routes_follower {
 public:
  // True, with `routes` replaced by the published ones (nullptr: none),
  // when they were published after this follower last looked.
  [[nodiscard]] bool changed(std::shared_ptr<const route_set>& routes);

 private:
  uint64_t seen_ = 0;
};

}  // namespace evpipe::stages::route
