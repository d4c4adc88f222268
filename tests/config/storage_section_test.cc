// [storage] (config/storage_section.cc): partitioning and retention keys.
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/support/config_error.h"
#include "config/config.h"
#include "config/reload.h"

using evpipe::config::config_error;
using evpipe::config::load_string;

namespace {

using evpipe::testing::config_error_of;

TEST(StorageSection, DefaultsAreOnePlainTableKeptForEver) {
  auto s = load_string("");
  EXPECT_EQ(s.storage.partition, "none");
  EXPECT_FALSE(s.storage.partitioned());
  EXPECT_EQ(s.storage.retention_s, 0u);
  EXPECT_EQ(s.storage.premake, 3u);
  EXPECT_EQ(s.storage.lock_timeout_ms, 500u);
}

TEST(StorageSection, ReadsPartitionAndRetentionUnits) {
  auto s = load_string("[storage]\npartition = \"day\"\nretention = \"30d\"\n");
  EXPECT_EQ(s.storage.partition, "day");
  EXPECT_EQ(s.storage.retention_s, 30u * 86'400);
  EXPECT_EQ(load_string("[storage]\npartition = \"week\"\nretention = \"12h\"\n").storage.retention_s, 12u * 3600);
  EXPECT_EQ(load_string("[storage]\npartition = \"month\"\nretention = \"8w\"\n").storage.retention_s, 8u * 604'800);
}

TEST(StorageSection, RefusesWhatItCannotMean) {
  EXPECT_NE(config_error_of("[storage]\npartition = \"hour\"\n").find("[storage] partition: must be \"none\", \"day\""),
            std::string::npos);
  for (const char* bad : {"30", "d", "30m", "-3d", "0d", "30 d", "3.5d"}) {
    std::string e = config_error_of(std::string("[storage]\npartition = \"day\"\nretention = \"") + bad + "\"\n");
    EXPECT_NE(e.find("[storage] retention: must be a positive count then h, d or w"), std::string::npos) << bad << ": " << e;
  }
  EXPECT_NE(config_error_of("[storage]\nretention = \"30d\"\n").find("drops whole partitions"), std::string::npos)
      << "retention without partitions has nothing to drop";
  EXPECT_NE(config_error_of("[storage]\npartition = \"day\"\npremake = 0\n").find("premake"), std::string::npos);
  EXPECT_NE(config_error_of("[storage]\nparttion = \"day\"\n").find("parttion"), std::string::npos);
}

// A reload does not re-plan the tables: a changed [storage] waits for a restart.
TEST(StorageSection, AChangeIsKeptForTheNextStart) {
  auto a = load_string("[storage]\npartition = \"day\"\n");
  auto b = load_string("[storage]\npartition = \"day\"\nretention = \"30d\"\n");
  auto plan = evpipe::config::plan_reload(a, b);
  EXPECT_NE(std::find(plan.kept.begin(), plan.kept.end(), "[storage]"), plan.kept.end());
  EXPECT_TRUE(evpipe::config::plan_reload(a, a).kept.empty());
}

}  // namespace
