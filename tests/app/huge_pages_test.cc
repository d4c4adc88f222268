// app/huge_pages.h: the heap mappings made before main() get the huge-page
// hint; small ones, oversized ones and those marked MADV_NOHUGEPAGE do not.
#include "app/huge_pages.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <fstream>
#include <string>

#include "tests/support/smaps.h"

namespace evpipe::app {
namespace {

constexpr size_t mib = size_t{1} << 20;

TEST(HeapHugePages, AdvisesAnonymousMappingsWithinTheSizesOnly) {
  if (!test::kernel_takes_huge_page_hints()) GTEST_SKIP() << "this kernel has no transparent huge pages";
  // A large mapping, like a mimalloc segment mapped while the runtime started.
  test::fenced_mapping large(8 * mib);
  test::fenced_mapping small(3 * mib);     // under the least size
  test::fenced_mapping refused(8 * mib);   // marked "no huge pages" (as ASan marks its shadow)
  ASSERT_NE(large.p, nullptr);
  ASSERT_NE(small.p, nullptr);
  ASSERT_NE(refused.p, nullptr);
  std::memset(large.p, 1, large.bytes);
  ASSERT_EQ(::madvise(refused.p, refused.bytes, MADV_NOHUGEPAGE), 0);

  EXPECT_FALSE(test::mapping_of(large.p)->advised);
  (void)advise_huge_pages_on_heap_mappings(4 * mib, 6 * mib);  // larger than the most: left alone
  EXPECT_FALSE(test::mapping_of(large.p)->advised);
  EXPECT_GE(advise_huge_pages_on_heap_mappings(4 * mib, 1024 * mib), 1u);
  auto l = test::mapping_of(large.p);
  ASSERT_TRUE(l);
  EXPECT_TRUE(l->advised);
  EXPECT_EQ(l->start, reinterpret_cast<uintptr_t>(large.p));
  EXPECT_EQ(l->end - l->start, large.bytes);
  auto s = test::mapping_of(small.p);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->end - s->start, small.bytes);
  EXPECT_FALSE(s->advised);
  auto r = test::mapping_of(refused.p);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->refused);
  EXPECT_FALSE(r->advised);
  for (size_t i = 0; i < large.bytes; i += 4096) ASSERT_EQ(large.p[i], 1) << i;
}

TEST(HeapHugePages, TheKernelsModeIsTheBracketedOne) {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  if (!std::getline(in, modes)) {
    EXPECT_EQ(transparent_huge_pages_mode(), "");
    return;
  }
  const std::string mode = transparent_huge_pages_mode();
  ASSERT_FALSE(mode.empty()) << modes;
  EXPECT_NE(modes.find("[" + mode + "]"), std::string::npos) << modes;
  const auto choice = choose_huge_pages();
  EXPECT_EQ(choice.on, (mode == "madvise" || mode == "always") && !hugetlb_pool_present()) << choice.why;
  EXPECT_FALSE(choice.why.empty());
}

}  // namespace
}  // namespace evpipe::app
