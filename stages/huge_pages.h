#pragma once
// Transparent huge pages for a stage's large buffers (docs/performance-cpu.md,
// "Transparent huge pages"). A shard's batch buffers (about 10 MB each at
// 16,384 rows) and the dedup window's tables (34 MB for a million keys) are
// larger than mimalloc's segments, so mimalloc maps them on their own and
// does not advise them; each 4 KiB page of them was a page fault and a TLB
// entry of its own.

#include <cstddef>

namespace evpipe::stages {

// madvise(MADV_HUGEPAGE) on the whole 2 MiB pages inside [p, p + bytes).
// Only a hint: nothing happens when the kernel has no transparent huge pages
// or the range holds no whole huge page; the memory's contents do not change.
void advise_huge_pages(const void* p, size_t bytes) noexcept;

}  // namespace evpipe::stages
