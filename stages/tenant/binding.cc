#include "stages/tenant/binding.h"

#include <simdjson.h>

#include "stages/tenant/quota.h"
#include "stages/topic_filter.h"

namespace evpipe::stages::tenant {

namespace {
// The `level`th '/'-separated level of `s`, or npos-marked empty when it has fewer.
bool level_of(std::string_view s, size_t level, std::string_view& out) {
  size_t start = 0;
  for (size_t i = 0; i < level; ++i) {
    size_t slash = s.find('/', start);
    if (slash == std::string_view::npos) return false;
    start = slash + 1;
  }
  size_t end = s.find('/', start);
  out = s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
  return true;
}
}  // namespace

binding::binding(const config::source_tenancy& cfg, std::string field)
    : fixed_(cfg.tenant), field_(std::move(field)), topic_filter_(cfg.tenant_topic),
      property_(cfg.tenant_property), tokens_(cfg.tokens) {
  for (const auto& a : cfg.allowed_tenants) allowed_.insert(a);
  if (!topic_filter_.empty()) {
    std::string_view level;
    for (size_t i = 0; level_of(topic_filter_, i, level); ++i) {
      if (level == "+") topic_level_ = i;
    }
  }
}

std::string_view binding::tenant_of_topic(std::string_view topic) const noexcept {
  if (topic_filter_.empty() || !topic_matches(topic_filter_, topic)) return {};
  std::string_view level;
  return level_of(topic, topic_level_, level) ? level : std::string_view{};
}

resolution resolve(const binding& b, std::string_view credential, std::string_view topic,
                   const simdjson::dom::element* doc) {
  resolution out;
  std::string_view known = !b.fixed().empty() ? std::string_view(b.fixed()) : credential;
  if (!b.property().empty() && !credential.empty() && !config::valid_tenant_name(credential)) {
    // Any string up to 64 KiB may come in a user property: never a tenant
    // of its own, and the log line shows only its start.
    out.why = reason::invalid_tenant;
    out.message = "user property \"" + b.property() + "\" holds \"" + std::string(credential.substr(0, 80)) +
                  (credential.size() > 80 ? "...\"" : "\"") +
                  ", which is not a tenant name (1 to 64 of A-Z a-z 0-9 . _ : -)";
    return out;
  }
  if (known.empty()) known = b.tenant_of_topic(topic);
  std::string_view claim;
  bool claimed = false;
  if (doc) {
    // The claim: the top-level field, else the payload's.
    simdjson::dom::element v;
    auto obj = doc->get_object();
    if (!obj.error()) {
      if (obj.value()[b.field()].get(v) == simdjson::SUCCESS) {
        claimed = true;
      } else if (simdjson::dom::element p; obj.value()["payload"].get(p) == simdjson::SUCCESS && p.is_object() &&
                                           p[b.field()].get(v) == simdjson::SUCCESS) {
        claimed = true;
      }
    }
    if (claimed) {
      if (v.get_string().get(claim) != simdjson::SUCCESS || !config::valid_tenant_name(claim)) {
        out.why = reason::invalid_tenant;
        out.message = b.field() + " is not a tenant name (a string of 1 to 64 of A-Z a-z 0-9 . _ : -)";
        out.tenant = known;
        return out;
      }
    }
  }
  if (!known.empty()) {
    out.tenant = known;
    if (claimed && claim != known) {
      out.why = reason::tenant_mismatch;
      out.message = "the event claims tenant \"" + std::string(claim) + "\" but its source's credentials are tenant \"" +
                    std::string(known) + "\"";
      return out;
    }
  } else {
    out.tenant = claim;
  }
  if (!b.allows(out.tenant)) {
    // Not attributed to the tenant it claims: that tenant never sees it.
    out.tenant = known;
    out.why = reason::tenant_mismatch;
    out.message = claim.empty() && known.empty()
                      ? std::string("the event names no tenant and its source allows only some")
                      : "tenant \"" + std::string(known.empty() ? claim : known) +
                            "\" is not among its source's allowed_tenants";
  }
  return out;
}

namespace {
config::tenants_section published_tenants;
}  // namespace

void publish_tenants(const config::tenants_section& cfg) {
  published_tenants = cfg;
  publish_quota_book(cfg.enabled ? std::make_shared<quota_book>(cfg) : nullptr);
}

std::shared_ptr<const binding> make_binding(const config::source_tenancy& cfg) {
  if (!published_tenants.enabled) return nullptr;
  return std::make_shared<const binding>(cfg, published_tenants.field);
}

}  // namespace evpipe::stages::tenant
