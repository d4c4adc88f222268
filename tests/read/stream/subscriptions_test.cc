// A WebSocket client's subscriptions (read/stream/subscriptions.h): each
// subscribe adds events, none takes any away; unsubscribe ends what it names
// and never widens a subscription.

#include "read/stream/subscriptions.h"

#include <gtest/gtest.h>

namespace evpipe::read {
namespace {

using subs_t = std::vector<row_clause>;

// Does an event on `topic` of `kind` reach a client with these subscriptions?
bool gets(const subs_t& subs, const std::string& topic, const std::string& kind) {
  for (const auto& c : subs) {
    if (c.matches(topic, kind)) return true;
  }
  return false;
}

TEST(Subscriptions, ASubscribeOfTopicsAfterOneOfKindsAddsEventsAndTakesNone) {
  subs_t s;
  add_subscription(s, {{}, {"alert"}});
  add_subscription(s, {{"tracker/#"}, {}});
  EXPECT_TRUE(gets(s, "autocore/x/status", "alert")) << "the first subscription still holds";
  EXPECT_TRUE(gets(s, "tracker/events/a", "project_created")) << "and the second adds its topic";
  EXPECT_FALSE(gets(s, "autocore/x/status", "project_created"));
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(filter_count(s), 2u);
}

TEST(Subscriptions, KindsOnTheSameTopicsWidenOneSubscription) {
  subs_t s;
  add_subscription(s, {{}, {"a"}});
  add_subscription(s, {{}, {"b", "a"}});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].kinds, (std::vector<std::string>{"a", "b"}));
  add_subscription(s, {{"t/1"}, {"c"}});
  add_subscription(s, {{"t/2"}, {"c"}});
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[1].topic_filters, (std::vector<std::string>{"t/1", "t/2"}));
  EXPECT_EQ(filter_count(s), 5u);
}

TEST(Subscriptions, EverythingCoversTheRestAndWhatIsCoveredAddsNothing) {
  subs_t s;
  add_subscription(s, {{"t/#"}, {"a"}});
  add_subscription(s, {{"t/#"}, {}});  // every kind on t/#: covers the first
  ASSERT_EQ(s.size(), 1u);
  EXPECT_TRUE(s[0].kinds.empty());
  add_subscription(s, {{"t/#"}, {"b"}});  // covered: nothing changes
  EXPECT_EQ(s.size(), 1u);
  EXPECT_TRUE(gets(s, "t/x", "z"));
  add_subscription(s, {{}, {}});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_TRUE(s[0].everything());
  EXPECT_EQ(filter_count(s), 0u);
}

TEST(Subscriptions, UnsubscribeEndsWhatItNamesAndNeverWidens) {
  subs_t s;
  add_subscription(s, {{"t/#"}, {"a"}});
  add_subscription(s, {{"v/#"}, {"a", "b"}});
  add_subscription(s, {{"u/#"}, {}});
  ASSERT_EQ(s.size(), 3u);
  remove_subscription(s, {}, {"a"});
  // {t/#: a} named only a: it ends (it does not become every kind on t/#).
  EXPECT_FALSE(gets(s, "t/x", "c"));
  EXPECT_FALSE(gets(s, "t/x", "a"));
  EXPECT_FALSE(gets(s, "v/x", "a"));
  EXPECT_TRUE(gets(s, "v/x", "b")) << "{v/#: a, b} keeps b";
  EXPECT_TRUE(gets(s, "u/x", "a")) << "every kind on u/#: a kind cannot be taken out of it";
  remove_subscription(s, {"u/#"}, {});
  EXPECT_FALSE(gets(s, "u/x", "c"));
  EXPECT_EQ(s.size(), 1u);
  remove_subscription(s, {}, {});
  EXPECT_TRUE(s.empty());
}

}  // namespace
}  // namespace evpipe::read
