#include "config/config.h"

#include <arpa/inet.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
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
    dst = expand(key, *n->value<std::string>());
    if (!allow_empty && dst.empty()) fail(key, "must not be empty");
  }

  void boolean(const char* key, bool& dst) {
    known_.insert(key);
    const toml::node* n = t_.get(key);
    if (!n) return;
    if (!n->is_boolean()) fail(key, "must be true or false");
    dst = *n->value<bool>();
  }

  void str_list(const char* key, std::vector<std::string>& dst) {
    known_.insert(key);
    const toml::node* n = t_.get(key);
    if (!n) return;
    if (!n->is_array()) fail(key, "must be an array of strings");
    dst.clear();
    for (auto& item : *n->as_array()) {
      if (!item.is_string()) fail(key, "must be an array of strings");
      dst.push_back(expand(key, *item.value<std::string>()));
    }
  }

  // ${NAME} and ${NAME:-default} from the environment, $$ for a literal $;
  // any other $ stays as it is.
  [[nodiscard]] std::string expand(const char* key, const std::string& text) const {
    if (text.find('$') == std::string::npos) return text;
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] != '$' || i + 1 == text.size()) {
        out.push_back(text[i]);
        continue;
      }
      if (text[i + 1] == '$') {
        out.push_back('$');
        ++i;
        continue;
      }
      if (text[i + 1] != '{') {
        out.push_back('$');
        continue;
      }
      size_t close = text.find('}', i + 2);
      if (close == std::string::npos) fail(key, "\"${\" without a closing \"}\" (write $$ for a literal $)");
      std::string inner = text.substr(i + 2, close - i - 2);
      std::string name = inner, fallback;
      bool has_default = false;
      if (auto d = inner.find(":-"); d != std::string::npos) {
        name = inner.substr(0, d);
        fallback = inner.substr(d + 2);
        has_default = true;
      }
      static const std::regex var_re("^[A-Za-z_][A-Za-z0-9_]*$");
      if (!std::regex_match(name, var_re)) fail(key, "\"${" + inner + "}\" is not a valid variable reference");
      const char* v = std::getenv(name.c_str());
      if (v && *v) {
        out += v;
      } else if (has_default) {
        out += fallback;
      } else {
        fail(key, "environment variable " + name + " is not set (give a default with ${" + name + ":-value})");
      }
      i = close;
    }
    return out;
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

// The first line of a secret file (password, token), without its line break.
std::string read_secret(const std::string& path, table_reader& r, const char* key) {
  std::ifstream in(path);
  if (!in) r.fail(key, "cannot read \"" + path + "\"");
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) r.fail(key, "\"" + path + "\" is empty");
  return line;
}

// MQTT topic filter rules (MQTT 3.1.1 section 4.7): '+' and '#' only as whole
// levels, '#' only last, no U+0000.
bool valid_filter(std::string_view f) {
  if (f.empty() || f.size() > 65535 || f.find('\0') != std::string_view::npos) return false;
  size_t start = 0;
  for (;;) {
    size_t end = f.find('/', start);
    std::string_view level = f.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (level.find_first_of("+#") != std::string_view::npos && level.size() != 1) return false;
    if (level == "#" && end != std::string_view::npos) return false;
    if (end == std::string_view::npos) return true;
    start = end + 1;
  }
}

// Characters of UTF-8 text (config does not depend on stages/).
size_t stages_utf8_chars(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// A file named in the config: relative paths are taken from the config
// file's folder, so that a service started from / finds them.
std::string resolve_path(const std::string& path, const std::string& base_dir) {
  if (path.empty() || path.front() == '/' || base_dir.empty()) return path;
  return base_dir + "/" + path;
}

mqtt_source parse_mqtt(const toml::table& t, const std::string& where, const std::string& origin,
                       const std::string& base_dir) {
  table_reader r(t, where, origin);
  mqtt_source m;
  r.str("url", m.url, false);
  r.str("ca_file", m.ca_file);
  r.str("cert_file", m.cert_file);
  r.str("key_file", m.key_file);
  r.str("client_id", m.client_id, false);
  r.str("username", m.username);
  r.str("password_file", m.password_file);
  r.str_list("topics", m.topics);
  r.uint("qos", m.qos, 0, 2);
  r.uint("keepalive_s", m.keepalive_s, 1, 65535);
  r.uint("connections", m.connections, 1, 64);
  r.str("shared_group", m.shared_group);
  r.uint("max_inflight", m.max_inflight, 1, 1u << 20);
  r.uint("base_ms", m.base_ms, 1, 60'000);
  r.uint("max_ms", m.max_ms, 1, 600'000);
  r.uint("jitter_pct", m.jitter_pct, 0, 100);
  r.boolean("dlq_publish", m.dlq_publish);
  r.str("dlq_prefix", m.dlq_prefix, false);
  r.reject_unknown();
  for (auto* file : {&m.ca_file, &m.cert_file, &m.key_file, &m.password_file}) *file = resolve_path(*file, base_dir);

  if (m.url.empty()) r.fail("url", "is required (\"mqtt://host:port\" or \"mqtts://host:port\")");
  std::string_view rest;
  if (m.url.rfind("mqtt://", 0) == 0) {
    rest = std::string_view(m.url).substr(7);
  } else if (m.url.rfind("mqtts://", 0) == 0) {
    rest = std::string_view(m.url).substr(8);
    m.tls = true;
  } else {
    r.fail("url", "must start with mqtt:// or mqtts://, got \"" + m.url + "\"");
  }
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find(':') == std::string_view::npos || (rest.front() == '[' && rest.back() == ']')) {
    m.broker = parse_endpoint(std::string(rest) + (m.tls ? ":8883" : ":1883"), origin + ": " + where + " url");
  } else {
    m.broker = parse_endpoint(rest, origin + ": " + where + " url");
  }
  if (m.broker.port == 0) r.fail("url", "needs a port other than 0");
  if (!m.tls && (!m.ca_file.empty() || !m.cert_file.empty() || !m.key_file.empty())) {
    r.fail("ca_file", "ca_file, cert_file and key_file need an mqtts:// url");
  }
  if (m.cert_file.empty() != m.key_file.empty()) r.fail("cert_file", "cert_file and key_file go together");
  if (m.client_id.empty()) m.client_id = default_mqtt_client_id();
  if (m.client_id.size() > 200) r.fail("client_id", "must be at most 200 bytes");
  if (!m.password_file.empty()) {
    if (m.username.empty()) r.fail("password_file", "needs a username (MQTT 3.1.1 sends no password without one)");
    m.password = read_secret(m.password_file, r, "password_file");
  }
  if (m.topics.empty()) r.fail("topics", "is required: at least one topic filter, e.g. [\"tracker/events/#\"]");
  for (const auto& f : m.topics) {
    if (!valid_filter(f)) r.fail("topics", "\"" + f + "\" is not a valid MQTT topic filter");
    if (f.rfind("$share/", 0) == 0) r.fail("topics", "\"" + f + "\": use shared_group instead of $share/ filters");
  }
  if (!m.shared_group.empty() && m.shared_group.find_first_of("/+#") != std::string::npos) {
    r.fail("shared_group", "must not contain '/', '+' or '#'");
  }
  if (m.connections > 1 && m.shared_group.empty()) {
    r.fail("connections", "more than one connection needs shared_group, or every connection receives every message");
  }
  if (m.max_ms < m.base_ms) r.fail("max_ms", "must not be below base_ms");
  if (m.dlq_prefix.find_first_of("+#") != std::string::npos) r.fail("dlq_prefix", "must not contain '+' or '#'");
  return m;
}

http_source parse_http(const toml::table& t, const std::string& where, const std::string& origin,
                       const std::string& base_dir) {
  table_reader r(t, where, origin);
  http_source h;
  std::string listen;
  r.str("listen", listen, false);
  r.str("topic", h.topic, false);
  r.uint("max_body_bytes", h.max_body_bytes, 64, 1u << 30);
  r.uint("max_header_bytes", h.max_header_bytes, 1024, 1u << 20);
  r.str("bearer_token_file", h.bearer_token_file);
  r.uint("max_connections", h.max_connections, 1, 1'000'000);
  r.uint("idle_timeout_s", h.idle_timeout_s, 1, 86'400);
  r.str_list("cors_allow_origins", h.cors_allow_origins);
  r.reject_unknown();
  if (listen.empty()) r.fail("listen", "is required (\"host:port\")");
  h.listen = parse_listen(listen, origin + ": " + where + " listen");
  if (stages_utf8_chars(h.topic) > 255) r.fail("topic", "must be at most 255 characters (the topic column)");
  h.bearer_token_file = resolve_path(h.bearer_token_file, base_dir);
  if (!h.bearer_token_file.empty()) h.bearer_token = read_secret(h.bearer_token_file, r, "bearer_token_file");
  for (const auto& o : h.cors_allow_origins) {
    // An origin as browsers send it: scheme and host, an optional port, no path.
    std::string_view rest = o;
    bool scheme = rest.starts_with("http://") || rest.starts_with("https://");
    rest.remove_prefix(scheme ? rest.find("//") + 2 : 0);
    if (o != "*" && (!scheme || rest.empty() || rest.find_first_of("/?# ") != std::string_view::npos)) {
      r.fail("cors_allow_origins", "\"" + o + "\" is not an origin like \"https://app.example.com\" or \"*\"");
    }
  }
  return h;
}

settings parse(const toml::table& root, const std::string& origin, const std::string& base_dir) {
  settings s;
  static const std::set<std::string> sections = {"pipeline", "batch", "dedup", "events", "postgres",
                                                 "http", "health", "metrics", "log", "sources"};
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
    static const std::regex identifier("[a-z_][a-z0-9_]{0,62}");
    if (!s.postgres.schema.empty() && !std::regex_match(s.postgres.schema, identifier)) {
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
    static const std::regex name_re("^[a-zA-Z_:][a-zA-Z0-9_:]*$");
    if (!std::regex_match(s.metrics.prefix, name_re)) {
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
      if (type != "tcp" && type != "mqtt" && type != "http") {
        throw config_error(origin + ": [sources]: unknown source type \"" + type + "\" (supported: tcp, mqtt, http)");
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
        src.listen = parse_listen(listen, origin + ": " + where + " listen");
        if (stages_utf8_chars(src.topic) > 255) r.fail("topic", "must be at most 255 characters (the topic column)");
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
  if (s.tcp_sources.empty() && s.mqtt_sources.empty() && s.http_sources.empty()) {
    out.push_back("no sources configured: add a [[sources.tcp]], [[sources.mqtt]] or [[sources.http]] section "
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
  return out;
}

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

}  // namespace

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
                                      {"max_attempts", int64_t(s.postgres.max_attempts)},
                                      {"schema", s.postgres.schema},
                                      {"startup", s.postgres.startup}});
  root.insert("http", toml::table{{"listen", s.http.listen},
                                  {"max_connections", int64_t(s.http.max_connections)},
                                  {"idle_timeout_s", int64_t(s.http.idle_timeout_s)}});
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
                              {"idle_timeout_s", int64_t(src.idle_timeout_s)}});
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
                  {"dlq_prefix", m.dlq_prefix}};
    // The password's file is named, the password itself never.
    if (!m.username.empty()) t.insert("username", m.username);
    if (!m.password_file.empty()) t.insert("password_file", m.password_file);
    if (!m.ca_file.empty()) t.insert("ca_file", m.ca_file);
    if (!m.cert_file.empty()) t.insert("cert_file", m.cert_file);
    if (!m.key_file.empty()) t.insert("key_file", m.key_file);
    mqtt.push_back(std::move(t));
  }
  toml::array http;
  for (const auto& h : s.http_sources) {
    toml::table t{{"listen", h.listen.str()},
                  {"topic", h.topic},
                  {"max_body_bytes", int64_t(h.max_body_bytes)},
                  {"max_header_bytes", int64_t(h.max_header_bytes)},
                  {"max_connections", int64_t(h.max_connections)},
                  {"idle_timeout_s", int64_t(h.idle_timeout_s)}};
    if (!h.bearer_token_file.empty()) t.insert("bearer_token_file", h.bearer_token_file);
    if (!h.cors_allow_origins.empty()) {
      toml::array origins;
      for (const auto& o : h.cors_allow_origins) origins.push_back(o);
      t.insert("cors_allow_origins", std::move(origins));
    }
    http.push_back(std::move(t));
  }
  toml::table sources;
  if (!tcp.empty()) sources.insert("tcp", std::move(tcp));
  if (!mqtt.empty()) sources.insert("mqtt", std::move(mqtt));
  if (!http.empty()) sources.insert("http", std::move(http));
  if (!sources.empty()) root.insert("sources", std::move(sources));
  // The values are expanded: a `$` in one must read back as itself.
  escape_dollars(root);
  std::ostringstream out;
  out << root << "\n";
  return out.str();
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
