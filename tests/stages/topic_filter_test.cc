// stages/topic_filter: MQTT topic filters, matched in memory and as the SQL
// regular expression the table reader uses (the integration test checks
// that PostgreSQL agrees with topic_matches on the same cases).
#include "stages/topic_filter.h"

#include <gtest/gtest.h>

#include "tests/stages/topic_filter_cases.h"

namespace evpipe::stages {
namespace {

TEST(TopicFilter, Validates) {
  for (auto f : {"a", "a/b", "+", "#", "a/+/c", "a/#", "+/+", "/", "a//b"}) EXPECT_EQ(topic_filter_problem(f), "") << f;
  for (auto f : {"", "a#", "a/#/b", "#/a", "a+", "a/b+/c", "a/+b"}) EXPECT_NE(topic_filter_problem(f), "") << f;
}

TEST(TopicFilter, MatchesLikeMqtt) {
  for (const auto& c : topic_cases) EXPECT_EQ(topic_matches(c.filter, c.topic), c.match) << c.filter << " vs " << c.topic;
}

TEST(TopicFilter, RegexIsAnchoredAndEscaped) {
  EXPECT_EQ(topic_filter_regex("a/b"), "^a/b$");
  EXPECT_EQ(topic_filter_regex("a/+/c"), "^a/[^/]*/c$");
  EXPECT_EQ(topic_filter_regex("a/#"), "^a(/.*)?$");
  EXPECT_EQ(topic_filter_regex("#"), "^([^$].*)?$");
  EXPECT_EQ(topic_filter_regex("+/x"), "^([^$/][^/]*)?/x$");
  EXPECT_EQ(topic_filter_regex("a.b"), "^a\\.b$");
}

TEST(TopicFilter, MatchesAsTheMqttSourceNeedsIt) {
  EXPECT_TRUE(topic_matches("tracker/events/#", "tracker/events/a/b"));
  EXPECT_TRUE(topic_matches("tracker/events/#", "tracker/events"));
  EXPECT_FALSE(topic_matches("tracker/events/#", "tracker/eventsx"));
  EXPECT_FALSE(topic_matches("tracker/events/#", "tracker"));
  EXPECT_TRUE(topic_matches("autocore/+/telemetry", "autocore/x/telemetry"));
  EXPECT_FALSE(topic_matches("autocore/+/telemetry", "autocore/x/y/telemetry"));
  EXPECT_FALSE(topic_matches("autocore/+/telemetry", "autocore/x"));
  EXPECT_TRUE(topic_matches("a/+", "a/"));
  EXPECT_TRUE(topic_matches("+", "a"));
  EXPECT_FALSE(topic_matches("+", "a/b"));
  EXPECT_TRUE(topic_matches("#", "a/b"));
  EXPECT_TRUE(topic_matches("a/b", "a/b"));
  EXPECT_FALSE(topic_matches("a/b", "a/b/c"));
  EXPECT_FALSE(topic_matches("a/b/c", "a/b"));
  // Wildcards at the first level do not reach $-topics (MQTT-4.7.2-1).
  EXPECT_FALSE(topic_matches("#", "$SYS/x"));
  EXPECT_FALSE(topic_matches("+/x", "$SYS/x"));
  EXPECT_TRUE(topic_matches("$SYS/#", "$SYS/x"));
}

}  // namespace
}  // namespace evpipe::stages
