#pragma once
// What /proc/self/smaps says about the mapping that holds an address: for the
// tests of the huge-page hints (stages/huge_pages.h, app/huge_pages.h).

#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace evpipe::test {

struct mapping_facts {
  std::uintptr_t start = 0, end = 0;
  bool thp_eligible = false;  // THPeligible: 1 (advised, or the kernel's mode is "always")
  long anon_huge_kb = 0;      // AnonHugePages
};

inline std::optional<mapping_facts> mapping_of(const void* p) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  std::optional<mapping_facts> found;
  while (std::getline(smaps, line)) {
    const auto dash = line.find('-');
    const auto space = line.find(' ');
    const bool header = dash != std::string::npos && space != std::string::npos && dash < space &&
                        line.find_first_not_of("0123456789abcdef") == dash;
    if (header) {
      if (found) return found;
      const std::uintptr_t start = std::stoull(line.substr(0, dash), nullptr, 16);
      const std::uintptr_t end = std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16);
      if (at >= start && at < end) found = mapping_facts{start, end};
      continue;
    }
    if (!found) continue;
    std::istringstream kv(line);
    std::string key;
    long value = 0;
    kv >> key >> value;
    if (key == "THPeligible:") found->thp_eligible = value == 1;
    if (key == "AnonHugePages:") found->anon_huge_kb = value;
  }
  return found;
}

// The kernel's transparent huge page mode is "madvise" (hints decide) or
// "always"; with "never" (or no THP), no hint can be seen.
inline std::string thp_mode() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  std::getline(in, modes);
  for (const char* m : {"always", "madvise", "never"})
    if (modes.find(std::string("[") + m + "]") != std::string::npos) return m;
  return "";
}

}  // namespace evpipe::test
