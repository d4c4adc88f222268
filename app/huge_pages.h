#pragma once
// Transparent huge pages for the process's heap (docs/performance-cpu.md,
// "Transparent huge pages"). main() asks mimalloc for them
// (mi_option_large_os_pages: MADV_HUGEPAGE on each new segment); the memory
// mimalloc mapped before main() ran, for allocations made while the C++
// runtime started, is advised here.

#include <cstddef>

namespace evpipe::app {

// madvise(MADV_HUGEPAGE) on every private, anonymous, read-write mapping of
// this process from `min_bytes` to `max_bytes` long (the main stack is left
// alone; larger mappings are reservations, such as a sanitizer's shadow
// memory, where 2 MiB a touched page would waste memory).
// Returns how many mappings were advised; 0 when /proc/self/maps cannot be
// read or the kernel has no transparent huge pages.
std::size_t advise_huge_pages_on_heap_mappings(std::size_t min_bytes, std::size_t max_bytes);

// The kernel's mode for transparent huge pages ("always", "madvise" or
// "never"), from /sys/kernel/mm/transparent_hugepage/enabled; "" when it has none.
[[nodiscard]] const char* transparent_huge_pages_mode();

}  // namespace evpipe::app
