#pragma once
// What /proc/self/smaps says about the mapping that holds an address: for the
// tests of the huge-page hints (stages/huge_pages.h, app/huge_pages.h).

#include <sys/mman.h>

#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace evpipe::test {

struct mapping_facts {
  std::uintptr_t start = 0, end = 0;
  bool advised = false;  // VmFlags "hg": madvise(MADV_HUGEPAGE) was called on it
  bool refused = false;  // VmFlags "nh": MADV_NOHUGEPAGE
};

inline std::optional<mapping_facts> mapping_of(const void* p) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  std::optional<mapping_facts> found;
  while (std::getline(smaps, line)) {
    if (line.rfind("VmFlags:", 0) == 0) {
      if (!found) continue;
      const std::string flags = " " + line.substr(8) + " ";
      found->advised = flags.find(" hg ") != std::string::npos;
      found->refused = flags.find(" nh ") != std::string::npos;
      return found;
    }
    const auto dash = line.find('-');
    const auto space = line.find(' ');
    if (dash == std::string::npos || space == std::string::npos || dash > space ||
        line.find_first_not_of("0123456789abcdef") != dash)
      continue;
    const std::uintptr_t start = std::stoull(line.substr(0, dash), nullptr, 16);
    const std::uintptr_t end = std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16);
    if (at >= start && at < end) found = mapping_facts{start, end};
  }
  return found;
}

// Whether this kernel takes the hint at all (it refuses MADV_HUGEPAGE with
// EINVAL when built without transparent huge pages).
inline bool kernel_takes_huge_page_hints() {
  constexpr size_t bytes = size_t{4} << 20;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  const bool ok = ::madvise(p, bytes, MADV_HUGEPAGE) == 0;
  ::munmap(p, bytes);
  return ok;
}

// `bytes` of read-write anonymous memory between two inaccessible pages, so
// that the kernel merges it with no neighbour: its smaps entry is its own.
struct fenced_mapping {
  explicit fenced_mapping(size_t n) : bytes(n) {
    void* all = ::mmap(nullptr, n + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (all == MAP_FAILED) return;
    base = static_cast<char*>(all);
    if (::mprotect(base + 4096, n, PROT_READ | PROT_WRITE) == 0) p = base + 4096;
  }
  ~fenced_mapping() {
    if (base != nullptr) ::munmap(base, bytes + 2 * 4096);
  }
  fenced_mapping(const fenced_mapping&) = delete;
  fenced_mapping& operator=(const fenced_mapping&) = delete;
  char* base = nullptr;
  char* p = nullptr;  // nullptr when it could not be made
  size_t bytes;
};

}  // namespace evpipe::test
