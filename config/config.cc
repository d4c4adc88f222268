#include "config/config.h"

#include <toml++/toml.h>

#include <charconv>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

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
  static const std::regex name_re(R"(^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$)");
  static const std::regex v6_re(R"(^[0-9A-Fa-f:.]+(%[A-Za-z0-9]+)?$)");
  bool bracketed = !text.empty() && text.front() == '[';
  if (!(bracketed ? std::regex_match(ep.host, v6_re) && ep.host.find(':') != std::string::npos
                  : std::regex_match(ep.host, name_re))) {
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

std::string mask_dsn(const std::string& dsn) {
  // URI form: scheme://user:password@host...
  static const std::regex uri_pw(R"(^([a-z]+://[^:/@]*):([^@]*)@)");
  // key=value form: password=...
  static const std::regex kv_pw(R"((^|\s)password\s*=\s*('([^'\\]|\\.)*'|\S+))");
  std::string out = std::regex_replace(dsn, uri_pw, "$1:****@");
  return std::regex_replace(out, kv_pw, "$1password=****");
}

namespace {

// Reads keys of one table, checking types and bounds, and remembers which keys
// it knows so that the rest can be reported as unknown.
class table_reader {
 public:
  table_reader(const toml::table& t, std::string where, const std::string& origin)
      : t_(t), where_(std::move(where)), origin_(origin) {}

  template <typename U>
  void uint(const char* key, U& dst, uint64_t lo, uint64_t hi) {
    known_.insert(key);
    const toml::node* n = t_.get(key);
    if (!n) return;
    auto v = n->value<int64_t>();
    if (!n->is_integer() || !v) fail(key, "must be an integer");
    if (*v < 0 || static_cast<uint64_t>(*v) < lo || static_cast<uint64_t>(*v) > hi) {
      fail(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
                    std::to_string(*v));
    }
    dst = static_cast<U>(*v);
  }

  void str(const char* key, std::string& dst, bool allow_empty = true) {
    known_.insert(key);
    const toml::node* n = t_.get(key);
    if (!n) return;
    if (!n->is_string()) fail(key, "must be a string");
    dst = *n->value<std::string>();
    if (!allow_empty && dst.empty()) fail(key, "must not be empty");
  }

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    throw config_error(origin_ + ": " + where_ + " " + key + ": " + problem);
  }

  void reject_unknown() const {
    for (auto&& [k, v] : t_) {
      if (!known_.count(std::string(k.str()))) {
        throw config_error(origin_ + ": " + where_ + ": unknown key \"" + std::string(k.str()) + "\"");
      }
    }
  }

 private:
  const toml::table& t_;
  std::string where_;
  const std::string& origin_;
  std::set<std::string> known_;
};

const toml::table* section(const toml::table& root, const char* name, const std::string& origin) {
  const toml::node* n = root.get(name);
  if (!n) return nullptr;
  if (!n->is_table()) throw config_error(origin + ": [" + name + "] must be a table");
  return n->as_table();
}

settings parse(const toml::table& root, const std::string& origin) {
  settings s;
  static const std::set<std::string> sections = {"pipeline", "batch", "dedup", "events", "postgres",
                                                 "http", "metrics", "log", "sources"};
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
  if (auto* t = section(root, "events", origin)) {
    table_reader r(*t, "[events]", origin);
    r.uint("max_event_bytes", s.events.max_event_bytes, 64, 64u << 20);
    r.uint("max_key_bytes", s.events.max_key_bytes, 1, 2000);
    r.uint("max_depth", s.events.max_depth, 2, 1024);
    r.reject_unknown();
  }
  if (auto* t = section(root, "postgres", origin)) {
    table_reader r(*t, "[postgres]", origin);
    r.str("dsn", s.postgres.dsn, false);
    r.uint("retry_base_ms", s.postgres.retry_base_ms, 1, 60'000);
    r.uint("retry_max_ms", s.postgres.retry_max_ms, 1, 600'000);
    r.uint("max_attempts", s.postgres.max_attempts, 0, 1'000'000);
    r.reject_unknown();
    if (s.postgres.retry_max_ms < s.postgres.retry_base_ms) {
      r.fail("retry_max_ms", "must not be below retry_base_ms");
    }
  }
  if (auto* t = section(root, "http", origin)) {
    table_reader r(*t, "[http]", origin);
    r.str("listen", s.http.listen);
    r.reject_unknown();
    if (!s.http.listen.empty()) (void)parse_endpoint(s.http.listen, origin + ": [http] listen");
  }
  if (auto* t = section(root, "metrics", origin)) {
    table_reader r(*t, "[metrics]", origin);
    r.str("prefix", s.metrics.prefix, false);
    r.uint("max_label_values", s.metrics.max_label_values, 1, 100'000);
    r.reject_unknown();
    static const std::regex name_re("^[a-zA-Z_:][a-zA-Z0-9_:]*$");
    if (!std::regex_match(s.metrics.prefix, name_re)) {
      r.fail("prefix", "must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
    }
  }
  if (auto* t = section(root, "log", origin)) {
    table_reader r(*t, "[log]", origin);
    r.str("level", s.log.level);
    r.reject_unknown();
    static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error", "off"};
    if (!levels.count(s.log.level)) r.fail("level", "must be one of trace, debug, info, warn, error, off");
  }
  if (auto* t = section(root, "sources", origin)) {
    for (auto&& [k, v] : *t) {
      if (k.str() != "tcp") {
        throw config_error(origin + ": [sources]: unknown source type \"" + std::string(k.str()) +
                           "\" (supported: tcp)");
      }
      if (!v.is_array() || (!v.as_array()->empty() && !v.is_array_of_tables())) {
        throw config_error(origin + ": sources.tcp must be written [[sources.tcp]]");
      }
      size_t i = 0;
      for (auto& item : *v.as_array()) {
        std::string where = "[[sources.tcp]] #" + std::to_string(++i);
        table_reader r(*item.as_table(), where, origin);
        tcp_source src;
        std::string listen;
        r.str("listen", listen, false);
        r.str("topic", src.topic, false);
        r.uint("max_unacked", src.max_unacked, 1, 1u << 24);
        r.uint("max_connections", src.max_connections, 1, 1'000'000);
        r.uint("idle_timeout_s", src.idle_timeout_s, 0, 86'400);
        r.reject_unknown();
        if (listen.empty()) r.fail("listen", "is required (\"host:port\")");
        src.listen = parse_endpoint(listen, origin + ": " + where + " listen");
        if (src.topic.size() > 255) r.fail("topic", "must be at most 255 bytes");
        s.tcp_sources.push_back(std::move(src));
      }
    }
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
  return parse(root, origin);
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
  return parse(root, path);
}

std::string to_toml(const settings& s) {
  toml::table root;
  root.insert("pipeline", toml::table{{"shards", int64_t(s.effective_shards())},
                                      {"queue_capacity", int64_t(s.pipeline.queue_capacity)},
                                      {"io_threads", int64_t(s.pipeline.io_threads)},
                                      {"shutdown_timeout_ms", int64_t(s.pipeline.shutdown_timeout_ms)}});
  root.insert("batch", toml::table{{"max_rows", int64_t(s.batch.max_rows)},
                                   {"max_bytes", int64_t(s.batch.max_bytes)},
                                   {"linger_ms", int64_t(s.batch.linger_ms)}});
  root.insert("dedup", toml::table{{"window_keys", int64_t(s.dedup.window_keys)}});
  root.insert("events", toml::table{{"max_event_bytes", int64_t(s.events.max_event_bytes)},
                                    {"max_key_bytes", int64_t(s.events.max_key_bytes)},
                                    {"max_depth", int64_t(s.events.max_depth)}});
  root.insert("postgres", toml::table{{"dsn", mask_dsn(s.postgres.dsn)},
                                      {"retry_base_ms", int64_t(s.postgres.retry_base_ms)},
                                      {"retry_max_ms", int64_t(s.postgres.retry_max_ms)},
                                      {"max_attempts", int64_t(s.postgres.max_attempts)}});
  root.insert("http", toml::table{{"listen", s.http.listen}});
  root.insert("metrics", toml::table{{"prefix", s.metrics.prefix},
                                     {"max_label_values", int64_t(s.metrics.max_label_values)}});
  root.insert("log", toml::table{{"level", s.log.level}});
  toml::array tcp;
  for (const auto& src : s.tcp_sources) {
    tcp.push_back(toml::table{{"listen", src.listen.str()},
                              {"topic", src.topic},
                              {"max_unacked", int64_t(src.max_unacked)},
                              {"max_connections", int64_t(src.max_connections)},
                              {"idle_timeout_s", int64_t(src.idle_timeout_s)}});
  }
  if (!tcp.empty()) root.insert("sources", toml::table{{"tcp", std::move(tcp)}});
  std::ostringstream out;
  out << root << "\n";
  return out.str();
}

}  // namespace evpipe::config
