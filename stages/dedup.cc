#include "stages/dedup.h"

#include <xxhash.h>

namespace evpipe::stages {

key_hash hash_key(const void* data, size_t len) noexcept {
  XXH128_hash_t h = XXH3_128bits(data, len);
  return key_hash{h.low64, h.high64};
}

uint64_t tenant_hash_seed(std::string_view tenant) noexcept {
  if (tenant.empty()) return 0;
  uint64_t s = XXH3_64bits(tenant.data(), tenant.size());
  return s ? s : 1;
}

key_hash hash_key(const void* data, size_t len, uint64_t seed) noexcept {
  // XXH3_128bits_withSeed with seed 0 equals XXH3_128bits.
  XXH128_hash_t h = XXH3_128bits_withSeed(data, len, seed);
  return key_hash{h.low64, h.high64};
}

dedup_window::dedup_window(size_t capacity) : ring_(capacity == 0 ? 1 : capacity) {
  set_.reserve(ring_.size());
}

bool dedup_window::insert(const key_hash& k) {
  if (!set_.insert(k).second) return false;
  if (filled_ == ring_.size()) {
    // The slot may hold a key already erased; erase() on a missing key is a no-op.
    set_.erase(ring_[next_]);
  } else {
    ++filled_;
  }
  ring_[next_] = k;
  next_ = (next_ + 1) % ring_.size();
  return true;
}

}  // namespace evpipe::stages
