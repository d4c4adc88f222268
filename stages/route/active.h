#pragma once
// The routes of the running process. app/ sets them once, before any source
// or shard starts, and never changes them while the pipeline runs; intake
// (on I/O threads) and the sinks (on shard threads) read them. A pointer
// set once rather than a constructor argument threaded through every source:
// a source needs no change to feed routes (docs/routes.md).

#include <memory>

#include "stages/route/route_set.h"

namespace evpipe::stages::route {

void set_active_routes(std::shared_ptr<const route_set> routes);
// nullptr when the configuration has no routes.
[[nodiscard]] const route_set* active_routes() noexcept;

}  // namespace evpipe::stages::route
