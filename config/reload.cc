#include "config/reload.h"

namespace evpipe::config {

namespace {

// Copies the parts a reload applies live from `from` into `to`.
void copy_live_parts(const settings& from, settings& to) {
  to.batch = from.batch;
  to.events = from.events;
  to.pipeline.queue_capacity = from.pipeline.queue_capacity;
  to.log = from.log;
  to.tcp_sources = from.tcp_sources;
  to.mqtt_sources = from.mqtt_sources;
  to.http_sources = from.http_sources;
  to.schemas = from.schemas;  // app/reload.cc loads the schema files again on every reload
  to.routes = from.routes;    // app/reload.cc keeps the running ones when the new ones fail their checks
  to.tenants.quota = from.tenants.quota;  // app/reload.cc publishes a new quota book
  to.tenants.quotas = from.tenants.quotas;
}

}  // namespace

reload_plan plan_reload(const settings& running, const settings& next) {
  reload_plan p;
  p.tcp = diff_sources(running.tcp_sources, next.tcp_sources);
  p.mqtt = diff_sources(running.mqtt_sources, next.mqtt_sources);
  p.http = diff_sources(running.http_sources, next.http_sources);
  p.batch = running.batch.max_rows != next.batch.max_rows || running.batch.max_bytes != next.batch.max_bytes ||
            running.batch.linger_ms != next.batch.linger_ms;
  p.queue = running.pipeline.queue_capacity != next.pipeline.queue_capacity;
  p.log = running.log.level != next.log.level || running.log.format != next.log.format;
  p.events = running.events.max_event_bytes != next.events.max_event_bytes ||
             running.events.max_key_bytes != next.events.max_key_bytes ||
             running.events.max_depth != next.events.max_depth;
  p.routes = running.routes != next.routes;
  p.tenant_quotas = running.tenants.quota != next.tenants.quota || running.tenants.quotas != next.tenants.quotas;

  // The settings that need a restart, by name.
  auto differs = [&p](bool changed, const char* key) {
    if (changed) p.kept.emplace_back(key);
  };
  const auto &a = running, &b = next;
  differs(a.effective_shards() != b.effective_shards(), "[pipeline] shards");
  differs(a.pipeline.io_threads != b.pipeline.io_threads, "[pipeline] io_threads");
  differs(a.pipeline.shutdown_timeout_ms != b.pipeline.shutdown_timeout_ms, "[pipeline] shutdown_timeout_ms");
  differs(a.pipeline.slow_batch_ms != b.pipeline.slow_batch_ms, "[pipeline] slow_batch_ms");
  differs(a.dedup.window_keys != b.dedup.window_keys, "[dedup] window_keys");
  differs(a.route_keys.retention_s != b.route_keys.retention_s || a.route_keys.prune_batch != b.route_keys.prune_batch ||
              a.route_keys.prune_interval_ms != b.route_keys.prune_interval_ms,
          "[route_keys]");
  differs(a.storage.partition != b.storage.partition || a.storage.retention_s != b.storage.retention_s ||
              a.storage.premake != b.storage.premake || a.storage.check_interval_s != b.storage.check_interval_s ||
              a.storage.lock_timeout_ms != b.storage.lock_timeout_ms,
          "[storage]");
  differs(a.postgres.dsn != b.postgres.dsn, "[postgres] dsn");
  differs(a.postgres.schema != b.postgres.schema, "[postgres] schema");
  differs(a.postgres.retry_base_ms != b.postgres.retry_base_ms || a.postgres.retry_max_ms != b.postgres.retry_max_ms ||
              a.postgres.max_attempts != b.postgres.max_attempts,
          "[postgres] retry_base_ms/retry_max_ms/max_attempts");
  differs(a.postgres.startup != b.postgres.startup, "[postgres] startup");
  differs(a.http.listen != b.http.listen || a.http.max_connections != b.http.max_connections ||
              a.http.idle_timeout_s != b.http.idle_timeout_s,
          "[http]");
  differs(a.health.max_commit_stall_ms != b.health.max_commit_stall_ms, "[health] max_commit_stall_ms");
  differs(a.metrics.prefix != b.metrics.prefix || a.metrics.max_label_values != b.metrics.max_label_values ||
              a.metrics.max_series != b.metrics.max_series,
          "[metrics]");
  // Sources bind to these at start (docs/tenants.md); the quotas apply live.
  differs(a.tenants.enabled != b.tenants.enabled || a.tenants.field != b.tenants.field, "[tenants] enabled/field");
  differs(a.nats_sources != b.nats_sources, "[[sources.nats]]");  // its consumers are set up at start
  // Settings this function does not name (sections added later) that differ
  // are kept too, and reported.
  settings probe = next;
  copy_live_parts(running, probe);
  probe.pipeline = running.pipeline;
  probe.dedup = running.dedup;
  probe.route_keys = running.route_keys;
  probe.events = running.events;
  probe.postgres = running.postgres;
  probe.http = running.http;
  probe.health = running.health;
  probe.metrics = running.metrics;
  probe.tenants = running.tenants;
  if (to_toml(probe) != to_toml(running)) p.kept.emplace_back("other settings");

  p.effective = running;
  copy_live_parts(next, p.effective);
  return p;
}

}  // namespace evpipe::config
