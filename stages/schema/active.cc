#include "stages/schema/active.h"

#include "stages/published.h"

namespace evpipe::stages::schema {

namespace {
published<std::shared_ptr<const schema_set>> active;

struct thread_view {
  uint64_t seen = 0;
  std::shared_ptr<const schema_set> set;
};
thread_local thread_view view;
}  // namespace

void set_active_schemas(std::shared_ptr<const schema_set> set) { active.publish(std::move(set)); }

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
  (void)active.take_if_newer(view.seen, view.set);
  return view.set.get();
}

walker& thread_walker() noexcept {
  thread_local walker w;
  return w;
}

}  // namespace evpipe::stages::schema
