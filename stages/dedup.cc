#include "stages/dedup.h"

#include <sys/mman.h>
#include <xxhash.h>

#include <cstring>
#include <new>

#include "stages/huge_pages.h"

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

namespace detail {

namespace {
constexpr size_t mapped_from = size_t{1} << 20;
#ifndef MADV_POPULATE_WRITE
constexpr int MADV_POPULATE_WRITE = 23;  // Linux 5.14; glibc 2.36's headers may lack it
#endif
}  // namespace

void* allocate_resident(size_t bytes) {
  if (bytes >= mapped_from) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    // Huge pages first, so that the populate maps them: each insert lands on
    // a random slot, and 17 TLB entries cover 34 MB where 8,500 did not.
    advise_huge_pages(p, bytes);
    // Anonymous pages are zero; populating them faults them all in at once.
    // Without it (an older kernel), touch each page.
    if (::madvise(p, bytes, MADV_POPULATE_WRITE) != 0) {
      for (size_t at = 0; at < bytes; at += 4096) static_cast<volatile char*>(p)[at] = 0;
    }
    return p;
  }
  void* p = ::operator new(bytes);
  std::memset(p, 0, bytes);
  return p;
}

void free_resident(void* p, size_t bytes) noexcept {
  if (bytes >= mapped_from) {
    ::munmap(p, bytes);
  } else {
    ::operator delete(p);
  }
}

}  // namespace detail

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
