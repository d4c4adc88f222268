#include "stages/route/probe.h"

namespace evpipe::stages::route {

route_probe& route_probe::instance() {
  static route_probe probe;
  return probe;
}

route_counts& route_probe::of(const std::string& name) {
  std::lock_guard lock(mu_);
  auto& slot = by_name_[name];
  if (!slot) slot = std::make_unique<route_counts>();
  return *slot;
}

std::vector<route_probe::row> route_probe::snapshot() const {
  std::lock_guard lock(mu_);
  std::vector<row> out;
  out.reserve(by_name_.size());
  for (const auto& [name, c] : by_name_) {
    out.push_back({name, c->appended.load(std::memory_order_relaxed), c->upserted.load(std::memory_order_relaxed),
                   c->skipped_older.load(std::memory_order_relaxed), c->mismatched.load(std::memory_order_relaxed)});
  }
  return out;
}

}  // namespace evpipe::stages::route
