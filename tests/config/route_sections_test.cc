// [[routes]]: what loads, what is refused (each message names the route and
// the key), and check-config's round trip.
#include <gtest/gtest.h>

#include "tests/support/config_error.h"
#include "config/config.h"

namespace evpipe::config {
namespace {

using evpipe::testing::config_error_of;

constexpr const char* status_route = R"(
[[routes]]
name = "device_status"
topics = ["autocore/+/status"]
envelope = "none"
table = "devices"
mode = "upsert"
key = ["device_id"]
order_by = "last_seen"
idempotency = ["device_id", "last_seen"]
columns = [
  { name = "device_id", source = "topic[1]", type = "text" },
  { name = "is_online", source = "online", type = "bool", default = true },
  { name = "last_seen", source = "timestamp", type = "timestamptz", required = true },
  { name = "ip_address", source = "net.ip", type = "text" },
  { name = "uptime", type = "int8", default = 0 },
  { name = "load", source = "cpu.load[0]", type = "float8", default = 0.5 },
  { name = "received", source = "received_at", type = "timestamptz" },
  { name = "raw", source = "message", type = "jsonb" },
]
)";

TEST(RouteConfig, ReadsEveryKey) {
  auto s = load_string(status_route);
  ASSERT_EQ(s.routes.size(), 1u);
  const route& r = s.routes[0];
  EXPECT_EQ(r.name, "device_status");
  EXPECT_FALSE(r.envelope_standard);
  EXPECT_TRUE(r.upsert);
  EXPECT_EQ(r.table, "devices");
  EXPECT_EQ(r.key, std::vector<std::string>{"device_id"});
  EXPECT_EQ(r.order_by, "last_seen");
  EXPECT_EQ(r.idempotency, (std::vector<std::string>{"device_id", "last_seen"}));
  EXPECT_FALSE(r.idempotency_digest);
  ASSERT_EQ(r.columns.size(), 8u);
  EXPECT_EQ(r.columns[0].source, column_source::topic_segment);
  EXPECT_EQ(r.columns[0].segment, 1u);
  EXPECT_TRUE(r.columns[1].has_default);
  EXPECT_EQ(r.columns[1].default_text, "true");
  EXPECT_EQ(r.columns[1].type, column_type::boolean);
  EXPECT_TRUE(r.columns[2].required);
  EXPECT_EQ(r.columns[3].path, (std::vector<std::string>{"net", "ip"}));
  EXPECT_EQ(r.columns[4].source_text, "uptime") << "source defaults to the column's name";
  EXPECT_EQ(r.columns[4].default_text, "0");
  EXPECT_EQ(r.columns[5].path, (std::vector<std::string>{"cpu", "load", "[0]"}));
  EXPECT_EQ(r.columns[6].source, column_source::received_at);
  EXPECT_EQ(r.columns[7].source, column_source::message);
}

TEST(RouteConfig, Defaults) {
  auto s = load_string(R"(
[[routes]]
topics = ["a/#"]
table = "t"
columns = [{ name = "x", source = "payload.x", type = "int4" }]
[[routes]]
topics = ["b/#"]
envelope = "none"
also = true
table = "u"
columns = [{ name = "x", type = "text" }]
)");
  ASSERT_EQ(s.routes.size(), 2u);
  EXPECT_EQ(s.routes[0].name, "route 1");
  EXPECT_TRUE(s.routes[0].envelope_standard);
  EXPECT_FALSE(s.routes[0].upsert);
  EXPECT_FALSE(s.routes[0].also);
  EXPECT_FALSE(s.routes[0].idempotency_digest) << "the envelope's idempotency_key identifies it";
  EXPECT_TRUE(s.routes[1].also);
  EXPECT_TRUE(s.routes[1].idempotency_digest) << "no envelope, no idempotency given: the bytes identify it";
}

TEST(RouteConfig, MirrorOnlyRouteNeedsNoTable) {
  auto s = load_string(R"(
[[routes]]
name = "system"
topics = ["autocore/+/system/+"]
envelope = "none"
mirror = true
)");
  ASSERT_EQ(s.routes.size(), 1u);
  EXPECT_TRUE(s.routes[0].mirror);
  EXPECT_TRUE(s.routes[0].table.empty());
}

TEST(RouteConfig, RoundTripsThroughCheckConfig) {
  auto s = load_string(status_route);
  auto again = load_string(to_toml(s), "round-trip");
  ASSERT_EQ(again.routes.size(), 1u);
  const route& a = s.routes[0];
  const route& b = again.routes[0];
  EXPECT_EQ(b.name, a.name);
  EXPECT_EQ(b.topics, a.topics);
  EXPECT_EQ(b.key, a.key);
  EXPECT_EQ(b.order_by, a.order_by);
  EXPECT_EQ(b.idempotency, a.idempotency);
  ASSERT_EQ(b.columns.size(), a.columns.size());
  for (size_t i = 0; i < a.columns.size(); ++i) {
    EXPECT_EQ(b.columns[i].name, a.columns[i].name);
    EXPECT_EQ(b.columns[i].source_text, a.columns[i].source_text);
    EXPECT_EQ(b.columns[i].type, a.columns[i].type);
    EXPECT_EQ(b.columns[i].required, a.columns[i].required);
    EXPECT_EQ(b.columns[i].default_text, a.columns[i].default_text) << a.columns[i].name;
  }
}

struct bad_case {
  const char* toml;
  const char* expect;  // part of the message
};

TEST(RouteConfig, RefusesWithTheRouteAndTheKey) {
  const std::string head = "[[routes]]\nname = \"r\"\n";
  const bad_case cases[] = {
      {"table = \"t\"\n", "[[routes]] \"r\" topics: a route needs topics"},
      {"topics = [\"a/#/b\"]\ntable = \"t\"\n", "\"r\" topics: \"a/#/b\" is not a valid MQTT topic filter"},
      {"topics = [\"a\"]\nenvelope = \"bare\"\n", "\"r\" envelope: must be \"standard\" or \"none\""},
      {"kinds = [\"k\"]\nenvelope = \"none\"\ntable = \"t\"\n", "\"r\" kinds: a route with envelope = \"none\""},
      {"topics = [\"a\"]\n", "\"r\" table: is required"},
      {"topics = [\"a\"]\ntable = \"Bad-Name\"\n", "\"r\" table: \"Bad-Name\" must be a lowercase identifier"},
      {"topics = [\"a\"]\ntable = \"t\"\n", "\"r\" columns: a route with a table needs at least one column"},
      {"topics = [\"a\"]\ntable = \"t\"\ncolumns = [{ name = \"x\", type = \"money\" }]\n",
       "\"r\" columns #1 type: \"money\" is not one of"},
      {"topics = [\"a\"]\ntable = \"t\"\ncolumns = [{ name = \"x\", source = \"a..b\", type = \"text\" }]\n",
       "\"r\" columns #1 source: \"a..b\" is not a source"},
      {"topics = [\"a\"]\ntable = \"t\"\ncolumns = [{ name = \"x\", source = \"a[x]\", type = \"text\" }]\n",
       "columns #1 source"},
      {"topics = [\"a\"]\ntable = \"t\"\ncolumns = [{ name = \"x\", source = \"received_at\", type = \"text\" }]\n",
       "columns #1 type: source \"received_at\" needs type timestamptz"},
      {"topics = [\"a\"]\ntable = \"t\"\ncolumns = [{ name = \"x\", type = \"int4\", default = 1.5 }]\n",
       "columns #1 default: must be an integer for a int4 column"},
      {"topics = [\"a\"]\ntable = \"t\"\ncolumns = [{ name = \"x\", type = \"int4\", default = 3000000000 }]\n",
       "columns #1 default: is out of range for int4"},
      {"topics = [\"a\"]\ntable = \"t\"\ncolumns = [{ name = \"x\", type = \"float8\", default = nan }]\n",
       "columns #1 default: must be finite"},
      {"topics = [\"a\"]\ntable = \"t\"\ncolumns = [{ name = \"x\", type = \"int4\", required = true, default = 1 }]\n",
       "columns #1 default: a required column has no default"},
      {"topics = [\"a\"]\ntable = \"t\"\ncolumns = [{ name = \"x\", type = \"int4\", colour = 1 }]\n",
       "columns #1 colour: unknown key"},
      {"topics = [\"a\"]\ntable = \"t\"\ncolumns = [{ name = \"x\", type = \"int4\" }, { name = \"x\", type = \"text\" }]\n",
       "\"r\" columns: column \"x\" is listed twice"},
      {"topics = [\"a\"]\ntable = \"t\"\nmode = \"merge\"\n" "columns = [{ name = \"x\", type = \"int4\" }]\n",
       "\"r\" mode: must be \"append\" or \"upsert\""},
      {"topics = [\"a\"]\ntable = \"t\"\nmode = \"upsert\"\n" "columns = [{ name = \"x\", type = \"int4\" }]\n",
       "\"r\" key: mode = \"upsert\" needs key"},
      {"topics = [\"a\"]\ntable = \"t\"\nmode = \"upsert\"\nkey = [\"y\"]\n"
       "columns = [{ name = \"x\", type = \"int4\", required = true }]\n",
       "\"r\" key: \"y\" is not one of the route's columns"},
      {"topics = [\"a\"]\ntable = \"t\"\nmode = \"upsert\"\nkey = [\"x\"]\n"
       "columns = [{ name = \"x\", type = \"int4\" }]\n",
       "\"r\" key: key column \"x\" must be required or have a default"},
      {"topics = [\"a\"]\ntable = \"t\"\nmode = \"upsert\"\nkey = [\"x\"]\norder_by = \"z\"\n"
       "columns = [{ name = \"x\", type = \"int4\", required = true }]\n",
       "\"r\" order_by: \"z\" is not one of the route's columns"},
      {"topics = [\"a\"]\ntable = \"t\"\nkey = [\"x\"]\n" "columns = [{ name = \"x\", type = \"int4\" }]\n",
       "\"r\" key: is for mode = \"upsert\""},
      {"topics = [\"a\"]\ntable = \"t\"\nidempotency = \"digest\"\n" "columns = [{ name = \"x\", type = \"int4\" }]\n",
       "\"r\" idempotency: a route with the standard envelope uses its idempotency_key"},
      {"topics = [\"a\"]\nenvelope = \"none\"\ntable = \"t\"\nidempotency = \"hash\"\n"
       "columns = [{ name = \"x\", type = \"int4\" }]\n",
       "\"r\" idempotency: must be \"digest\" or a list of columns"},
      {"topics = [\"a\"]\nenvelope = \"none\"\ntable = \"t\"\nidempotency = [\"q\"]\n"
       "columns = [{ name = \"x\", type = \"int4\" }]\n",
       "\"r\" idempotency: \"q\" is not one of the route's columns"},
      {"topics = [\"a\"]\nenvelope = \"none\"\ntable = \"t\"\nidempotency = [\"w\"]\n"
       "columns = [{ name = \"w\", source = \"received_at\", type = \"timestamptz\" }]\n",
       "\"r\" idempotency: \"w\" is the receive time"},
      {"topics = [\"a\"]\ntable = \"t\"\nwhatever = 1\n", "\"r\" whatever: unknown key"},
  };
  for (const auto& c : cases) {
    std::string toml = head + c.toml;
    std::string e = config_error_of(toml);
    EXPECT_NE(e.find(c.expect), std::string::npos) << "config:\n" << toml << "\nerror: " << e;
    EXPECT_EQ(e.rfind("test.toml: ", 0), 0u) << e;
  }
}

TEST(RouteConfig, NamesMustDiffer) {
  std::string r = "[[routes]]\nname = \"same\"\ntopics = [\"a\"]\ntable = \"t\"\n"
                  "columns = [{ name = \"x\", type = \"int4\" }]\n";
  EXPECT_NE(config_error_of(r + r).find("[[routes]] \"same\" name: \"same\" names an earlier route too"), std::string::npos)
      << config_error_of(r + r);
}

TEST(RouteConfig, MustBeAnArrayOfTables) {
  EXPECT_NE(config_error_of("routes = 3\n").find("routes must be written [[routes]]"), std::string::npos);
}

}  // namespace
// partition_by (docs/partitions.md, "Route tables"): an append route's
// timestamptz column that is never NULL, with [storage] partition set.
TEST(RouteConfig, PartitionByNamesANeverNullTimestamptzColumn) {
  const std::string storage = "[storage]\npartition = \"day\"\n";
  auto route = [](const std::string& partition_by, const std::string& extra_column = "",
                  const std::string& mode = "") {
    return "[[routes]]\nname = \"t\"\ntopics = [\"a/#\"]\nenvelope = \"none\"\ntable = \"t\"\n" + mode +
           "partition_by = \"" + partition_by + "\"\ncolumns = [\n"
           "  { name = \"device_id\", type = \"text\", required = true },\n"
           "  { name = \"at\", source = \"timestamp\", type = \"timestamptz\", required = true },\n"
           "  { name = \"maybe\", type = \"timestamptz\" },\n"
           "  { name = \"seen\", source = \"received_at\", type = \"timestamptz\" },\n" + extra_column + "]\n";
  };
  auto s = load_string(storage + route("at"));
  EXPECT_EQ(s.routes.at(0).partition_by, "at");
  EXPECT_EQ(load_string(to_toml(s), "round-trip").routes, s.routes);
  EXPECT_EQ(load_string(storage + route("seen")).routes.at(0).partition_by, "seen");
  const std::pair<std::string, std::string> refused[] = {
      {storage + route("nope"), "[[routes]] \"t\" partition_by: \"nope\" is not one of the route's columns"},
      {storage + route("device_id"), "partition_by: \"device_id\" must be a timestamptz column, not text"},
      {storage + route("maybe"), "partition_by: column \"maybe\" must be required, have a default or be received_at"},
      {storage + route("at", "", "mode = \"upsert\"\nkey = [\"device_id\"]\n"), "partition_by: is for mode = \"append\""},
      {route("at"), "[[routes]] \"t\" partition_by: needs [storage] partition = \"day\", \"week\" or \"month\""},
  };
  for (const auto& [toml, want] : refused) {
    const std::string e = config_error_of(toml);
    EXPECT_NE(e.find(want), std::string::npos) << "want: " << want << "\ngot: " << e;
  }
}

}  // namespace evpipe::config
