// stages/huge_pages.h: the hint reaches the kernel for the whole 2 MiB pages
// of a range, and leaves the memory as it was.
#include "stages/huge_pages.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>

#include "tests/support/smaps.h"

namespace evpipe::stages {
namespace {

constexpr size_t huge = size_t{2} << 20;

struct mapped {
  explicit mapped(size_t n) : bytes(n) {
    p = static_cast<char*>(::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  }
  ~mapped() {
    if (p != MAP_FAILED) ::munmap(p, bytes);
  }
  char* p;
  size_t bytes;
};

TEST(HugePages, AdvisesTheWholeHugePagesOfARangeAndKeepsItsBytes) {
  if (test::thp_mode() != "madvise") GTEST_SKIP() << "the kernel's THP mode is '" << test::thp_mode() << "', not madvise";
  mapped m(8 * huge);
  ASSERT_NE(m.p, MAP_FAILED);
  std::memset(m.p, 0x5a, m.bytes);
  auto before = test::mapping_of(m.p);
  ASSERT_TRUE(before);
  EXPECT_FALSE(before->thp_eligible);

  // Unaligned on both ends: only the whole huge pages inside are advised, so
  // the kernel splits the mapping there.
  advise_huge_pages(m.p + 100, m.bytes - 200);
  auto after = test::mapping_of(m.p + m.bytes / 2);
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->thp_eligible);
  EXPECT_EQ(after->start % huge, 0u);
  EXPECT_EQ(after->end % huge, 0u);
  EXPECT_GE(after->start, reinterpret_cast<uintptr_t>(m.p) + 100);
  EXPECT_LE(after->end, reinterpret_cast<uintptr_t>(m.p) + m.bytes - 100);
  for (size_t i = 0; i < m.bytes; i += 4096) ASSERT_EQ(m.p[i], 0x5a) << i;
}

TEST(HugePages, ARangeWithoutAWholeHugePageIsLeftAlone) {
  if (test::thp_mode() != "madvise") GTEST_SKIP() << "the kernel's THP mode is '" << test::thp_mode() << "', not madvise";
  mapped m(4 * huge);
  ASSERT_NE(m.p, MAP_FAILED);
  const auto base = reinterpret_cast<uintptr_t>(m.p);
  char* near_end = m.p + ((base + huge - 1) / huge * huge - base) + huge - 4096;  // 4 KiB before a boundary
  advise_huge_pages(near_end, huge);  // crosses one boundary: no whole huge page inside
  advise_huge_pages(nullptr, 16 * huge);
  auto after = test::mapping_of(m.p);
  ASSERT_TRUE(after);
  EXPECT_FALSE(after->thp_eligible);
  EXPECT_EQ(after->start, base);
  EXPECT_EQ(after->end, base + m.bytes);
}

}  // namespace
}  // namespace evpipe::stages
