#include "app/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

namespace evpipe::app {

std::size_t advise_huge_pages_on_heap_mappings(std::size_t min_bytes, std::size_t max_bytes) {
  std::ifstream maps("/proc/self/maps");
  std::size_t advised = 0;
  std::string line;
  while (std::getline(maps, line)) {
    // start-end perms offset dev inode [path]
    std::istringstream fields(line);
    std::string range, perms, offset, dev, path;
    unsigned long inode = 0;
    if (!(fields >> range >> perms >> offset >> dev >> inode)) continue;
    fields >> path;  // empty for an anonymous mapping
    if (perms != "rw-p" || inode != 0 || !path.empty()) continue;
    const auto dash = range.find('-');
    if (dash == std::string::npos) continue;
    const std::uintptr_t start = std::stoull(range.substr(0, dash), nullptr, 16);
    const std::uintptr_t end = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (end - start < min_bytes || end - start > max_bytes) continue;
    if (madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE) == 0) ++advised;
  }
  return advised;
}

const char* transparent_huge_pages_mode() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  if (!std::getline(in, modes)) return "";
  // The mode in force is the one in brackets: "always [madvise] never".
  if (modes.find("[always]") != std::string::npos) return "always";
  if (modes.find("[madvise]") != std::string::npos) return "madvise";
  if (modes.find("[never]") != std::string::npos) return "never";
  return "";
}

}  // namespace evpipe::app
