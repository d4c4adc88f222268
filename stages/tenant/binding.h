#pragma once
// Tenants (docs/tenants.md): which tenant an event belongs to. A source's
// binding says what the source knows from its credentials (a fixed tenant
// per TCP listener or MQTT connection, a tenant per HTTP bearer token, the
// '+' level of an MQTT topic) and which tenants it allows; resolve() decides
// each event's tenant from that and the event's own claim (`tenant_id` at
// the top level, else in `payload`).
//
// A binding is built once per source start (or reload) from its config and
// shared, immutable, by the source's connections: thread-safe. A reload that
// changes only an HTTP source's tenancy (its tokens file's contents, tenant,
// allowed_tenants) publishes a new binding in the source's binding_slot.

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <absl/container/flat_hash_set.h>

#include "config/config.h"
#include "stages/event.h"
#include "stages/tenant/token_table.h"

namespace simdjson::dom {
class element;
}

namespace evpipe::stages::tenant {

class binding {
 public:
  // `field`: [tenants] field, the name of the event's claim.
  binding(const config::source_tenancy& cfg, std::string field);

  // The tenant a bearer token is bound to; nullptr for an unknown token.
  // Constant-time in the secrets (token_table).
  [[nodiscard]] const std::string* tenant_of_token(std::string_view token) const { return tokens_.find(token); }
  [[nodiscard]] bool uses_tokens() const noexcept { return !tokens_.empty(); }
  // The tenant a topic names through tenant_topic; empty when the topic
  // does not match it (or there is none).
  [[nodiscard]] std::string_view tenant_of_topic(std::string_view topic) const noexcept;
  [[nodiscard]] const std::string& fixed() const noexcept { return fixed_; }
  // tenant_property (MQTT 5): the user property whose first value the
  // source passes as the credential; "" = none.
  [[nodiscard]] const std::string& property() const noexcept { return property_; }
  [[nodiscard]] const std::string& field() const noexcept { return field_; }
  [[nodiscard]] bool allows(std::string_view tenant) const noexcept {
    return allowed_.empty() || allowed_.contains(absl::string_view(tenant.data(), tenant.size()));
  }

 private:
  std::string fixed_;
  std::string field_;
  std::string topic_filter_;  // tenant_topic, "" = none
  std::string property_;      // tenant_property, "" = none
  size_t topic_level_ = 0;    // which level of it is '+'
  token_table tokens_;
  absl::flat_hash_set<std::string> allowed_;
};

// A source's current binding, swapped whole on SIGHUP (docs/tenants.md): a
// connection takes a snapshot with load() when a request comes and checks the
// whole request against it, so a request sees the old set or the new one,
// never a mix. Held by the source and its connections (shared_ptr);
// thread-safe.
class binding_slot {
 public:
  explicit binding_slot(std::shared_ptr<const binding> b) : current_(std::move(b)) {}
  [[nodiscard]] std::shared_ptr<const binding> load() const noexcept {
    return current_.load(std::memory_order_acquire);
  }
  void store(std::shared_ptr<const binding> b) noexcept { current_.store(std::move(b), std::memory_order_release); }

 private:
  std::atomic<std::shared_ptr<const binding>> current_;
};

// What resolve() found: the tenant (a view into the credential, the topic or
// the parsed document, valid as long as they are), or why the event is
// dead-lettered.
struct resolution {
  reason why = reason::none;
  std::string_view tenant;
  std::string message;  // when why != none
  [[nodiscard]] bool ok() const noexcept { return why == reason::none; }
};

// The event's tenant. `credential`: the tenant its connection authenticated
// as (the HTTP token's), else empty; `topic`: the event's transport topic;
// `doc`: the parsed event, or nullptr when it did not parse as an envelope
// (then only the credentials count). Order: the credential tenant (fixed,
// token, topic) wins and a claim of another tenant is tenant_mismatch; with
// no credential tenant the claim is the tenant; then the source's
// allowed_tenants, if any, must hold it. With tenant_property the credential
// is a user property's value, which the publisher chose freely: one that is
// not a tenant name is invalid_tenant (dead-lettered with no tenant).
[[nodiscard]] resolution resolve(const binding& b, std::string_view credential, std::string_view topic,
                                 const simdjson::dom::element* doc);

// [tenants], process-wide: `evpipe run` publishes it once at start, before
// any source starts (sources read it when they start); it also sets up the
// quota book (stages/tenant/quota.h).
void publish_tenants(const config::tenants_section& cfg);
// A source's binding, or nullptr when tenancy is off (the published
// [tenants] enabled is false).
[[nodiscard]] std::shared_ptr<const binding> make_binding(const config::source_tenancy& cfg);

}  // namespace evpipe::stages::tenant
