#include "stages/route/active.h"

#include "stages/published.h"

namespace evpipe::stages::route {

namespace {
published<std::shared_ptr<const route_set>> active;
}  // namespace

void set_active_routes(std::shared_ptr<const route_set> routes) {
  if (routes && routes->empty()) routes = nullptr;  // readers test one pointer
  active.publish(std::move(routes));
}

std::shared_ptr<const route_set> active_routes() {
  uint64_t seen = 0;  // 0: take whatever was published
  std::shared_ptr<const route_set> out;
  (void)active.take_if_newer(seen, out);
  return out;
}

bool routes_follower::changed(std::shared_ptr<const route_set>& routes) { return active.take_if_newer(seen_, routes); }

}  // namespace evpipe::stages::route
