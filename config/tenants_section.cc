#include "config/tenants_section.h"

#include <fstream>
#include <set>

#include "config/reader.h"

namespace evpipe::config {

bool valid_tenant_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 64) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != ':' && c != '-'))) return false;
  }
  return true;
}

namespace detail {

namespace {
void read_quota(table_reader& r, tenant_quota& q) {
  r.uint("events_per_s", q.events_per_s, 0, 100'000'000);
  r.uint("burst", q.burst, 0, 1'000'000'000);
}
}  // namespace

tenants_section parse_tenants(const toml::table& t, const std::string& origin) {
  table_reader r(t, "[tenants]", origin);
  tenants_section s;
  r.boolean("enabled", s.enabled);
  r.str("field", s.field, false);
  read_quota(r, s.quota);
  r.known("quotas");
  r.reject_unknown();
  if (s.field.find_first_of(". ") != std::string::npos) r.fail("field", "must be one field name (no dots or spaces)");
  if (const toml::node* q = t.get("quotas")) {
    if (!q->is_table()) r.fail("quotas", "must be a table of [tenants.quotas.<tenant>] sections");
    for (auto&& [name, v] : *q->as_table()) {
      std::string tenant(name.str());
      std::string where = "[tenants.quotas." + tenant + "]";
      if (!v.is_table()) throw config_error(origin + ": " + where + " must be a table");
      if (!valid_tenant_name(tenant)) throw config_error(origin + ": " + where + ": not a tenant name");
      table_reader qr(*v.as_table(), where, origin);
      tenant_quota quota;
      read_quota(qr, quota);
      qr.reject_unknown();
      s.quotas.emplace_back(tenant, quota);
    }
  }
  return s;
}

void read_tokens_file(table_reader& r, const char* key, std::string& path,
                      std::vector<std::pair<std::string, std::string>>& tokens, const std::string& base_dir) {
  path = resolve_path(path, base_dir);
  std::ifstream in(path);
  if (!in) r.fail(key, "cannot read \"" + path + "\"");
  std::set<std::string> seen;
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    auto gap = line.find_first_of(" \t", first);
    auto second = gap == std::string::npos ? gap : line.find_first_not_of(" \t", gap);
    auto end = second == std::string::npos ? second : line.find_first_of(" \t", second);
    std::string where = "\"" + path + "\" line " + std::to_string(n);
    if (second == std::string::npos || (end != std::string::npos && line.find_first_not_of(" \t", end) != std::string::npos)) {
      r.fail(key, where + ": expected \"<token> <tenant>\"");
    }
    std::string token = line.substr(first, gap - first);
    std::string tenant = line.substr(second, end == std::string::npos ? std::string::npos : end - second);
    if (!valid_tenant_name(tenant)) r.fail(key, where + ": \"" + tenant + "\" is not a tenant name");
    if (!seen.insert(token).second) r.fail(key, where + ": a token given twice");
    tokens.emplace_back(std::move(token), std::move(tenant));
  }
  if (tokens.empty()) r.fail(key, "\"" + path + "\" holds no token");
}

void parse_source_tenancy(table_reader& r, source_tenancy& t, std::string_view kind, const std::string& base_dir) {
  r.str("tenant", t.tenant);
  r.str_list("allowed_tenants", t.allowed_tenants);
  if (kind == "mqtt") r.str("tenant_topic", t.tenant_topic);
  if (kind == "mqtt") r.str("tenant_property", t.tenant_property);
  if (kind == "http") r.str("tokens_file", t.tokens_file);
  if (!t.tenant.empty() && !valid_tenant_name(t.tenant)) {
    r.fail("tenant", "\"" + t.tenant + "\" is not a tenant name (1 to 64 of A-Z a-z 0-9 . _ : -)");
  }
  for (const auto& a : t.allowed_tenants) {
    if (!valid_tenant_name(a)) r.fail("allowed_tenants", "\"" + a + "\" is not a tenant name");
  }
  if (!t.tenant_topic.empty()) {
    if (!valid_filter(t.tenant_topic)) r.fail("tenant_topic", "\"" + t.tenant_topic + "\" is not a topic filter");
    size_t plus = 0, level_start = 0;
    for (size_t i = 0; i <= t.tenant_topic.size(); ++i) {
      if (i == t.tenant_topic.size() || t.tenant_topic[i] == '/') {
        plus += std::string_view(t.tenant_topic).substr(level_start, i - level_start) == "+";
        level_start = i + 1;
      }
    }
    if (plus != 1) r.fail("tenant_topic", "needs exactly one '+' level, the tenant's (\"tenants/+/events/#\")");
    if (!t.tenant.empty()) r.fail("tenant_topic", "and tenant exclude each other");
  }
  if (!t.tenant_property.empty()) {
    // One source of credentials: with two, which wins would be a guess (a
    // fixed tenant, a topic level and a property could each name another).
    // MQTT 5 only: parse_mqtt checks the protocol.
    if (!t.tenant.empty()) r.fail("tenant_property", "and tenant exclude each other");
    if (!t.tenant_topic.empty()) r.fail("tenant_property", "and tenant_topic exclude each other");
  }
  if (!t.tokens_file.empty()) {
    read_tokens_file(r, "tokens_file", t.tokens_file, t.tokens, base_dir);
    if (!t.tenant.empty()) r.fail("tokens_file", "and tenant exclude each other");
  }
}

}  // namespace detail
}  // namespace evpipe::config
