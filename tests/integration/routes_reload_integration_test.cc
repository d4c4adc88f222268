// SIGHUP reloads [[routes]] (issue 15, docs/routes.md "Reload"): a route
// added by a reload fills its table (once evpipe_route_keys is migrated), a
// route's table changes, a removed route's messages go where the config then
// says (events_mirror, or the DLQ for bare JSON), routes that fail to load,
// compile or pass the database checks leave the running ones in place, and
// under load ten reloads that change routes lose and duplicate nothing. The
// producers' connections stay open throughout. The evpipe binary runs as a
// child process against the PostgreSQL that scripts/test.sh starts.

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "tests/support/closed_loop_producer.h"
#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Envelopes arrive on `port` (topic lab/events), bare device JSON on `devices` (topic dev/telemetry).
std::string base_config(const test_db& db, uint16_t port, uint16_t devices, uint16_t http) {
  return "[pipeline]\nshards = 2\nshutdown_timeout_ms = 8000\n"
         "[batch]\nmax_rows = 256\nlinger_ms = 5\n"
         "[postgres]\ndsn = \"" + db.dsn() + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
         "[http]\nlisten = \"127.0.0.1:" + std::to_string(http) + "\"\n"
         "[log]\nlevel = \"info\"\n"
         "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\ntopic = \"lab/events\"\n"
         "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(devices) + "\"\ntopic = \"dev/telemetry\"\n";
}

// The envelopes of kind project_created (valid_event) into `table`.
std::string projects_route(const std::string& table, bool mirror = false, const std::string& body_type = "text") {
  return "[[routes]]\nname = \"projects\"\nkinds = [\"project_created\"]\ntable = \"" + table + "\"\n" +
         (mirror ? "mirror = true\n" : "") +
         "columns = [\n"
         "  { name = \"k\", source = \"idempotency_key\", type = \"text\", required = true },\n"
         "  { name = \"body\", source = \"payload.text\", type = \"" + body_type + "\" },\n"
         "]\n";
}

// Bare device JSON on dev/telemetry into `table`.
std::string telemetry_route(const std::string& table) {
  return "[[routes]]\nname = \"telemetry\"\ntopics = [\"dev/telemetry\"]\nenvelope = \"none\"\ntable = \"" + table +
         "\"\nidempotency = [\"device_id\", \"ts\"]\ncolumns = [\n"
         "  { name = \"device_id\", type = \"text\", required = true },\n"
         "  { name = \"ts\", source = \"timestamp\", type = \"timestamptz\", required = true },\n"
         "]\n";
}

std::string device(const std::string& id, int second) {
  return "{\"device_id\":\"" + id + "\",\"timestamp\":\"2025-01-28T10:30:" + (second < 10 ? "0" : "") +
         std::to_string(second) + "Z\"}";
}

const char* tables = R"(
CREATE TABLE pa (k text NOT NULL, body text);
CREATE TABLE pb (k text NOT NULL, body text);
CREATE TABLE tele (device_id text NOT NULL, ts timestamptz NOT NULL);
)";

class RoutesReload : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
  }
  // Writes `text`, sends SIGHUP and waits for the reload's last line.
  void reload(evpipe_process& evp, const std::string& text) {
    evp.write_config(text);
    evp.kill(SIGHUP);
    ++reloads_;
    ASSERT_TRUE(eventually([&] {
      std::string log = evp.log();
      return count_of(log, "reload done") + count_of(log, "reload failed") == reloads_;
    }, 60s)) << evp.log();
  }
  // One event on an open connection, acked.
  static void send(ndjson_client& c, uint64_t& sent, const std::string& line) {
    c.send_all(line + "\n");
    ++sent;
    ASSERT_EQ(c.read_acks_until(sent, 30s), sent);
  }
  long rows_of(const std::string& table, const std::string& key) {
    return db.count("SELECT count(*) FROM " + table + " WHERE k = '" + key + "'");
  }
  long mirrored(const std::string& key) {
    return db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = '" + key + "'");
  }
  test_db db;
  size_t reloads_ = 0;
};

// Started without routes, evpipe_route_keys was never migrated: a reload
// that adds a route is refused with the migrate hint and changes nothing;
// after `evpipe migrate` the same reload applies and the route fills its
// table, on the connection that was open all along.
TEST_F(RoutesReload, ARouteAddedByReloadFillsItsTable) {
  uint16_t port = free_port(), devices = free_port(), http = free_port();
  const std::string base = base_config(db, port, devices, http);
  evpipe_process evp(base, "routes_reload_add");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(tables);
  evp.start(port);
  ndjson_client c(port);
  uint64_t sent = 0;
  send(c, sent, valid_event("add-0"));

  reload(evp, base + projects_route("pa"));
  EXPECT_TRUE(evp.log_has("evpipe_route_keys does not exist: run `evpipe migrate")) << evp.log();
  send(c, sent, valid_event("add-1"));
  EXPECT_EQ(mirrored("add-1"), 1) << "refused routes change nothing";

  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");  // the new config has routes
  reload(evp, base + projects_route("pa"));
  EXPECT_TRUE(evp.log_has("reload: routes: 1 from the next read on: projects")) << evp.log();
  send(c, sent, valid_event("add-2", "second"));
  EXPECT_EQ(rows_of("pa", "add-2"), 1) << evp.log();
  EXPECT_EQ(mirrored("add-2"), 0) << "a route without mirror keeps no events_mirror row";
  EXPECT_EQ(db.column("SELECT body FROM pa"), std::vector<std::string>{"second"});
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 2);
  EXPECT_FALSE(c.closed());

  std::string metrics = http_get(http, "/metrics");
  EXPECT_EQ(metric_value(metrics, "evpipe_config_reloads_total{result=\"failure\"}"), 1) << metrics;
  EXPECT_EQ(metric_value(metrics, "evpipe_config_reloads_total{result=\"success\"}"), 1) << metrics;
  EXPECT_EQ(metric_value(metrics, "evpipe_route_rows_appended_total{route=\"projects\"}"), 1) << metrics;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// A route's table changes, then both routes go: envelopes the route took
// are mirrored again, bare device JSON meets the envelope rules and is
// dead-lettered. The same two connections throughout.
TEST_F(RoutesReload, ARouteChangesItsTableAndRemovedRoutesSendMessagesWhereTheConfigSays) {
  uint16_t port = free_port(), devices = free_port(), http = free_port();
  const std::string base = base_config(db, port, devices, http);
  evpipe_process evp(base + projects_route("pa") + telemetry_route("tele"), "routes_reload_change");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(tables);
  evp.start(port);
  ndjson_client c(port), d(devices);
  uint64_t sent = 0, dsent = 0;
  send(c, sent, valid_event("chg-0"));
  send(d, dsent, device("D1", 0));
  EXPECT_EQ(rows_of("pa", "chg-0"), 1) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM tele WHERE device_id = 'D1'"), 1);

  reload(evp, base + projects_route("pb") + telemetry_route("tele"));
  send(c, sent, valid_event("chg-1"));
  send(d, dsent, device("D1", 1));
  EXPECT_EQ(rows_of("pb", "chg-1"), 1) << evp.log();
  EXPECT_EQ(rows_of("pa", "chg-1"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM tele WHERE device_id = 'D1'"), 2);

  reload(evp, base);  // no routes
  EXPECT_TRUE(evp.log_has("reload: routes: 0 from the next read on")) << evp.log();
  send(c, sent, valid_event("chg-2"));
  send(d, dsent, device("D1", 2));
  EXPECT_EQ(mirrored("chg-2"), 1) << evp.log();
  EXPECT_EQ(rows_of("pa", "chg-2") + rows_of("pb", "chg-2"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM tele"), 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'missing_field' AND "
                     "original_topic = 'dev/telemetry' AND payload->>'device_id' = 'D1'"),
            1)
      << "bare JSON without its route is no envelope";
  EXPECT_EQ(mirrored("chg-0") + mirrored("chg-1"), 0);
  EXPECT_FALSE(c.closed());
  EXPECT_FALSE(d.closed());
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// Routes that do not load (TOML), do not compile (a jsonb default that is
// no JSON), name a table that does not exist, or write a type the column
// does not hold: each reload logs why and the running routes stay. A valid
// reload afterwards applies.
TEST_F(RoutesReload, RoutesThatFailToLoadOrCheckLeaveTheRunningOnes) {
  uint16_t port = free_port(), devices = free_port(), http = free_port();
  const std::string base = base_config(db, port, devices, http);
  evpipe_process evp(base + projects_route("pa"), "routes_reload_invalid");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(tables);
  evp.start(port);
  ndjson_client c(port);
  uint64_t sent = 0;

  struct attempt {
    std::string config, logged;
  };
  const std::string bad_default = projects_route("pa");
  std::vector<attempt> attempts = {
      {base + projects_route("pa", false, "int16"), "reload failed, the running configuration stays"},
      {base + "[[routes]]\nname = \"projects\"\nkinds = [\"project_created\"]\ntable = \"pb\"\ncolumns = [\n"
              "  { name = \"k\", source = \"idempotency_key\", type = \"text\" },\n"
              "  { name = \"body\", type = \"jsonb\", default = \"{not json\" },\n]\n",
       "reload: routes unchanged: [[routes]] \"projects\" columns \"body\" default"},
      {base + projects_route("nope"), "reload: routes unchanged: [[routes]] \"projects\" table: \"nope\" does not exist"},
      {base + projects_route("pb", false, "int4"),
       "reload: routes unchanged: [[routes]] \"projects\" columns \"body\": the route writes int4, the column is text"},
  };
  for (size_t i = 0; i < attempts.size(); ++i) {
    reload(evp, attempts[i].config);
    EXPECT_TRUE(evp.log_has(attempts[i].logged)) << i << "\n" << evp.log();
    const std::string key = "bad-" + std::to_string(i);
    send(c, sent, valid_event(key));
    EXPECT_EQ(rows_of("pa", key), 1) << i << "\n" << evp.log();
  }
  reload(evp, base + projects_route("pb"));
  send(c, sent, valid_event("good"));
  EXPECT_EQ(rows_of("pb", "good"), 1) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM pb"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
  EXPECT_FALSE(c.closed());

  std::string metrics = http_get(http, "/metrics");
  EXPECT_EQ(metric_value(metrics, "evpipe_config_reloads_total{result=\"failure\"}"), 4) << metrics;
  EXPECT_EQ(metric_value(metrics, "evpipe_config_reloads_total{result=\"success\"}"), 1) << metrics;
  EXPECT_EQ(metric_value(metrics, "evpipe_config_last_reload_successful"), 1) << metrics;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// Under load, ten reloads move the route between two tables and turn its
// mirror on and off. Every acked key is in exactly one of the tables, once;
// no key has two events_mirror rows; nothing is dead-lettered, and no
// producer lost its connection. Batches open at a reload finish under the
// routes their events were taken with (pipeline/shard.cc), each event once.
TEST_F(RoutesReload, TenReloadsThatChangeRoutesUnderLoadLoseAndDuplicateNothing) {
  uint16_t port = free_port(), devices = free_port(), http = free_port();
  const std::string base = base_config(db, port, devices, http);
  evpipe_process evp(base + projects_route("pa"), "routes_reload_load");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec(tables);
  evp.start(port);
  ASSERT_TRUE(eventually([&] { return http_get(http, "/health/ready").find(" 200 ") != std::string::npos; }, 30s));

  std::vector<std::unique_ptr<producer>> load;
  for (int i = 0; i < 3; ++i) load.push_back(std::make_unique<producer>(port, "rrl" + std::to_string(i), 2'000'000));
  auto acked = [&] {
    long n = 0;
    for (auto& p : load) n += p->acked();
    return n;
  };
  for (int i = 1; i <= 10; ++i) {
    long before = acked();
    reload(evp, base + projects_route(i % 2 ? "pb" : "pa", i % 3 == 0));
    ASSERT_TRUE(eventually([&] { return acked() > before + 300; }, 30s)) << i << "\n" << evp.log();
  }
  for (auto& p : load) p->finish();
  std::string log = evp.log();
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << log;

  EXPECT_EQ(count_of(log, "reload done"), 10u) << log;
  EXPECT_EQ(count_of(log, "reload: routes: 1 from the next read on"), 10u) << log;
  for (auto& p : load) {
    EXPECT_FALSE(p->failed()) << p->run();
    EXPECT_EQ(p->reconnects(), 0) << p->run() << "\n" << log;
    ASSERT_GT(p->acked(), 0) << p->run();
    const std::string acked_keys = "ARRAY(SELECT '" + p->run() + "-' || g FROM generate_series(0, " +
                                   std::to_string(p->acked() - 1) + ") g)";
    const std::string like = "LIKE '" + p->run() + "-%'";
    // Every acked key is stored, in one of the tables; no key is there twice.
    EXPECT_EQ(db.count("SELECT count(DISTINCT k) FROM (SELECT k FROM pa UNION ALL SELECT k FROM pb) t WHERE k = ANY (" +
                       acked_keys + ")"),
              p->acked())
        << p->run();
    EXPECT_EQ(db.count("SELECT count(*) FROM (SELECT k FROM pa UNION ALL SELECT k FROM pb) t WHERE k " + like),
              db.count("SELECT count(DISTINCT k) FROM (SELECT k FROM pa UNION ALL SELECT k FROM pb) t WHERE k " + like))
        << p->run();
    EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key " + like),
              db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror WHERE idempotency_key " + like))
        << p->run();
  }
  // Both tables took rows, and the mirror was on for some of them.
  EXPECT_GT(db.count("SELECT count(*) FROM pa"), 0);
  EXPECT_GT(db.count("SELECT count(*) FROM pb"), 0);
  EXPECT_GT(db.count("SELECT count(*) FROM events_mirror"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
}

}  // namespace
}  // namespace evpipe::testing
