#include "app/reload.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "app/process.h"
#include "config/reload.h"
#include "io/postgres/partitions.h"
#include "io/postgres/route_check.h"
#include "stages/route/active.h"
#include "stages/schema/active.h"
#include "stages/schema/compile.h"
#include "stages/tenant/quota.h"
#include "pipeline/intake.h"
#include "pipeline/thread_name.h"

namespace evpipe::app {

config_reloader::config_reloader(std::string path, config::settings running, pipeline::router& router,
                                 pipeline::metrics_registry& registry, live_sources& sources)
    : path_(std::move(path)), running_(std::move(running)), router_(router), registry_(registry), sources_(sources) {
  thread_ = std::thread([this] {
    pipeline::thread_name named("reload");
    run();
  });
}

config_reloader::~config_reloader() { stop(); }

void config_reloader::request() {
  std::lock_guard lock(mu_);
  pending_ = true;
  cv_.notify_one();
}

void config_reloader::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

void config_reloader::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return pending_ || stopping_; });
    if (stopping_) return;
    pending_ = false;
    lock.unlock();
    reload_once();
    lock.lock();
  }
}

void config_reloader::record(bool ok) {
  pipeline::bump(ok ? registry_.reloads.succeeded : registry_.reloads.failed);
  registry_.reloads.last_succeeded.store(ok);
  auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  registry_.reloads.last_timestamp.store(now);
}

void config_reloader::reload_once() {
  spdlog::info("received SIGHUP: reloading {}", path_);
  config::settings next;
  try {
    next = config::load_file(path_);
    auto problems = config::problems_for_run(next);
    if (!problems.empty()) throw config::config_error(path_ + ": " + problems.front());
  } catch (const std::exception& e) {
    // Nothing changes: a typo in the file must not stop ingest.
    // Counted before the line is logged: whoever reads the line sees the count.
    record(false);
    spdlog::error("reload failed, the running configuration stays: {}", e.what());
    return;
  }
  auto plan = config::plan_reload(running_, next);
  if (!plan.kept.empty()) {
    std::string keys;
    for (const auto& k : plan.kept) keys += (keys.empty() ? "" : ", ") + k;
    spdlog::warn("reload: {} cannot change while evpipe runs: the running values stay until a restart", keys);
  }
  if (plan.batch) {
    router_.set_batch_limits(next.batch.max_rows, next.batch.max_bytes, std::chrono::milliseconds(next.batch.linger_ms));
  }
  if (plan.queue) router_.set_queue_capacity(next.pipeline.queue_capacity);
  if (plan.log) apply_log_settings(next.log.level, next.log.format);
  // Payload schemas: the files are read again on every reload; a set that
  // fails to load leaves the running one in place.
  bool schemas_ok = true;
  try {
    size_t n = stages::schema::install_schemas(next.schemas);
    if (next.schemas.enabled) spdlog::info("reload: payload schemas: {} files from {}", n, next.schemas.dir);
  } catch (const stages::schema::schema_error& e) {
    spdlog::error("reload: payload schemas unchanged: {}", e.what());
    schemas_ok = false;
  }
  // Routes: compiled, and their tables checked as at startup, before they
  // are published; routes that fail either stay as they run.
  bool routes_ok = true;
  if (plan.routes) {
    routes_ok = reload_routes(next);
    if (!routes_ok) plan.effective.routes = running_.routes;
  }
  if (plan.tenant_quotas && running_.tenants.enabled) {
    // A new book, each tenant's debt carried over at its new rate; sources
    // charge it from their next event on, no connection is touched.
    stages::tenant::publish_quota_book(
        std::make_shared<stages::tenant::quota_book>(plan.effective.tenants, stages::tenant::active_quotas()));
    spdlog::info("reload: [tenants] quotas: {} events/s each, {} tenants with their own, from the next event on",
                 next.tenants.quota.events_per_s, next.tenants.quotas.size());
  }
  if (plan.events) {
    // Open connections take them at their next read (between two events);
    // none is closed, and events already read keep the verdict they had.
    stages::envelope_limits limits;
    limits.max_event_bytes = next.events.max_event_bytes;
    limits.max_key_bytes = next.events.max_key_bytes;
    limits.max_depth = next.events.max_depth;
    pipeline::publish_event_limits(limits);
    spdlog::info("reload: [events] max_event_bytes = {}, max_key_bytes = {}, max_depth = {} from the next read on",
                 limits.max_event_bytes, limits.max_key_bytes, limits.max_depth);
  }

  // A source that is stopped waits this long for its last acks.
  const auto stop_budget = std::chrono::milliseconds(std::min<uint32_t>(running_.pipeline.shutdown_timeout_ms, 10'000));
  // An HTTP source whose tenancy alone changed keeps its connections: its
  // binding is swapped in place (docs/tenants.md).
  sources_.swap_http_tenancy(plan.http, running_.http_sources, plan.effective.http_sources);
  int failed = sources_.apply(plan, plan.effective, stop_budget);
  if (failed < 0) {
    record(false);
    spdlog::info("reload: evpipe is draining; sources unchanged");
    return;
  }
  auto count = [](const config::reload_plan& p, auto member) {
    return (p.tcp.*member).size() + (p.mqtt.*member).size() + (p.http.*member).size();
  };
  record(failed == 0 && schemas_ok && routes_ok);
  spdlog::info("reload done: sources {} stopped, {} started, {} unchanged{}{}{}{}",
               count(plan, &config::source_changes::stop), count(plan, &config::source_changes::start) - failed,
               count(plan, &config::source_changes::keep),
               plan.batch ? "; batch max " + std::to_string(next.batch.max_rows) + " rows / " +
                                std::to_string(next.batch.max_bytes) + " bytes / " +
                                std::to_string(next.batch.linger_ms) + " ms linger"
                          : "",
               plan.queue ? "; queue_capacity " + std::to_string(next.pipeline.queue_capacity) : "",
               plan.log ? "; log " + next.log.level + " " + next.log.format : "",
               failed > 0 ? "; " + std::to_string(failed) + " sources failed to start (see above)" : "");
  running_ = std::move(plan.effective);
}

bool config_reloader::reload_routes(const config::settings& next) {
  std::shared_ptr<const stages::route::route_set> routes;
  try {
    routes = std::make_shared<const stages::route::route_set>(next.routes);
  } catch (const config::config_error& e) {
    spdlog::error("reload: routes unchanged: {}", e.what());
    return false;
  }
  // What the startup checks (check_database in app/daemon.cc): every table
  // and column there with the types the routes write, upsert keys indexed,
  // evpipe_route_keys migrated. The database and schema are the running
  // ones ([postgres] changes wait for a restart).
  if (!next.routes.empty()) {
    io::pg_connection conn;
    io::pg_status st = conn.connect(running_.postgres.dsn, "evpipe-reload");
    if (!st.ok) {
      spdlog::error("reload: routes unchanged: cannot check their tables: {}", st.message);
      return false;
    }
    auto problems = io::route_db_problems(conn, next.routes, running_.postgres.schema);
    for (const auto& p : problems) spdlog::error("reload: routes unchanged: {}", p);
    if (!problems.empty()) return false;
  }
  stages::route::set_active_routes(std::move(routes));
  io::publish_partitioned_route_tables(io::partitioned_route_tables(next.routes));  // partition_by, docs/partitions.md
  std::string names;
  for (const auto& r : next.routes) names += (names.empty() ? "" : ", ") + r.name;
  spdlog::info("reload: routes: {} from the next read on{}{}", next.routes.size(), names.empty() ? "" : ": ", names);
  return true;
}

}  // namespace evpipe::app
