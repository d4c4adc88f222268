#pragma once
// Transparent huge pages for a stage's large buffers (docs/performance-cpu.md,
// "Transparent huge pages"). A shard's batch buffers (16-17 MiB each at the
// default limits) and the dedup window's tables (34 MB for a million keys)
// are larger than mimalloc's large objects (16 MiB), or mapped directly, so
// nobody else advises them; each 4 KiB page of them was a page fault and a
// TLB entry of its own.

#include <cstddef>

namespace evpipe::stages {

// madvise(MADV_HUGEPAGE) on the whole 2 MiB pages inside [p, p + bytes),
// when huge pages are on (set_huge_pages). Only a hint: nothing happens when
// the kernel has no transparent huge pages or the range holds no whole huge
// page; the memory's contents do not change.
void advise_huge_pages(const void* p, size_t bytes) noexcept;

// The process-wide switch, set once by main() before any thread starts
// (app/huge_pages.h decides); on by default.
void set_huge_pages(bool on) noexcept;

}  // namespace evpipe::stages
