#include "stages/schema/active.h"

#include <atomic>
#include <mutex>

namespace evpipe::stages::schema {

namespace {
std::mutex mu;                          // guards `held`
std::shared_ptr<const schema_set> held;  // the active set
std::atomic<uint64_t> generation{0};    // bumped on every swap

struct thread_view {
  uint64_t seen = 0;
  std::shared_ptr<const schema_set> set;
};
thread_local thread_view view;
}  // namespace

void set_active_schemas(std::shared_ptr<const schema_set> set) {
  std::lock_guard lock(mu);
  held = std::move(set);
  generation.fetch_add(1, std::memory_order_acq_rel);
}

size_t install_schemas(const config::schemas_section& cfg) {
  if (!cfg.enabled) {
    set_active_schemas(nullptr);
    return 0;
  }
  set_options opts;
  opts.dir = cfg.dir;
  opts.version_path = cfg.version_path;
  opts.dead_letter_unknown_version = cfg.unknown_version == "dead_letter";
  auto set = schema_set::load(opts);  // throws before anything changes
  const size_t n = set->files();
  set_active_schemas(std::move(set));
  return n;
}

const schema_set* thread_schemas() noexcept {
  const uint64_t g = generation.load(std::memory_order_acquire);
  if (g != view.seen) {
    std::lock_guard lock(mu);
    view.set = held;
    view.seen = generation.load(std::memory_order_relaxed);
  }
  return view.set.get();
}

walker& thread_walker() noexcept {
  thread_local walker w;
  return w;
}

}  // namespace evpipe::stages::schema
