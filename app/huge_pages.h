#pragma once
// Transparent huge pages for the process's heap (docs/performance-cpu.md,
// "Transparent huge pages"). main() decides whether evpipe asks for them
// (choose_huge_pages), turns on mimalloc's large_os_pages (MADV_HUGEPAGE on each
// new segment), and advises the memory mimalloc mapped before main() ran, for
// allocations made while the C++ runtime started.

#include <cstddef>
#include <string>

namespace evpipe::app {

// The kernel's mode for transparent huge pages ("always", "madvise" or
// "never"), from /sys/kernel/mm/transparent_hugepage/enabled; "" when it has none.
[[nodiscard]] std::string transparent_huge_pages_mode();

// True when the host has reserved explicit huge pages (HugePages_Total in
// /proc/meminfo, vm.nr_hugepages), as a PostgreSQL with huge_pages = on
// needs. mimalloc's large_os_pages tries those first (MAP_HUGETLB) and would
// take them from that pool, so evpipe does not ask for huge pages then.
[[nodiscard]] bool hugetlb_pool_present();

// Whether evpipe asks for huge pages, and why: on when the kernel's mode is
// "madvise" or "always" and the host has no hugetlb pool.
struct huge_pages_choice {
  bool on = false;
  std::string why;  // for `evpipe --version`
};
[[nodiscard]] huge_pages_choice choose_huge_pages();

// madvise(MADV_HUGEPAGE) on every private, anonymous, read-write mapping of
// this process from `min_bytes` to `max_bytes` long that has not been marked
// MADV_NOHUGEPAGE (larger mappings are reservations, such as a sanitizer's
// shadow memory, where 2 MiB a touched page would waste memory). Call it
// before any thread starts: a thread's stack is such a mapping. Returns how
// many mappings were advised; 0 when /proc/self/smaps cannot be read or the
// kernel has no transparent huge pages.
std::size_t advise_huge_pages_on_heap_mappings(std::size_t min_bytes, std::size_t max_bytes);

}  // namespace evpipe::app
