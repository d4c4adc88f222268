#include "stages/huge_pages.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>

namespace evpipe::stages {

namespace {
std::atomic<bool> huge_pages_on{true};
}  // namespace

void set_huge_pages(bool on) noexcept { huge_pages_on.store(on, std::memory_order_relaxed); }

void advise_huge_pages(const void* p, size_t bytes) noexcept {
  if (!huge_pages_on.load(std::memory_order_relaxed) || p == nullptr) return;
  constexpr std::uintptr_t huge = std::uintptr_t{2} << 20;
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t from = (at + huge - 1) & ~(huge - 1);
  const std::uintptr_t to = (at + bytes) & ~(huge - 1);
  if (to <= from) return;
  (void)::madvise(reinterpret_cast<void*>(from), to - from, MADV_HUGEPAGE);
}

}  // namespace evpipe::stages
