// read/topic_filter: MQTT-style filters, matched in memory and as the SQL
// regular expression the table reader uses (the integration test checks
// that PostgreSQL agrees with topic_matches on the same cases).
#include "read/topic_filter.h"

#include <gtest/gtest.h>

#include "tests/read/topic_filter_cases.h"

namespace evpipe::read {
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

}  // namespace
}  // namespace evpipe::read
