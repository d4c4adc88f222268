#include "stages/route/active.h"

#include <atomic>

namespace evpipe::stages::route {

namespace {
std::shared_ptr<const route_set> held;  // keeps the set alive for the process
std::atomic<const route_set*> current{nullptr};
}  // namespace

void set_active_routes(std::shared_ptr<const route_set> routes) {
  const route_set* p = routes && !routes->empty() ? routes.get() : nullptr;
  held = std::move(routes);
  current.store(p, std::memory_order_release);
}

const route_set* active_routes() noexcept { return current.load(std::memory_order_acquire); }

}  // namespace evpipe::stages::route
