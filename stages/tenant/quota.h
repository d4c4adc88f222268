#pragma once
// Per-tenant quotas (docs/tenants.md): a rate (events_per_s) and a burst per
// tenant, kept as one atomic "theoretical arrival time" each (GCRA, the
// token bucket's equivalent with one word of state). Sources charge every
// event they take; what exceeds the quota is not dropped: the charge returns
// how long the tenant is over, and the source pauses that connection (TCP,
// MQTT) or answers its next request 429 with Retry-After (HTTP). Other
// tenants' buckets are untouched.
//
// One quota_book per process, published at start (publish_quota_book) and
// read by every source thread: thread-safe.

#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include <absl/container/node_hash_map.h>

#include "config/config.h"

namespace evpipe::stages::tenant {

class quota_book {
 public:
  struct bucket {
    int64_t interval_ns = 0;  // per event; 0: no limit
    int64_t burst_ns = 0;     // how far ahead of now the arrival time may run
    std::atomic<int64_t> tat{0};  // theoretical arrival time (steady ns)
  };

  // `previous`: the book a reload replaces, or null. Each tenant's events
  // ahead of now in it are carried over, priced at the new quota, so a
  // reload neither forgives a tenant that is over nor punishes one that is not.
  explicit quota_book(const config::tenants_section& cfg, quota_book* previous = nullptr);

  // The tenant's bucket (created with the default quota on first use);
  // nullptr when the tenant has no limit. Stable for the book's lifetime, so
  // a connection may keep it between events.
  [[nodiscard]] bucket* find(std::string_view tenant);

  // Charges `n` events at `now_ns`; returns how long (ns) the tenant is now
  // over its quota, 0 when within.
  static int64_t charge(bucket& b, uint32_t n, int64_t now_ns) noexcept;
  // Gives back `n` events charged by a request that was then refused (an
  // HTTP 429 after its body was read): the tenant pays only for what it sent
  // that was taken.
  static void refund(bucket& b, uint32_t n) noexcept;
  // How long (ns) the tenant is over its quota, without charging.
  [[nodiscard]] static int64_t over_ns(const bucket& b, int64_t now_ns) noexcept;

  // Distinct tenants tracked before further unknown ones share one bucket
  // (claims are free text: memory stays bounded).
  static constexpr size_t max_tenants = 100'000;

 private:
  config::tenant_quota default_;
  std::shared_mutex mu_;
  absl::node_hash_map<std::string, bucket> buckets_;  // node map: bucket addresses are stable
  bucket overflow_;
};

// The book sources charge: set at start by `evpipe run`; nullptr (no quotas)
// until then. Any thread.
void publish_quota_book(std::shared_ptr<quota_book> book);
[[nodiscard]] quota_book* active_quotas() noexcept;

}  // namespace evpipe::stages::tenant
