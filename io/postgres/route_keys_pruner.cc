#include "io/postgres/route_keys_pruner.h"

#include <spdlog/spdlog.h>

#include <charconv>
#include <cstring>
#include <string>

#include "io/postgres/table_writer.h"
#include "stages/route/active.h"
#include "stages/route/probe.h"

namespace evpipe::io {

namespace {
// The oldest keys first, through the created_at index (migrate_route_keys);
// SKIP LOCKED: rows another pruner is deleting are left to it.
std::string prune_sql(const std::string& schema) {
  const std::string t = (schema.empty() ? "" : schema + ".") + "evpipe_route_keys";
  return "DELETE FROM " + t + " WHERE ctid = ANY(ARRAY(SELECT ctid FROM " + t +
         " WHERE created_at < now() - make_interval(secs => $1::float8) ORDER BY created_at LIMIT $2::int "
         "FOR UPDATE SKIP LOCKED))";
}
// Whether migrate_route_keys built the created_at index (valid).
bool has_created_at_index(pg_connection& conn, const std::string& schema) {
  const std::string table = (schema.empty() ? "" : schema + ".") + "evpipe_route_keys";
  const std::string index(route_keys_created_at_index);
  const char* params[2] = {table.c_str(), index.c_str()};
  pg_result res;
  pg_status st = conn.query_params(
      "SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
      "WHERE i.indrelid = to_regclass($1) AND ic.relname = $2 AND i.indisvalid",
      2, params, res);
  return st.ok && PQntuples(res.get()) > 0;
}
constexpr uint32_t between_batches_ms = 10;  // lets writers' transactions in between two DELETEs
}  // namespace

route_keys_pruner::route_keys_pruner(route_keys_pruning options) : options_(std::move(options)) {}

route_keys_pruner::~route_keys_pruner() { stop(); }

void route_keys_pruner::start() { thread_ = std::thread([this] { run(); }); }

void route_keys_pruner::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool route_keys_pruner::pause(uint32_t ms) {
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return stopping_; });
  return !stopping_;
}

pg_status route_keys_pruner::prune_once(pg_connection& conn, const route_keys_pruning& options, uint64_t& deleted) {
  deleted = 0;
  const std::string sql = prune_sql(options.schema);
  const std::string retention = std::to_string(options.retention_s), batch = std::to_string(options.batch);
  const char* params[2] = {retention.c_str(), batch.c_str()};
  pg_result res;
  pg_status st = conn.query_params(sql.c_str(), 2, params, res);
  if (!st.ok) return st;
  const char* n = PQcmdTuples(res.get());  // "DELETE n": the digits of n
  if (n != nullptr) (void)std::from_chars(n, n + std::strlen(n), deleted);
  stages::route::route_probe::instance().keys_pruned.fetch_add(deleted, std::memory_order_relaxed);
  return {};
}

void route_keys_pruner::run() {
  pg_connection conn;
  std::string last_error;  // logged once until it changes or pruning works again
  auto report = [&](const std::string& what) {
    stages::route::route_probe::instance().keys_prune_errors.fetch_add(1, std::memory_order_relaxed);
    if (what != last_error) spdlog::warn("pruning evpipe_route_keys: {} (retrying)", what);
    last_error = what;
  };
  for (;;) {
    uint32_t wait_ms = options_.interval_ms;
    // Without routes there are no keys to prune (and maybe no keys table):
    // look again after the interval, as a reload may have added routes.
    const auto routes = stages::route::active_routes();
    if (routes == nullptr || routes->empty()) {
      conn.close();
      last_error.clear();
      if (!pause(wait_ms)) return;
      continue;
    }
    if (!conn.connected()) {
      pg_status st = conn.connect(options_.dsn, "evpipe-route-keys-pruner");
      // A round holds its locks briefly or not at all.
      if (st.ok) st = conn.exec("SET statement_timeout = '5s'; SET lock_timeout = '1s'");
      if (!st.ok) {
        conn.close();
        report(st.message);
      } else if (!has_created_at_index(conn, options_.schema)) {
        // Without it each round would sort the whole table: wait for migrate.
        conn.close();
        report("index evpipe_route_keys_created_at is missing: run `evpipe migrate --config FILE`");
      }
    }
    if (conn.connected()) {
      uint64_t deleted = 0;
      pg_status st = prune_once(conn, options_, deleted);
      if (!st.ok) {
        if (st.connection_lost) conn.close();
        report(st.sqlstate.empty() ? st.message : st.sqlstate + " " + st.message);
      } else {
        last_error.clear();
        // A full batch: more may be waiting, after a short pause for writers.
        if (deleted == options_.batch) wait_ms = between_batches_ms;
      }
    }
    if (!pause(wait_ms)) return;
  }
}

}  // namespace evpipe::io
