#pragma once
// Dedup stage: a bounded window of the idempotency keys a shard has seen most
// recently. It is the fast path; the unique index on events_mirror's key is
// the durable backstop (io/postgres_sink resolves what the window has
// forgotten, e.g. after a restart).
//
// Keys are held as their 128-bit XXH3 hash: 16 bytes a key whatever its length,
// no allocation per event. Two distinct keys collide with probability ~2^-128
// per pair, far below any hardware error rate.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include <absl/container/flat_hash_set.h>

namespace evpipe::stages {

struct key_hash {
  uint64_t lo = 0;
  uint64_t hi = 0;
  friend bool operator==(const key_hash&, const key_hash&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const key_hash& k) {
    // lo already picked the shard; hi is independent of it.
    return H::combine(std::move(h), k.hi);
  }
};

[[nodiscard]] key_hash hash_key(const void* data, size_t len) noexcept;
// Idempotency is scoped to the tenant (docs/tenants.md): a key's hash is
// seeded with its tenant's, so the same key from two tenants is two keys for
// the dedup window, the shards and dead-letter digests. The empty tenant
// (tenancy off) is seed 0: the hashes are those of hash_key().
[[nodiscard]] uint64_t tenant_hash_seed(std::string_view tenant) noexcept;
[[nodiscard]] key_hash hash_key(const void* data, size_t len, uint64_t seed) noexcept;

namespace detail {
// Memory for the window's tables that comes back resident and zeroed. The
// window reserves its whole table at once (2^21 slots, 34 MB for a million
// keys) and each key lands on a random page of it: left to the first
// inserts, the page faults fell on a shard's first batches (issue 19: 12 to
// 40 ms of dedup for the second batch after start). Taken here, they happen
// once, while evpipe starts. Blocks of 1 MiB and more are mapped and
// populated by the kernel in one call (MADV_POPULATE_WRITE): touching 34 MB
// page by page took 100 ms on this project's virtual machines, a page fault
// each, and the kernel's populate 7 ms; two shards' tables made every start
// of evpipe half a second slower. Smaller blocks, and kernels before 5.14,
// are zeroed by hand.
void* allocate_resident(size_t bytes);
void free_resident(void* p, size_t bytes) noexcept;

template <class T>
struct touched_allocator {
  using value_type = T;
  touched_allocator() = default;
  template <class U>
  touched_allocator(const touched_allocator<U>&) noexcept {}  // NOLINT: rebinding
  T* allocate(size_t n) { return static_cast<T*>(allocate_resident(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept { free_resident(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const touched_allocator<U>&) const noexcept {
    return true;
  }
};
}  // namespace detail

// Owned by one shard thread; not thread-safe. Lifetime: the shard's.
class dedup_window {
 public:
  explicit dedup_window(size_t capacity);

  // True when the key was not in the window (and is now, as the newest entry);
  // false for a duplicate. When full, the oldest key is forgotten.
  [[nodiscard]] bool insert(const key_hash& k);
  [[nodiscard]] bool contains(const key_hash& k) const { return set_.contains(k); }
  // Starts loading the memory insert(k) will touch: its slot in the set and,
  // once the window is full, the slot of the key it would forget. The window
  // is tens of MB and each key lands anywhere in it: a shard prefetches the
  // keys of a whole queued batch before inserting them, so that their cache
  // misses overlap instead of stalling one after another.
  void prefetch(const key_hash& k, size_t ahead) const {
    set_.prefetch(k);
    if (filled_ == ring_.size()) set_.prefetch(ring_[(next_ + ahead) % ring_.size()]);
  }
  // Forgets a key (its event did not become durable, so a resend must pass).
  void erase(const key_hash& k) { set_.erase(k); }

  [[nodiscard]] size_t size() const noexcept { return set_.size(); }
  [[nodiscard]] size_t capacity() const noexcept { return ring_.size(); }

 private:
  using plain_set = absl::flat_hash_set<key_hash>;
  absl::flat_hash_set<key_hash, plain_set::hasher, plain_set::key_equal, detail::touched_allocator<key_hash>> set_;
  std::vector<key_hash, detail::touched_allocator<key_hash>> ring_;  // insertion order, for FIFO eviction
  size_t next_ = 0;
  size_t filled_ = 0;
};

}  // namespace evpipe::stages
