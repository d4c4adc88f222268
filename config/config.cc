#include "config/config.h"
#include "config/reader.h"
#include "config/source_sections.h"
#include "config/route_sections.h"

#include <arpa/inet.h>
#include <re2/re2.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <unistd.h>

namespace evpipe::config {

std::string endpoint::str() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

uint32_t settings::effective_shards() const {
  if (pipeline.shards != 0) return pipeline.shards;
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

endpoint parse_endpoint(std::string_view text, const std::string& what) {
  endpoint ep;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      throw config_error(what + ": expected \"[address]:port\", got \"" + std::string(text) + "\"");
    }
    ep.host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
      throw config_error(what + ": expected \"host:port\", got \"" + std::string(text) + "\"");
    }
    ep.host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  // A host name or IPv4 address, or an IPv6 address in brackets.
  static const RE2 name_re(R"([A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?)", detail::byte_patterns());
  static const RE2 v6_re(R"([0-9A-Fa-f:.]+(%[A-Za-z0-9]+)?)", detail::byte_patterns());
  bool bracketed = !text.empty() && text.front() == '[';
  if (!(bracketed ? RE2::FullMatch(ep.host, v6_re) && ep.host.find(':') != std::string::npos
                  : RE2::FullMatch(ep.host, name_re))) {
    throw config_error(what + ": \"" + ep.host + "\" is not a host name or IP address (IPv6 goes in brackets)");
  }
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || p != port_text.data() + port_text.size() || port > 65535) {
    throw config_error(what + ": port must be a number from 0 to 65535, got \"" + std::string(port_text) + "\"");
  }
  ep.port = static_cast<uint16_t>(port);
  return ep;
}

endpoint parse_listen(std::string_view text, const std::string& what) {
  endpoint ep = parse_endpoint(text, what);
  in6_addr v6{};
  in_addr v4{};
  std::string host = ep.host.substr(0, ep.host.find('%'));  // a zone id (fe80::1%eth0) is fine
  if (inet_pton(AF_INET, host.c_str(), &v4) != 1 && inet_pton(AF_INET6, host.c_str(), &v6) != 1) {
    // A name can stand for several addresses, and for other ones by the time
    // `run` starts: a listener takes an address, as the check promises.
    throw config_error(what + ": \"" + ep.host + "\" is not an IP address; listen on 127.0.0.1 or [::1] (loopback), " +
                       "0.0.0.0 or [::] (every interface), or one interface's address");
  }
  return ep;
}

std::string mask_dsn(const std::string& dsn) {
  // URI form: scheme://user:password@host...
  static const RE2 uri_pw(R"(^([a-z]+://[^:/@]*):([^@]*)@)", detail::byte_patterns());
  // key=value form: password=... (white space as libpq's isspace() has it)
  static const RE2 kv_pw(R"((^|[\t\n\v\f\r ])password[\t\n\v\f\r ]*=[\t\n\v\f\r ]*('([^'\\]|\\.)*'|[^\t\n\v\f\r ]+))",
                         detail::byte_patterns());
  // URI query parameter: ...?password=... or ...&password=...
  static const RE2 query_pw(R"(([?&])password=[^&]*)", detail::byte_patterns());
  std::string out = dsn;
  RE2::Replace(&out, uri_pw, R"(\1:****@)");
  if (out.find("://") != std::string::npos) {
    RE2::GlobalReplace(&out, query_pw, R"(\1password=****)");
  } else {
    RE2::GlobalReplace(&out, kv_pw, R"(\1password=****)");
  }
  return out;
}

namespace {

using namespace detail;

settings parse(const toml::table& root, const std::string& origin, const std::string& base_dir) {
  settings s;
  static const std::set<std::string> sections = {"pipeline", "batch", "dedup", "events", "postgres",
                                                 "http", "health", "metrics", "log", "sources", "routes",
                                                 "stream", "schemas", "tenants",
                                                 "route_keys", "storage"};
  for (auto&& [k, v] : root) {
    if (!sections.count(std::string(k.str()))) {
      throw config_error(origin + ": unknown section or key \"" + std::string(k.str()) + "\"");
    }
  }
  if (auto* t = section(root, "pipeline", origin)) {
    table_reader r(*t, "[pipeline]", origin);
    r.uint("shards", s.pipeline.shards, 0, 256);
    r.uint("queue_capacity", s.pipeline.queue_capacity, 64, 1u << 24);
    r.uint("io_threads", s.pipeline.io_threads, 1, 64);
    r.uint("shutdown_timeout_ms", s.pipeline.shutdown_timeout_ms, 0, 3'600'000);
    r.uint("slow_batch_ms", s.pipeline.slow_batch_ms, 0, 60'000);
    r.reject_unknown();
  }
  if (auto* t = section(root, "batch", origin)) {
    table_reader r(*t, "[batch]", origin);
    r.uint("max_rows", s.batch.max_rows, 1, 1'000'000);
    r.uint("max_bytes", s.batch.max_bytes, 1024, 1u << 30);
    r.uint("linger_ms", s.batch.linger_ms, 0, 60'000);
    r.reject_unknown();
  }
  if (auto* t = section(root, "dedup", origin)) {
    table_reader r(*t, "[dedup]", origin);
    r.uint("window_keys", s.dedup.window_keys, 1, 100'000'000);
    r.reject_unknown();
  }
  if (auto* t = section(root, "storage", origin)) s.storage = parse_storage(*t, origin);
  if (auto* t = section(root, "route_keys", origin)) {
    table_reader r(*t, "[route_keys]", origin);
    r.uint("retention_s", s.route_keys.retention_s, 0, 315'360'000);
    r.uint("prune_batch", s.route_keys.prune_batch, 1, 100'000);
    r.uint("prune_interval_ms", s.route_keys.prune_interval_ms, 10, 86'400'000);
    r.reject_unknown();
  }
  if (auto* t = section(root, "events", origin)) {
    table_reader r(*t, "[events]", origin);
    r.uint("max_event_bytes", s.events.max_event_bytes, 64, 64u << 20);
    r.uint("max_key_bytes", s.events.max_key_bytes, 1, 2000);
    r.uint("max_depth", s.events.max_depth, 2, 1024);
    r.reject_unknown();
  }
  if (auto* t = section(root, "postgres", origin)) {
    table_reader r(*t, "[postgres]", origin);
    r.str("dsn", s.postgres.dsn);  // "" leaves everything to libpq's defaults and PG* environment
    r.uint("retry_base_ms", s.postgres.retry_base_ms, 1, 60'000);
    r.uint("retry_max_ms", s.postgres.retry_max_ms, 1, 600'000);
    r.uint("max_attempts", s.postgres.max_attempts, 0, 1'000'000);
    r.str("schema", s.postgres.schema);
    r.str("startup", s.postgres.startup, false);
    r.reject_unknown();
    if (s.postgres.startup != "wait" && s.postgres.startup != "fail") r.fail("startup", "must be \"wait\" or \"fail\"");
    if (s.postgres.retry_max_ms < s.postgres.retry_base_ms) {
      r.fail("retry_max_ms", "must not be below retry_base_ms");
    }
    // An unquoted lowercase identifier: means the same in every statement, no quoting rules to explain.
    static const RE2 identifier("[a-z_][a-z0-9_]{0,62}", byte_patterns());
    if (!s.postgres.schema.empty() && !RE2::FullMatch(s.postgres.schema, identifier)) {
      r.fail("schema", "must be a lowercase identifier (a-z, 0-9, _)");
    }
  }
  if (auto* t = section(root, "http", origin)) {
    table_reader r(*t, "[http]", origin);
    r.str("listen", s.http.listen);
    r.uint("max_connections", s.http.max_connections, 1, 100'000);
    r.uint("idle_timeout_s", s.http.idle_timeout_s, 1, 3600);
    r.reject_unknown();
    if (!s.http.listen.empty()) (void)parse_listen(s.http.listen, origin + ": [http] listen");
  }
  if (auto* t = section(root, "stream", origin)) s.stream = parse_stream(*t, origin, base_dir);
  if (auto* t = section(root, "schemas", origin)) s.schemas = parse_schemas(*t, origin, base_dir);
  if (auto* t = section(root, "tenants", origin)) s.tenants = parse_tenants(*t, origin);
  if (auto* t = section(root, "health", origin)) {
    table_reader r(*t, "[health]", origin);
    r.uint("max_commit_stall_ms", s.health.max_commit_stall_ms, 1, 3'600'000);
    r.reject_unknown();
  }
  if (auto* t = section(root, "metrics", origin)) {
    table_reader r(*t, "[metrics]", origin);
    r.str("prefix", s.metrics.prefix, false);
    r.uint("max_label_values", s.metrics.max_label_values, 1, 100'000);
    r.uint("max_series", s.metrics.max_series, 1, 1'000'000);
    r.reject_unknown();
    static const RE2 name_re("[a-zA-Z_:][a-zA-Z0-9_:]*", byte_patterns());
    if (!RE2::FullMatch(s.metrics.prefix, name_re)) {
      r.fail("prefix", "must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
    }
  }
  if (auto* t = section(root, "log", origin)) {
    table_reader r(*t, "[log]", origin);
    r.str("level", s.log.level);
    r.str("format", s.log.format);
    r.reject_unknown();
    if (s.log.format != "text" && s.log.format != "json") r.fail("format", "must be text or json");
    static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error", "off"};
    if (!levels.count(s.log.level)) r.fail("level", "must be one of trace, debug, info, warn, error, off");
  }
  if (auto* t = section(root, "sources", origin)) {
    for (auto&& [k, v] : *t) {
      std::string type(k.str());
      if (type != "tcp" && type != "mqtt" && type != "http" && type != "nats") {
        throw config_error(origin + ": [sources]: unknown source type \"" + type + "\" (supported: tcp, mqtt, http, nats)");
      }
      if (!v.is_array() || (!v.as_array()->empty() && !v.is_array_of_tables())) {
        throw config_error(origin + ": sources." + type + " must be written [[sources." + type + "]]");
      }
      size_t i = 0;
      for (auto& item : *v.as_array()) {
        std::string where = "[[sources." + type + "]] #" + std::to_string(++i);
        if (type == "mqtt") {
          s.mqtt_sources.push_back(parse_mqtt(*item.as_table(), where, origin, base_dir));
          continue;
        }
        if (type == "http") {
          s.http_sources.push_back(parse_http(*item.as_table(), where, origin, base_dir));
          continue;
        }
        if (type == "nats") {
          s.nats_sources.push_back(parse_nats(*item.as_table(), where, origin, base_dir));
          continue;
        }
        table_reader r(*item.as_table(), where, origin);
        tcp_source src;
        std::string listen;
        r.str("listen", listen, false);
        r.str("topic", src.topic, false);
        r.uint("max_unacked", src.max_unacked, 1, 1u << 24);
        r.uint("max_connections", src.max_connections, 1, 1'000'000);
        r.uint("idle_timeout_s", src.idle_timeout_s, 0, 86'400);
        parse_route_by(r, src.route_by);
        r.boolean("selective_acks", src.selective_acks);
        parse_source_tenancy(r, src.tenancy, "tcp", base_dir);
        r.reject_unknown();
        if (listen.empty()) r.fail("listen", "is required (\"host:port\")");
        src.listen = parse_listen(listen, origin + ": " + where + " listen");
        if (utf8_chars(src.topic) > 255) r.fail("topic", "must be at most 255 characters (the topic column)");
        s.tcp_sources.push_back(std::move(src));
      }
    }
  }
  if (const toml::node* routes = root.get("routes")) s.routes = parse_routes(*routes, origin);
  for (const auto& r : s.routes) {
    // Its partitions are kept by the [storage] maintainer (docs/partitions.md).
    if (!r.partition_by.empty() && !s.storage.partitioned()) {
      throw config_error(origin + ": [[routes]] \"" + r.name +
                         "\" partition_by: needs [storage] partition = \"day\", \"week\" or \"month\"");
    }
  }
  if (!s.tenants.enabled) {
    // Tenant keys on a source without [tenants] enabled would be silently ignored.
    auto refuse = [&](const auto& list, const char* type) {
      for (size_t i = 0; i < list.size(); ++i) {
        if (list[i].tenancy.any()) {
          throw config_error(origin + ": [[sources." + type + "]] #" + std::to_string(i + 1) +
                             ": tenant keys need [tenants] enabled = true");
        }
      }
    };
    refuse(s.tcp_sources, "tcp");
    refuse(s.mqtt_sources, "mqtt");
    refuse(s.http_sources, "http");
  }
  return s;
}

}  // namespace

settings load_string(std::string_view text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    throw config_error(origin + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) +
                       ": " + std::string(e.description()));
  }
  return parse(root, origin, "");
}

settings load_file(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    std::string desc(e.description());
    if (where.line == 0) throw config_error(path + ": " + desc);
    throw config_error(path + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) + ": " + desc);
  }
  auto slash = path.rfind('/');
  std::string base_dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (base_dir.front() != '/') {
    // Absolute, so that it means the same after a chdir.
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd)) base_dir = std::string(cwd) + (base_dir == "." ? "" : "/" + base_dir);
  }
  return parse(root, path, base_dir);
}

std::vector<std::string> problems_for_run(const settings& s) {
  std::vector<std::string> out;
  if (s.tcp_sources.empty() && s.mqtt_sources.empty() && s.http_sources.empty() && s.nats_sources.empty()) {
    out.push_back("no sources configured: add a [[sources.tcp]], [[sources.mqtt]], [[sources.http]] or [[sources.nats]] section "
                  "(see config/evpipe.toml)");
  }
  size_t i = 0;
  for (const auto& m : s.mqtt_sources) {
    ++i;
    for (auto [key, file] : {std::pair{"ca_file", &m.ca_file}, {"cert_file", &m.cert_file}, {"key_file", &m.key_file}}) {
      if (!file->empty() && access(file->c_str(), R_OK) != 0) {
        out.push_back("[[sources.mqtt]] #" + std::to_string(i) + " " + key + ": cannot read \"" + *file + "\": " +
                      std::strerror(errno));
      }
    }
  }
  i = 0;
  for (const auto& n : s.nats_sources) {
    ++i;
    for (auto [key, file] : {std::pair{"ca_file", &n.ca_file}, {"cert_file", &n.cert_file}, {"key_file", &n.key_file},
                             {"creds_file", &n.creds_file}}) {
      if (!file->empty() && access(file->c_str(), R_OK) != 0) {
        out.push_back("[[sources.nats]] #" + std::to_string(i) + " " + key + ": cannot read \"" + *file + "\": " +
                      std::strerror(errno));
      }
    }
  }
  return out;
}


std::string default_mqtt_client_id() {
  // Two hosts on one broker must not share a session by accident (they would
  // take it from each other): the host name makes the default differ. Kept
  // to the characters every broker accepts in a client id.
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "evpipe";
  std::string id = "evpipe-";
  for (const char* c = host; *c != '\0' && id.size() < 64; ++c) {
    bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' ||
              *c == '_' || *c == '.';
    id.push_back(ok ? *c : '_');
  }
  return id;
}

}  // namespace evpipe::config
