// Route matching: topic filters, kinds, first match against `also`, an
// envelope route next to a bare one; compiling defaults.
#include "stages/route/route_set.h"

#include <gtest/gtest.h>

#include "config/config.h"
#include "stages/topic_filter.h"

namespace evpipe::stages::route {
namespace {

bool matches(std::string_view filter, std::string_view topic) { return topic_matches(filter, topic); }

TEST(RouteSet, TopicFilters) {
  EXPECT_TRUE(matches("autocore/+/status", "autocore/ESP32_001/status"));
  EXPECT_FALSE(matches("autocore/+/status", "autocore/ESP32_001/telemetry"));
  EXPECT_FALSE(matches("autocore/+/status", "autocore/ESP32_001/status/x"));
  EXPECT_FALSE(matches("autocore/+/status", "autocore/status"));
  EXPECT_TRUE(matches("autocore/+/relay/+/status", "autocore/ESP32_001/relay/0/status"));
  EXPECT_TRUE(matches("autocore/+/system/+", "autocore/E/system/boot"));
  EXPECT_FALSE(matches("autocore/+/system/+", "autocore/E/system"));
  EXPECT_TRUE(matches("autocore/#", "autocore"));
  EXPECT_TRUE(matches("autocore/#", "autocore/a/b/c"));
  EXPECT_TRUE(matches("#", "anything/at/all"));
  EXPECT_FALSE(matches("#", "$SYS/broker")) << "wildcards do not match $ topics";
  EXPECT_TRUE(matches("a/+", "a/")) << "an empty level is a level";
  EXPECT_FALSE(matches("a", "a/"));
}

std::vector<config::route> routes_of(const std::string& toml) { return config::load_string(toml).routes; }

std::vector<uint16_t> match(const route_set& rs, std::string_view topic, std::string_view kind, bool envelope) {
  std::array<uint16_t, route_set::max_routes_per_message> out{};
  size_t n = rs.match(topic, kind, envelope, out);
  return {out.begin(), out.begin() + n};
}

constexpr const char* mixed = R"(
[[routes]]
name = "relay_history"
topics = ["autocore/+/relay/+/status"]
envelope = "none"
also = true
table = "relay_state_history"
columns = [{ name = "state", type = "bool" }]
[[routes]]
name = "relays"
topics = ["autocore/+/relay/+/status"]
envelope = "none"
table = "relays"
mode = "upsert"
key = ["device_id", "relay_index"]
columns = [{ name = "device_id", source = "topic[1]", type = "text" },
           { name = "relay_index", source = "topic[3]", type = "int4" },
           { name = "state", type = "bool" }]
[[routes]]
name = "never"
topics = ["autocore/#"]
envelope = "none"
table = "t"
columns = [{ name = "x", type = "text" }]
[[routes]]
name = "orders"
topics = ["shop/#"]
kinds = ["order.created", "order.paid"]
table = "orders"
columns = [{ name = "id", source = "payload.id", type = "int8" }]
[[routes]]
name = "any_shop"
topics = ["shop/#"]
table = "shop_events"
columns = [{ name = "kind", source = "kind", type = "text" }]
)";

TEST(RouteSet, FirstMatchWinsUnlessAlso) {
  route_set rs(routes_of(mixed));
  EXPECT_EQ(match(rs, "autocore/E1/relay/2/status", "", false), (std::vector<uint16_t>{0, 1}))
      << "relay_history says also, relays ends the search: 'never' does not take it";
  EXPECT_EQ(match(rs, "autocore/E1/status", "", false), (std::vector<uint16_t>{2}));
  EXPECT_TRUE(match(rs, "elsewhere", "", false).empty()) << "no route: today's path";
}

TEST(RouteSet, KindsAndEnvelopes) {
  route_set rs(routes_of(mixed));
  EXPECT_EQ(match(rs, "shop/eu", "order.paid", true), (std::vector<uint16_t>{3}));
  EXPECT_EQ(match(rs, "shop/eu", "cart.viewed", true), (std::vector<uint16_t>{4})) << "kind not listed: next route";
  EXPECT_TRUE(match(rs, "shop/eu", "", false).empty()) << "a standard-envelope route needs a valid envelope";
  EXPECT_EQ(rs.bare_route_for("autocore/E1/telemetry"), &rs.at(2));
  EXPECT_EQ(rs.bare_route_for("shop/eu"), nullptr) << "the first route on shop/ wants the envelope";
  EXPECT_EQ(rs.bare_route_for("elsewhere"), nullptr);
}

// The two-step match that pipeline::intake uses (a topic's mask, kept per
// topic) decides every case as the one-step match does.
TEST(RouteSet, TheTopicMaskDecidesAsTheTopicDoes) {
  const std::string kinds_only = R"(
[[routes]]
name = "by_kind"
kinds = ["audit.entry"]
table = "audit"
columns = [{ name = "kind", source = "kind", type = "text" }]
)";
  const std::string sets[] = {mixed, kinds_only + mixed, std::string(mixed) + kinds_only};
  const std::string_view topics[] = {"autocore/E1/relay/2/status", "autocore/E1/status", "autocore", "shop/eu",
                                     "shop",  "elsewhere", "$SYS/x", "", "autocore/E1/relay/2/status/x"};
  const std::string_view kinds[] = {"", "order.paid", "order.created", "cart.viewed", "audit.entry"};
  for (const auto& toml : sets) {
    route_set rs(routes_of(toml));
    ASSERT_TRUE(rs.maskable());
    for (auto topic : topics) {
      const uint64_t mask = rs.topic_mask(topic);
      EXPECT_EQ(rs.bare_route_for(mask), rs.bare_route_for(topic)) << topic;
      for (auto kind : kinds) {
        for (bool envelope : {false, true}) {
          std::array<uint16_t, route_set::max_routes_per_message> out{};
          const size_t n = rs.match(mask, kind, envelope, out);
          EXPECT_EQ(std::vector<uint16_t>(out.begin(), out.begin() + n), match(rs, topic, kind, envelope))
              << topic << " " << kind << " " << envelope;
        }
      }
    }
  }
  // Past 64 routes a set says it cannot be masked (intake then matches by topic).
  std::string many;
  for (int i = 0; i < 65; ++i) {
    many += "[[routes]]\nname = \"r" + std::to_string(i) + "\"\ntopics = [\"t/" + std::to_string(i) +
            "\"]\nenvelope = \"none\"\ntable = \"t\"\ncolumns = [{ name = \"x\", type = \"text\" }]\n";
  }
  EXPECT_FALSE(route_set(routes_of(many)).maskable());
}

TEST(RouteSet, CompilesPathsAndDefaults) {
  route_set rs(routes_of(R"(
[[routes]]
name = "r"
topics = ["a"]
table = "t"
columns = [{ name = "x", source = "payload.list[2].v", type = "int4", default = 7 },
           { name = "j", type = "jsonb", default = "{\"a\":1}" }]
)"));
  const auto& c = rs.at(0).columns[0];
  ASSERT_EQ(c.steps.size(), 4u);
  EXPECT_EQ(c.steps[0].key, "payload");
  EXPECT_EQ(c.steps[2].index, 2);
  EXPECT_EQ(c.steps[3].key, "v");
  EXPECT_EQ(c.default_field, std::string("\0\0\0\4\0\0\0\7", 8));
  EXPECT_EQ(rs.at(0).columns[1].default_field, std::string("\0\0\0\x08\1{\"a\":1}", 12));
}

TEST(RouteSet, RefusesDefaultsTheTypeCannotHold) {
  auto refused = [](const std::string& col) {
    try {
      route_set rs(routes_of("[[routes]]\nname = \"r\"\ntopics = [\"a\"]\ntable = \"t\"\ncolumns = [" + col + "]\n"));
    } catch (const config::config_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(refused(R"({ name = "t", type = "timestamptz", default = "soon" })")
                .find("[[routes]] \"r\" columns \"t\" default: \"soon\" is not an ISO 8601 date-time"),
            std::string::npos);
  EXPECT_NE(refused(R"({ name = "u", type = "uuid", default = "x" })").find("\"x\" is not a UUID"), std::string::npos);
  EXPECT_NE(refused(R"({ name = "j", type = "jsonb", default = "{" })").find("\"{\" is not JSON"), std::string::npos);
}

}  // namespace
}  // namespace evpipe::stages::route

namespace evpipe::stages::route {
namespace {

// The shipped AutoCore example loads, compiles, and routes the seed's topics.
// Which upsert routes need no evpipe_route_keys row: two messages the route
// calls the same must carry the same key and order_by values.
TEST(RouteSet, SelfIdempotentUpserts) {
  auto one = [](const std::string& extra) {
    std::string toml = R"(
[[routes]]
name = "s"
topics = ["d/+/status"]
envelope = "none"
table = "devices"
mode = "upsert"
key = ["device_id"]
columns = [
  { name = "device_id", source = "topic[1]", type = "text" },
  { name = "seq", type = "int8", required = true },
  { name = "last_seen", source = "timestamp", type = "timestamptz", required = true },
  { name = "seen_at", source = "received_at", type = "timestamptz" },
]
)" + extra;
    return route_set(routes_of(toml)).at(0).self_idempotent;
  };
  EXPECT_TRUE(one("order_by = \"last_seen\"\nidempotency = [\"device_id\", \"last_seen\"]\n"));
  EXPECT_TRUE(one("order_by = \"last_seen\"\nidempotency = [\"last_seen\", \"seq\", \"device_id\"]\n"));
  EXPECT_FALSE(one("idempotency = [\"device_id\", \"last_seen\"]\n")) << "no order_by: the last message wins";
  EXPECT_FALSE(one("order_by = \"last_seen\"\nidempotency = [\"device_id\", \"seq\"]\n"))
      << "equal identities may differ in order_by";
  EXPECT_FALSE(one("order_by = \"seen_at\"\nidempotency = [\"device_id\", \"last_seen\"]\n"))
      << "received_at differs on a redelivery";
  EXPECT_TRUE(one("order_by = \"last_seen\"\n")) << "the digest is of the topic and the bytes: it fixes the key too";
}

TEST(RouteSet, KeyAndIdentityPositionsAscend) {
  route_set rs(routes_of(R"(
[[routes]]
name = "r"
topics = ["t"]
envelope = "none"
table = "t"
mode = "upsert"
key = ["b", "a"]
idempotency = ["c", "a"]
columns = [
  { name = "a", type = "text", required = true },
  { name = "b", type = "text", required = true },
  { name = "c", type = "int8", required = true },
]
)"));
  EXPECT_EQ(rs.at(0).key_columns, (std::vector<uint16_t>{0, 1}));
  EXPECT_EQ(rs.at(0).identity_columns, (std::vector<uint16_t>{0, 2}));
}

TEST(RouteSet, AutoCoreExample) {
  auto s = config::load_file(std::string(EVPIPE_SOURCE_DIR) + "/config/examples/autocore.toml");
  route_set rs(s.routes);
  ASSERT_EQ(s.mqtt_sources.size(), 1u);
  EXPECT_EQ(s.mqtt_sources[0].topics.size(), 5u);
  auto first = [&](std::string_view topic) {
    std::array<uint16_t, route_set::max_routes_per_message> out{};
    size_t n = rs.match(topic, "", false, out);
    return n == 0 ? std::string("-") : rs.at(out[0]).cfg.name;
  };
  EXPECT_EQ(first("autocore/ESP32_001/status"), "device_status");
  EXPECT_EQ(first("autocore/ESP32_001/telemetry"), "telemetry");
  EXPECT_EQ(first("autocore/ESP32_001/relay/0/status"), "relay_events");
  {
    std::array<uint16_t, route_set::max_routes_per_message> out{};
    ASSERT_EQ(rs.match("autocore/ESP32_001/relay/0/status", "", false, out), 2u) << "relay_events says also";
    EXPECT_EQ(rs.at(out[1]).cfg.name, "relays");
  }
  EXPECT_EQ(first("autocore/ESP32_001/display/interaction"), "display_interactions");
  EXPECT_EQ(first("autocore/ESP32_001/system/boot"), "system");
  EXPECT_EQ(first("autocore/ESP32_001/other"), "-");
  for (const auto& topic : s.mqtt_sources[0].topics) {
    bool routed = false;
    for (size_t i = 0; i < rs.size(); ++i) {
      for (const auto& f : rs.at(i).cfg.topics) routed |= f == topic;
    }
    EXPECT_TRUE(routed) << topic << " is subscribed but no route takes it";
  }
}

}  // namespace
}  // namespace evpipe::stages::route
