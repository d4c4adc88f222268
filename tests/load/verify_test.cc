#include "load/verify.h"

#include <gtest/gtest.h>

namespace evpipe::load {
namespace {

TEST(Verify, AllPresentOnceIsOk) {
  auto keys = generated_keys("r", {2, 1});
  EXPECT_EQ(keys, (std::unordered_set<std::string>{"r-0-0", "r-0-1", "r-1-0"}));
  auto rep = compare(keys, {{"r-0-0", 1}, {"r-0-1", 1}, {"r-1-0", 1}}, 4, 4);
  EXPECT_TRUE(rep.ok()) << rep.summary();
  EXPECT_EQ(rep.found_rows, 3u);
}

TEST(Verify, CatchesAMissingADuplicatedAndAStrayRow) {
  auto keys = generated_keys("r", {3});
  auto missing = compare(keys, {{"r-0-0", 1}, {"r-0-1", 1}}, 0, 0);
  EXPECT_FALSE(missing.ok());
  EXPECT_EQ(missing.missing, 1u);
  EXPECT_EQ(missing.examples.at(0), "missing: r-0-2");

  auto duplicated = compare(keys, {{"r-0-0", 1}, {"r-0-1", 2}, {"r-0-2", 1}}, 0, 0);
  EXPECT_FALSE(duplicated.ok());
  EXPECT_EQ(duplicated.duplicated, 1u);

  auto stray = compare(keys, {{"r-0-0", 1}, {"r-0-1", 1}, {"r-0-2", 1}, {"r-0-9", 1}}, 0, 0);
  EXPECT_FALSE(stray.ok());
  EXPECT_EQ(stray.stray, 1u);
  EXPECT_EQ(stray.examples.at(0), "stray: r-0-9");
}

TEST(Verify, CatchesDeadLettersMissingOrExtra) {
  auto keys = generated_keys("r", {1});
  EXPECT_FALSE(compare(keys, {{"r-0-0", 1}}, 5, 4).ok());
  EXPECT_FALSE(compare(keys, {{"r-0-0", 1}}, 5, 6).ok());
  EXPECT_TRUE(compare(keys, {{"r-0-0", 1}}, 5, 5).ok());
}

}  // namespace
}  // namespace evpipe::load
