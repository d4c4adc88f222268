#pragma once
// Tenants on an HTTP source (docs/tenants.md): with a tokens_file, a request
// is admitted when its bearer token is one of the file's, and its tenant is
// that token's; a tenant over its quota gets 429 with Retry-After (its
// events are not read), other tenants' requests go on.
//
// The binding is the source's binding_slot's, taken afresh by each admit()
// (a reload may swap it in place, docs/tenants.md); one request is checked
// against one binding throughout.
//
// Owned by one HTTP connection; not thread-safe.

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "config/config.h"
#include "stages/tenant/binding.h"
#include "stages/tenant/quota.h"

namespace evpipe::io {

class http_tenancy {
 public:
  explicit http_tenancy(std::shared_ptr<const stages::tenant::binding_slot> slot)
      : slot_(std::move(slot)), binding_(slot_->load()) {}

  // The binding the last admit() took, for the intake of that request (null:
  // tenancy off).
  [[nodiscard]] const std::shared_ptr<const stages::tenant::binding>& binding() const noexcept { return binding_; }

  // Whether a request with this Authorization header may go on: nullopt,
  // with credential() its token's tenant; else the status (401, 429) and why.
  [[nodiscard]] std::optional<std::pair<int, std::string>> admit(std::string_view authorization, int64_t now_ns) {
    credential_.clear();
    binding_ = slot_->load();
    if (!binding_) return std::nullopt;
    if (binding_->uses_tokens()) {
      constexpr std::string_view scheme = "Bearer ";
      const std::string* tenant = nullptr;
      if (authorization.size() > scheme.size() && equals_ascii_nocase(authorization.substr(0, scheme.size()), scheme)) {
        tenant = binding_->tenant_of_token(authorization.substr(scheme.size()));
      }
      if (!tenant) return std::pair{401, std::string("a valid bearer token is required")};
      credential_ = *tenant;
    }
    std::string_view tenant = !binding_->fixed().empty() ? std::string_view(binding_->fixed()) : credential_;
    if (auto* book = stages::tenant::active_quotas(); book && !tenant.empty()) {
      if (auto* bucket = book->find(tenant)) {
        if (int64_t over = stages::tenant::quota_book::over_ns(*bucket, now_ns); over > 0) {
          retry_after_s_ = static_cast<uint32_t>(std::ceil(double(over) / 1e9));
          refused_tenant_.assign(tenant);
          return std::pair{429, "tenant " + std::string(tenant) + " is over its quota; retry after " +
                                    std::to_string(retry_after_s_) + " s"};
        }
      }
    }
    return std::nullopt;
  }
  // The tenant of the request admit() let through last ("" = none by token).
  [[nodiscard]] std::string_view credential() const noexcept { return credential_; }
  // A 429 decided after the body was read (tenants from claims): Retry-After
  // for `over_ns`.
  void refused_for(int64_t over_ns) noexcept {
    retry_after_s_ = static_cast<uint32_t>(std::ceil(double(over_ns) / 1e9));
  }
  // The tenant of the last 429.
  [[nodiscard]] std::string_view refused_tenant() const noexcept { return refused_tenant_; }
  // Retry-After of the last 429, in whole seconds (at least 1).
  [[nodiscard]] uint32_t retry_after_s() const noexcept { return retry_after_s_ ? retry_after_s_ : 1; }

 private:
  static bool equals_ascii_nocase(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      char x = a[i], y = b[i];
      if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
      if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
      if (x != y) return false;
    }
    return true;
  }

  std::shared_ptr<const stages::tenant::binding_slot> slot_;
  std::shared_ptr<const stages::tenant::binding> binding_;
  std::string credential_;
  std::string refused_tenant_;
  uint32_t retry_after_s_ = 1;
};

}  // namespace evpipe::io
