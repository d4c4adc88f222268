#include "app/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string_view>

namespace evpipe::app {

namespace {
// A VmFlags line of smaps ("VmFlags: rd wr mr mw me ac nh") holds `flag`.
bool has_vm_flag(const std::string& line, std::string_view flag) {
  std::istringstream flags(line.substr(8));
  std::string f;
  while (flags >> f)
    if (f == flag) return true;
  return false;
}
}  // namespace

std::string transparent_huge_pages_mode() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  if (!std::getline(in, modes)) return "";
  // The mode in force is the one in brackets: "always [madvise] never".
  for (const char* m : {"always", "madvise", "never"})
    if (modes.find(std::string("[") + m + "]") != std::string::npos) return m;
  return "";
}

bool hugetlb_pool_present() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  long value = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    if (fields >> key >> value && key == "HugePages_Total:") return value > 0;
  }
  return false;
}

huge_pages_choice choose_huge_pages() {
  const std::string mode = transparent_huge_pages_mode();
  if (mode != "madvise" && mode != "always") {
    std::string why = "the kernel's transparent huge pages are '";
    why.append(mode.empty() ? "absent" : mode).append("'");
    return {false, why};
  }
  if (hugetlb_pool_present()) return {false, "the host has a hugetlb pool (HugePages_Total > 0), left to its owner"};
  std::string why = "the kernel's mode is '";
  why.append(mode).append("'");
  return {true, why};
}

std::size_t advise_huge_pages_on_heap_mappings(std::size_t min_bytes, std::size_t max_bytes) {
  // smaps: a header line per mapping (start-end perms offset dev inode
  // [path]), then its fields, the last of them VmFlags ("nh": MADV_NOHUGEPAGE).
  std::ifstream smaps("/proc/self/smaps");
  std::size_t advised = 0;
  std::uintptr_t start = 0, end = 0;
  bool candidate = false;
  std::string line;
  while (std::getline(smaps, line)) {
    if (line.rfind("VmFlags:", 0) == 0) {
      if (candidate && !has_vm_flag(line, "nh") &&
          madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE) == 0)
        ++advised;
      candidate = false;
      continue;
    }
    const auto dash = line.find('-');
    const auto space = line.find(' ');
    if (dash == std::string::npos || space == std::string::npos || dash > space ||
        line.find_first_not_of("0123456789abcdef") != dash)
      continue;  // a field line
    std::istringstream fields(line);
    std::string range, perms, offset, dev, path;
    unsigned long inode = 0;
    candidate = false;
    if (!(fields >> range >> perms >> offset >> dev >> inode)) continue;
    fields >> path;  // empty for an anonymous mapping
    start = std::stoull(range.substr(0, dash), nullptr, 16);
    end = std::stoull(range.substr(dash + 1), nullptr, 16);
    candidate = perms == "rw-p" && inode == 0 && path.empty() && end - start >= min_bytes && end - start <= max_bytes;
  }
  return advised;
}

}  // namespace evpipe::app
