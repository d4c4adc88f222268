#include <toml++/toml.h>

#include <sstream>

#include "config/config.h"
#include "config/route_sections.h"
#include "config/source_sections.h"

namespace evpipe::config {

namespace {

// Doubles every `$` in the string values below `node` ($$ reads back as $).
void escape_dollars(toml::node& node) {
  if (auto* t = node.as_table()) {
    for (auto&& [k, v] : *t) escape_dollars(v);
  } else if (auto* a = node.as_array()) {
    for (auto& v : *a) escape_dollars(v);
  } else if (auto* str = node.as_string()) {
    std::string out;
    for (char c : str->get()) {
      out.push_back(c);
      if (c == '$') out.push_back('$');
    }
    str->get() = std::move(out);
  }
}


// A source's tenant keys, only those set (a source without tenancy prints as before).
void tenancy_to_toml(const source_tenancy& t, toml::table& out) {
  if (!t.tenant.empty()) out.insert("tenant", t.tenant);
  if (!t.tenant_topic.empty()) out.insert("tenant_topic", t.tenant_topic);
  if (!t.tenant_property.empty()) out.insert("tenant_property", t.tenant_property);
  if (!t.tokens_file.empty()) out.insert("tokens_file", t.tokens_file);
  if (!t.allowed_tenants.empty()) {
    toml::array a;
    for (const auto& x : t.allowed_tenants) a.push_back(x);
    out.insert("allowed_tenants", std::move(a));
  }
}
}  // namespace

std::string to_toml(const settings& s) {
  toml::table root;
  root.insert("pipeline", toml::table{{"shards", int64_t(s.effective_shards())},
                                      {"queue_capacity", int64_t(s.pipeline.queue_capacity)},
                                      {"io_threads", int64_t(s.pipeline.io_threads)},
                                      {"shutdown_timeout_ms", int64_t(s.pipeline.shutdown_timeout_ms)},
                                      {"slow_batch_ms", int64_t(s.pipeline.slow_batch_ms)}});
  root.insert("batch", toml::table{{"max_rows", int64_t(s.batch.max_rows)},
                                   {"max_bytes", int64_t(s.batch.max_bytes)},
                                   {"linger_ms", int64_t(s.batch.linger_ms)}});
  root.insert("dedup", toml::table{{"window_keys", int64_t(s.dedup.window_keys)}});
  root.insert("storage", toml::table{{"partition", s.storage.partition},
                                     {"retention", s.storage.retention},
                                     {"premake", int64_t(s.storage.premake)},
                                     {"check_interval_s", int64_t(s.storage.check_interval_s)},
                                     {"lock_timeout_ms", int64_t(s.storage.lock_timeout_ms)}});
  root.insert("route_keys", toml::table{{"retention_s", int64_t(s.route_keys.retention_s)},
                                        {"prune_batch", int64_t(s.route_keys.prune_batch)},
                                        {"prune_interval_ms", int64_t(s.route_keys.prune_interval_ms)}});
  root.insert("events", toml::table{{"max_event_bytes", int64_t(s.events.max_event_bytes)},
                                    {"max_key_bytes", int64_t(s.events.max_key_bytes)},
                                    {"max_depth", int64_t(s.events.max_depth)}});
  root.insert("postgres", toml::table{{"dsn", mask_dsn(s.postgres.dsn)},
                                      {"retry_base_ms", int64_t(s.postgres.retry_base_ms)},
                                      {"retry_max_ms", int64_t(s.postgres.retry_max_ms)},
                                      {"max_attempts", int64_t(s.postgres.max_attempts)},
                                      {"schema", s.postgres.schema},
                                      {"startup", s.postgres.startup}});
  root.insert("http", toml::table{{"listen", s.http.listen},
                                  {"max_connections", int64_t(s.http.max_connections)},
                                  {"idle_timeout_s", int64_t(s.http.idle_timeout_s)}});
  root.insert("stream", toml::table{{"listen", s.stream.listen},
                                    {"max_clients", int64_t(s.stream.max_clients)},
                                    {"max_filters", int64_t(s.stream.max_filters)},
                                    {"max_client_buffer_bytes", int64_t(s.stream.max_client_buffer_bytes)},
                                    {"poll_ms", int64_t(s.stream.poll_ms)},
                                    {"wake_on_commit", s.stream.wake_on_commit},
                                    {"writer_threads", int64_t(s.stream.writer_threads)},
                                    {"max_fanout_writes_per_s", int64_t(s.stream.max_fanout_writes_per_s)},
                                    {"heartbeat_s", int64_t(s.stream.heartbeat_s)},
                                    {"bearer_token_file", s.stream.bearer_token_file}});
  if (!s.stream.tokens_file.empty()) root["stream"].as_table()->insert("tokens_file", s.stream.tokens_file);
  root.insert("schemas", toml::table{{"enabled", s.schemas.enabled},
                                     {"dir", s.schemas.dir},
                                     {"version_path", s.schemas.version_path},
                                     {"unknown_version", s.schemas.unknown_version}});
  {
    toml::table quotas;
    for (const auto& [tenant, q] : s.tenants.quotas) {
      quotas.insert(tenant, toml::table{{"events_per_s", int64_t(q.events_per_s)}, {"burst", int64_t(q.burst)}});
    }
    root.insert("tenants", toml::table{{"enabled", s.tenants.enabled},
                                       {"field", s.tenants.field},
                                       {"events_per_s", int64_t(s.tenants.quota.events_per_s)},
                                       {"burst", int64_t(s.tenants.quota.burst)},
                                       {"quotas", std::move(quotas)}});
  }
  root.insert("health", toml::table{{"max_commit_stall_ms", int64_t(s.health.max_commit_stall_ms)}});
  root.insert("metrics", toml::table{{"prefix", s.metrics.prefix},
                                     {"max_label_values", int64_t(s.metrics.max_label_values)},
                                     {"max_series", int64_t(s.metrics.max_series)}});
  root.insert("log", toml::table{{"level", s.log.level}, {"format", s.log.format}});
  toml::array tcp;
  for (const auto& src : s.tcp_sources) {
    tcp.push_back(toml::table{{"listen", src.listen.str()},
                              {"topic", src.topic},
                              {"max_unacked", int64_t(src.max_unacked)},
                              {"max_connections", int64_t(src.max_connections)},
                              {"idle_timeout_s", int64_t(src.idle_timeout_s)},
                              {"route_by", src.route_by},
                              {"selective_acks", src.selective_acks}});
    tenancy_to_toml(src.tenancy, *tcp.back().as_table());
  }
  toml::array mqtt;
  for (const auto& m : s.mqtt_sources) {
    toml::array topics;
    for (const auto& f : m.topics) topics.push_back(f);
    toml::table t{{"url", m.url},
                  {"client_id", m.client_id},
                  {"topics", std::move(topics)},
                  {"qos", int64_t(m.qos)},
                  {"keepalive_s", int64_t(m.keepalive_s)},
                  {"connections", int64_t(m.connections)},
                  {"shared_group", m.shared_group},
                  {"max_inflight", int64_t(m.max_inflight)},
                  {"base_ms", int64_t(m.base_ms)},
                  {"max_ms", int64_t(m.max_ms)},
                  {"jitter_pct", int64_t(m.jitter_pct)},
                  {"dlq_publish", m.dlq_publish},
                  {"dlq_prefix", m.dlq_prefix},
                  {"protocol", m.protocol}};
    if (m.protocol == "5") t.insert("session_expiry_s", int64_t(m.session_expiry_s));
    // The password's file is named, the password itself never.
    if (!m.username.empty()) t.insert("username", m.username);
    if (!m.password_file.empty()) t.insert("password_file", m.password_file);
    if (!m.ca_file.empty()) t.insert("ca_file", m.ca_file);
    if (!m.cert_file.empty()) t.insert("cert_file", m.cert_file);
    if (!m.key_file.empty()) t.insert("key_file", m.key_file);
    tenancy_to_toml(m.tenancy, t);
    mqtt.push_back(std::move(t));
  }
  toml::array http;
  for (const auto& h : s.http_sources) {
    toml::table t{{"listen", h.listen.str()},
                  {"topic", h.topic},
                  {"max_body_bytes", int64_t(h.max_body_bytes)},
                  {"max_header_bytes", int64_t(h.max_header_bytes)},
                  {"max_connections", int64_t(h.max_connections)},
                  {"idle_timeout_s", int64_t(h.idle_timeout_s)},
                  {"route_by", h.route_by}};
    if (!h.bearer_token_file.empty()) t.insert("bearer_token_file", h.bearer_token_file);
    if (!h.cors_allow_origins.empty()) {
      toml::array origins;
      for (const auto& o : h.cors_allow_origins) origins.push_back(o);
      t.insert("cors_allow_origins", std::move(origins));
    }
    tenancy_to_toml(h.tenancy, t);  // the tokens file is named, its tokens never
    http.push_back(std::move(t));
  }
  toml::table sources;
  if (!tcp.empty()) sources.insert("tcp", std::move(tcp));
  if (!mqtt.empty()) sources.insert("mqtt", std::move(mqtt));
  if (!http.empty()) sources.insert("http", std::move(http));
  toml::array nats;
  for (const auto& n : s.nats_sources) {
    toml::table t = detail::nats_to_toml(n);
    tenancy_to_toml(n.tenancy, t);
    nats.push_back(std::move(t));
  }
  if (!nats.empty()) sources.insert("nats", std::move(nats));
  if (!sources.empty()) root.insert("sources", std::move(sources));
  if (!s.routes.empty()) root.insert("routes", detail::routes_to_toml(s.routes));
  // The values are expanded: a `$` in one must read back as itself.
  escape_dollars(root);
  std::ostringstream out;
  out << root << "\n";
  return out.str();
}

}  // namespace evpipe::config
