#include "config/source_sections.h"

#include "config/reader.h"

namespace evpipe::config::detail {

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
  r.str("protocol", m.protocol, false);
  r.uint("session_expiry_s", m.session_expiry_s, 0, 4294967295u);
  parse_source_tenancy(r, m.tenancy, "mqtt", base_dir);
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
  if (m.protocol != "3.1.1" && m.protocol != "5") r.fail("protocol", "must be \"3.1.1\" or \"5\", got \"" + m.protocol + "\"");
  if (m.protocol == "3.1.1" && !m.tenancy.tenant_property.empty()) {
    r.fail("tenant_property", "needs protocol = \"5\" (MQTT 3.1.1 messages have no user properties)");
  }
  if (m.protocol == "3.1.1" && m.session_expiry_s != 4294967295u) {
    r.fail("session_expiry_s", "needs protocol = \"5\" (an MQTT 3.1.1 persistent session does not expire)");
  }
  if (m.protocol == "5" && m.session_expiry_s == 0) {
    r.fail("session_expiry_s", "0 ends the session with each connection: the broker would keep nothing for evpipe "
                               "while it is away (and redeliver nothing it never acknowledged)");
  }
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
  parse_route_by(r, h.route_by);
  parse_source_tenancy(r, h.tenancy, "http", base_dir);
  r.reject_unknown();
  if (!h.tenancy.tokens_file.empty() && !h.bearer_token_file.empty()) {
    r.fail("tokens_file", "and bearer_token_file exclude each other (tokens_file binds each token to a tenant)");
  }
  if (listen.empty()) r.fail("listen", "is required (\"host:port\")");
  h.listen = parse_listen(listen, origin + ": " + where + " listen");
  if (utf8_chars(h.topic) > 255) r.fail("topic", "must be at most 255 characters (the topic column)");
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

}  // namespace evpipe::config::detail
