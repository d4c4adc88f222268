// config/reload.cc: what a SIGHUP reload applies live and what it keeps.

#include "config/reload.h"

#include <gtest/gtest.h>

namespace evpipe::config {
namespace {

const char* base = R"(
[pipeline]
shards = 2
[postgres]
dsn = "postgresql://u:secret@db/evpipe"
[[sources.tcp]]
listen = "127.0.0.1:7001"
[[sources.tcp]]
listen = "127.0.0.1:7002"
topic = "b"
)";

TEST(ReloadPlan, UnchangedConfigChangesNothing) {
  auto a = load_string(base), b = load_string(base);
  auto p = plan_reload(a, b);
  EXPECT_FALSE(p.tcp.any() || p.mqtt.any() || p.http.any() || p.batch || p.queue || p.log);
  EXPECT_TRUE(p.kept.empty());
  EXPECT_EQ(p.tcp.keep.size(), 2u);
}

TEST(ReloadPlan, ChangedSourceRestartsAloneAndNewOnesStart) {
  auto a = load_string(base);
  auto b = load_string(std::string(base) + "[[sources.tcp]]\nlisten = \"127.0.0.1:7003\"\n");
  // Source 2 changes its topic: stopped and started again; source 1 stays.
  b.tcp_sources[1].topic = "b2";
  auto p = plan_reload(a, b);
  ASSERT_EQ(p.tcp.keep.size(), 1u);
  EXPECT_EQ(p.tcp.keep[0], std::make_pair(size_t{0}, size_t{0}));
  EXPECT_EQ(p.tcp.stop, std::vector<size_t>{1});
  EXPECT_EQ(p.tcp.start, (std::vector<size_t>{1, 2}));
  EXPECT_EQ(p.effective.tcp_sources.size(), 3u);
}

TEST(ReloadPlan, RemovedSourceStopsEvenWhenListedInAnotherOrder) {
  auto a = load_string(base);
  auto b = load_string(base);
  std::swap(b.tcp_sources[0], b.tcp_sources[1]);
  b.tcp_sources.pop_back();  // the first of the old list goes
  auto p = plan_reload(a, b);
  EXPECT_EQ(p.tcp.stop, std::vector<size_t>{0});
  EXPECT_TRUE(p.tcp.start.empty());
  ASSERT_EQ(p.tcp.keep.size(), 1u);
  EXPECT_EQ(p.tcp.keep[0], std::make_pair(size_t{1}, size_t{0}));
}

TEST(ReloadPlan, ATokenReadFromItsFileChangesTheSource) {
  auto a = load_string(base), b = load_string(base);
  http_source h;
  h.listen = parse_listen("127.0.0.1:8080", "listen");
  h.bearer_token = "one";
  a.http_sources.push_back(h);
  h.bearer_token = "two";
  b.http_sources.push_back(h);
  auto p = plan_reload(a, b);
  EXPECT_EQ(p.http.stop.size(), 1u);
  EXPECT_EQ(p.http.start.size(), 1u);
  EXPECT_TRUE(p.kept.empty());
}

TEST(ReloadPlan, LiveSettingsApplyAndTheOthersAreKeptByName) {
  auto a = load_string(base);
  auto b = load_string(base);
  b.batch.max_rows = 64;
  b.pipeline.queue_capacity = 100;
  b.log.level = "debug";
  b.pipeline.shards = 4;
  b.postgres.dsn = "postgresql://u:other@db2/evpipe";
  b.postgres.schema = "ingest";
  b.events.max_event_bytes = 2048;
  b.events.max_depth = 8;
  b.pipeline.slow_batch_ms = 10;
  auto p = plan_reload(a, b);
  EXPECT_TRUE(p.batch);
  EXPECT_TRUE(p.queue);
  EXPECT_TRUE(p.log);
  EXPECT_TRUE(p.events);
  EXPECT_EQ(p.kept, (std::vector<std::string>{"[pipeline] shards", "[pipeline] slow_batch_ms", "[postgres] dsn",
                                              "[postgres] schema"}));
  // What runs afterwards: the live parts are new, the rest as it was.
  EXPECT_EQ(p.effective.batch.max_rows, 64u);
  EXPECT_EQ(p.effective.pipeline.queue_capacity, 100u);
  EXPECT_EQ(p.effective.log.level, "debug");
  EXPECT_EQ(p.effective.events.max_event_bytes, 2048u);
  EXPECT_EQ(p.effective.events.max_depth, 8u);
  EXPECT_EQ(p.effective.pipeline.shards, 2u);
  EXPECT_EQ(p.effective.postgres.dsn, a.postgres.dsn);
  EXPECT_EQ(p.effective.postgres.schema, "");
  // A kept key never carries its value (the DSN holds a password).
  for (const auto& k : p.kept) EXPECT_EQ(k.find("secret"), std::string::npos);
}

// [[routes]] change live (app/reload.cc compiles, checks and publishes them):
// a changed route sets `routes` and is no "other settings" kept until a
// restart; unchanged routes set nothing.
TEST(ReloadPlan, RoutesChangeLive) {
  const std::string route = "[[routes]]\nname = \"r\"\nkinds = [\"k\"]\ntable = \"t1\"\n"
                            "columns = [ { name = \"a\", source = \"payload.a\", type = \"int4\" } ]\n";
  auto a = load_string(std::string(base) + route);
  auto same = load_string(std::string(base) + route);
  auto p = plan_reload(a, same);
  EXPECT_FALSE(p.routes);
  EXPECT_TRUE(p.kept.empty());
  auto b = load_string(std::string(base) + route);
  b.routes[0].table = "t2";
  p = plan_reload(a, b);
  EXPECT_TRUE(p.routes);
  EXPECT_TRUE(p.kept.empty()) << p.kept.front();
  ASSERT_EQ(p.effective.routes.size(), 1u);
  EXPECT_EQ(p.effective.routes[0].table, "t2");
  auto none = load_string(base);
  p = plan_reload(a, none);
  EXPECT_TRUE(p.routes);
  EXPECT_TRUE(p.effective.routes.empty());
}

// The keys' pruner is started once with its settings: a change waits for a
// restart, named once (not also as "other settings").
TEST(ReloadPlan, RouteKeysRetentionIsKeptByName) {
  auto a = load_string(base);
  auto b = load_string(std::string(base) + "[route_keys]\nretention_s = 60\n");
  auto p = plan_reload(a, b);
  EXPECT_EQ(p.kept, (std::vector<std::string>{"[route_keys]"}));
  EXPECT_EQ(p.effective.route_keys.retention_s, a.route_keys.retention_s);
}

}  // namespace
}  // namespace evpipe::config
