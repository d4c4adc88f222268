#include "stages/dedup.h"

#include <gtest/gtest.h>

#include <sys/resource.h>

#include <string>
#include <thread>

namespace evpipe::stages {
namespace {

key_hash h(const std::string& s) { return hash_key(s.data(), s.size()); }

TEST(DedupWindow, SecondCopyIsDuplicate) {
  dedup_window w(10);
  EXPECT_TRUE(w.insert(h("a")));
  EXPECT_TRUE(w.insert(h("b")));
  EXPECT_FALSE(w.insert(h("a")));
  EXPECT_EQ(w.size(), 2u);
}

TEST(DedupWindow, EvictsOldestWhenFull) {
  dedup_window w(3);
  for (auto k : {"a", "b", "c"}) EXPECT_TRUE(w.insert(h(k)));
  EXPECT_TRUE(w.insert(h("d")));  // evicts a
  EXPECT_FALSE(w.contains(h("a")));
  EXPECT_TRUE(w.contains(h("b")));
  EXPECT_TRUE(w.insert(h("a")));  // forgotten, so seen as new (the database backstop catches it)
  EXPECT_FALSE(w.contains(h("b")));
  EXPECT_EQ(w.size(), 3u);
}

TEST(DedupWindow, SizeStaysBoundedOverManyKeys) {
  dedup_window w(1000);
  for (int i = 0; i < 100000; ++i) ASSERT_TRUE(w.insert(h("key-" + std::to_string(i))));
  EXPECT_EQ(w.size(), 1000u);
  EXPECT_TRUE(w.contains(h("key-99999")));
  EXPECT_TRUE(w.contains(h("key-99000")));
  EXPECT_FALSE(w.contains(h("key-98999")));
}

TEST(DedupWindow, EraseLetsAKeyPassAgain) {
  dedup_window w(4);
  EXPECT_TRUE(w.insert(h("a")));
  w.erase(h("a"));
  EXPECT_TRUE(w.insert(h("a")));
}

// The table is touched when the window is built, not by the first inserts
// (issue 19): 20,000 keys into a fresh million-key window, which land on
// most of its ~8,000 pages, take (almost) no page faults. Measured on a
// thread of its own (RUSAGE_THREAD) for the same window built on another.
TEST(DedupWindow, TheFirstInsertsTakeNoPageFaults) {
  auto window = std::make_unique<dedup_window>(1'000'000);
  long faults = -1;
  std::thread([&] {
    rusage before{}, after{};
    getrusage(RUSAGE_THREAD, &before);
    for (int i = 0; i < 20'000; ++i) (void)window->insert(h("first-" + std::to_string(i)));
    getrusage(RUSAGE_THREAD, &after);
    faults = after.ru_minflt - before.ru_minflt;
  }).join();
  EXPECT_EQ(window->size(), 20'000u);
  EXPECT_LT(faults, 500) << "page faults of the first inserts";
}

TEST(DedupWindow, HashDependsOnEveryByte) {
  EXPECT_FALSE(h("key-1") == h("key-2"));
  EXPECT_FALSE(h("") == h(std::string(1, '\0')));
  EXPECT_TRUE(h("same") == h("same"));
}

}  // namespace
}  // namespace evpipe::stages
