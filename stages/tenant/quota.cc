#include "stages/tenant/quota.h"

#include <algorithm>
#include <chrono>
#include <mutex>

namespace evpipe::stages::tenant {

namespace {
void configure(quota_book::bucket& b, const config::tenant_quota& q) {
  if (q.events_per_s == 0) return;
  b.interval_ns = 1'000'000'000LL / q.events_per_s;
  if (b.interval_ns == 0) b.interval_ns = 1;
  const int64_t burst = q.burst ? q.burst : q.events_per_s;
  b.burst_ns = burst * b.interval_ns;
}

std::shared_ptr<quota_book> published;
std::atomic<quota_book*> active{nullptr};
}  // namespace

quota_book::quota_book(const config::tenants_section& cfg, quota_book* previous) : default_(cfg.quota) {
  for (const auto& [tenant, q] : cfg.quotas) configure(buckets_[tenant], q);
  configure(overflow_, default_);
  if (!previous) return;
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch()).count();
  std::shared_lock lock(previous->mu_);
  for (const auto& [tenant, old] : previous->buckets_) {
    const int64_t ahead = old.tat.load(std::memory_order_relaxed) - now;
    if (old.interval_ns == 0 || ahead <= 0) continue;
    auto [it, added] = buckets_.try_emplace(tenant);
    if (added) configure(it->second, default_);
    if (it->second.interval_ns == 0) continue;
    const int64_t events = ahead / old.interval_ns;
    it->second.tat.store(now + events * it->second.interval_ns, std::memory_order_relaxed);
  }
}

quota_book::bucket* quota_book::find(std::string_view tenant) {
  {
    std::shared_lock lock(mu_);
    auto it = buckets_.find(absl::string_view(tenant.data(), tenant.size()));
    if (it != buckets_.end()) return it->second.interval_ns ? &it->second : nullptr;
    if (default_.events_per_s == 0) return nullptr;
    if (buckets_.size() >= max_tenants) return &overflow_;
  }
  std::unique_lock lock(mu_);
  auto [it, added] = buckets_.try_emplace(std::string(tenant));
  if (added) configure(it->second, default_);
  return it->second.interval_ns ? &it->second : nullptr;
}

int64_t quota_book::charge(bucket& b, uint32_t n, int64_t now_ns) noexcept {
  int64_t tat = b.tat.load(std::memory_order_relaxed);
  int64_t next;
  do {
    next = std::max(tat, now_ns) + int64_t(n) * b.interval_ns;
  } while (!b.tat.compare_exchange_weak(tat, next, std::memory_order_relaxed));
  return std::max<int64_t>(0, next - now_ns - b.burst_ns);
}

void quota_book::refund(bucket& b, uint32_t n) noexcept {
  // Other connections' charges since are kept: subtraction commutes with them.
  // An arrival time that falls behind now is harmless (charge takes the max).
  b.tat.fetch_sub(int64_t(n) * b.interval_ns, std::memory_order_relaxed);
}

int64_t quota_book::over_ns(const bucket& b, int64_t now_ns) noexcept {
  return std::max<int64_t>(0, b.tat.load(std::memory_order_relaxed) - now_ns - b.burst_ns);
}

void publish_quota_book(std::shared_ptr<quota_book> book) {
  // The previous book stays alive with the process: connections may hold its buckets.
  static std::vector<std::shared_ptr<quota_book>> kept;
  active.store(book.get(), std::memory_order_release);
  if (book) kept.push_back(std::move(book));
}

quota_book* active_quotas() noexcept { return active.load(std::memory_order_acquire); }

}  // namespace evpipe::stages::tenant
