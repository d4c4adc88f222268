// stages/huge_pages.h: the hint reaches the kernel for the whole 2 MiB pages
// of a range, leaves the memory as it was, and follows the process's switch.
#include "stages/huge_pages.h"

#include <gtest/gtest.h>

#include <cstring>

#include "tests/support/smaps.h"

namespace evpipe::stages {
namespace {

constexpr size_t huge = size_t{2} << 20;

TEST(HugePages, AdvisesTheWholeHugePagesOfARangeAndKeepsItsBytes) {
  if (!test::kernel_takes_huge_page_hints()) GTEST_SKIP() << "this kernel has no transparent huge pages";
  test::fenced_mapping m(8 * huge);
  ASSERT_NE(m.p, nullptr);
  std::memset(m.p, 0x5a, m.bytes);
  auto before = test::mapping_of(m.p);
  ASSERT_TRUE(before);
  EXPECT_FALSE(before->advised);

  // Unaligned on both ends: only the whole huge pages inside are advised, so
  // the kernel splits the mapping there.
  advise_huge_pages(m.p + 100, m.bytes - 200);
  auto after = test::mapping_of(m.p + m.bytes / 2);
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->advised);
  EXPECT_EQ(after->start % huge, 0u);
  EXPECT_EQ(after->end % huge, 0u);
  EXPECT_GE(after->start, reinterpret_cast<uintptr_t>(m.p) + 100);
  EXPECT_LE(after->end, reinterpret_cast<uintptr_t>(m.p) + m.bytes - 100);
  EXPECT_GE(after->end - after->start, m.bytes - 2 * huge);  // at most one partial huge page at each end left out
  EXPECT_FALSE(test::mapping_of(m.p)->advised);             // the part before the first boundary
  for (size_t i = 0; i < m.bytes; i += 4096) ASSERT_EQ(m.p[i], 0x5a) << i;
}

TEST(HugePages, ARangeWithoutAWholeHugePageIsLeftAlone) {
  if (!test::kernel_takes_huge_page_hints()) GTEST_SKIP() << "this kernel has no transparent huge pages";
  test::fenced_mapping m(4 * huge);
  ASSERT_NE(m.p, nullptr);
  const auto at = reinterpret_cast<uintptr_t>(m.p);
  char* near_end = m.p + ((at + huge - 1) / huge * huge - at) + huge - 4096;  // 4 KiB before a boundary
  advise_huge_pages(near_end, huge);  // crosses one boundary: no whole huge page inside
  advise_huge_pages(nullptr, 16 * huge);
  auto after = test::mapping_of(m.p);
  ASSERT_TRUE(after);
  EXPECT_FALSE(after->advised);
  EXPECT_EQ(after->start, at);
  EXPECT_EQ(after->end, at + m.bytes);
}

TEST(HugePages, SwitchedOffNothingIsAdvised) {
  if (!test::kernel_takes_huge_page_hints()) GTEST_SKIP() << "this kernel has no transparent huge pages";
  test::fenced_mapping m(8 * huge);
  ASSERT_NE(m.p, nullptr);
  set_huge_pages(false);
  advise_huge_pages(m.p, m.bytes);
  set_huge_pages(true);
  auto after = test::mapping_of(m.p + m.bytes / 2);
  ASSERT_TRUE(after);
  EXPECT_FALSE(after->advised);
  EXPECT_EQ(after->end - after->start, m.bytes);
}

}  // namespace
}  // namespace evpipe::stages
