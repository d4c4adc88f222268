// app/huge_pages.h: the heap mappings made before main() get the huge-page
// hint; small ones do not.
#include "app/huge_pages.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <string>

#include "tests/support/smaps.h"

namespace evpipe::app {
namespace {

constexpr size_t mib = size_t{1} << 20;

TEST(HeapHugePages, AdvisesAnonymousMappingsWithinTheSizesOnly) {
  EXPECT_EQ(std::string(transparent_huge_pages_mode()), test::thp_mode());
  if (test::thp_mode() != "madvise") GTEST_SKIP() << "the kernel's THP mode is '" << test::thp_mode() << "', not madvise";
  // A large mapping, like a mimalloc segment mapped while the runtime started.
  auto* large = static_cast<char*>(::mmap(nullptr, 8 * mib, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(large, MAP_FAILED);
  std::memset(large, 1, 8 * mib);
  // A small one, fenced by inaccessible pages so that it merges with nothing.
  auto* fence = static_cast<char*>(::mmap(nullptr, 3 * mib, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(fence, MAP_FAILED);
  char* small = fence + mib;
  ASSERT_EQ(::mprotect(small, mib, PROT_READ | PROT_WRITE), 0);

  EXPECT_FALSE(test::mapping_of(large)->thp_eligible);
  (void)advise_huge_pages_on_heap_mappings(4 * mib, 6 * mib);  // larger than the most: left alone
  EXPECT_FALSE(test::mapping_of(large)->thp_eligible);
  EXPECT_GE(advise_huge_pages_on_heap_mappings(4 * mib, 1024 * mib), 1u);
  EXPECT_TRUE(test::mapping_of(large)->thp_eligible);
  EXPECT_TRUE(test::mapping_of(large + 8 * mib - 1)->thp_eligible);
  auto s = test::mapping_of(small);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->end - s->start, mib);
  EXPECT_FALSE(s->thp_eligible);
  for (size_t i = 0; i < 8 * mib; i += 4096) ASSERT_EQ(large[i], 1) << i;
  ::munmap(large, 8 * mib);
  ::munmap(fence, 3 * mib);
}

}  // namespace
}  // namespace evpipe::app
