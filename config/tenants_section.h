#pragma once
// [tenants] and the tenant keys of each source (docs/tenants.md). Part of
// config::settings; parsed by detail::parse_tenants() and
// detail::parse_source_tenancy() (config/reader.h, tenants_section.cc).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace evpipe::config {

// A token bucket: a tenant may send events_per_s on average and `burst` at
// once; past that its connections are paused and its HTTP requests get 429.
struct tenant_quota {
  uint32_t events_per_s = 0;  // 0: no limit
  uint32_t burst = 0;         // 0: one second's worth (events_per_s)
  bool operator==(const tenant_quota&) const = default;
};

struct tenants_section {
  bool enabled = false;             // off: no tenant anywhere, tenant_id columns stay ''
  std::string field = "tenant_id";  // the event's claim: this top-level field, else payload.<field>
  tenant_quota quota;               // every tenant's quota unless [tenants.quotas.<tenant>] gives its own
  std::vector<std::pair<std::string, tenant_quota>> quotas;  // [tenants.quotas.<tenant>]
  bool operator==(const tenants_section&) const = default;
};

// What one source knows of its events' tenant. Keys of [[sources.*]].
struct source_tenancy {
  std::string tenant;                        // every event's tenant (a TCP listener, an MQTT connection); "" = none
  std::vector<std::string> allowed_tenants;  // [] = any; else other tenants are dead-lettered as tenant_mismatch
  std::string tenant_topic;                  // MQTT: a filter whose one '+' level is the tenant ("tenants/+/events/#")
  std::string tenant_property;               // MQTT 5: the user property whose first value is the tenant
  std::string tokens_file;                   // HTTP: "<token> <tenant>" per line; a request needs one of the tokens
  std::vector<std::pair<std::string, std::string>> tokens;  // read from tokens_file at load; never printed
  [[nodiscard]] bool any() const noexcept {
    return !tenant.empty() || !allowed_tenants.empty() || !tenant_topic.empty() || !tenant_property.empty() ||
           !tokens_file.empty();
  }
  bool operator==(const source_tenancy&) const = default;
};

// A tenant name as configured or claimed: 1 to 64 of [A-Za-z0-9._:-], not
// starting with a punctuation mark.
[[nodiscard]] bool valid_tenant_name(std::string_view name) noexcept;

}  // namespace evpipe::config
