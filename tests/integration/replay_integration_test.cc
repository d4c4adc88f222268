// `evpipe replay` end to end: windows and filters return exactly what the
// reference SQL query returns, in position order; a replay into evpipe's own
// TCP, MQTT (through Mosquitto) or HTTP source stores nothing twice; a replay
// resumed from its printed last position continues exactly where it stopped.

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "tests/integration/replay_run.h"
#include "tests/support/harness.h"
#include "tests/support/mqtt_peer.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {


// The idempotency key of one NDJSON line (jsonb's text: `"key": "value"`).
std::string key_of(const std::string& line) {
  const std::string tag = "\"idempotency_key\": \"";
  auto at = line.find(tag);
  if (at == std::string::npos) return "?";
  at += tag.size();
  return line.substr(at, line.find('"', at) - at);
}
std::vector<std::string> keys_of(const std::vector<std::string>& lines) {
  std::vector<std::string> out;
  for (const auto& l : lines) out.push_back(key_of(l));
  return out;
}
std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class Replay : public TcpPipeline {
 protected:
  void SetUp() override {
    TcpPipeline::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    tcp_port = free_port();
    http_port = free_port();
    evpipe = std::make_unique<evpipe_process>(config_for(db, tcp_port, http_port), "replay");
    ASSERT_EQ(evpipe->run_command("migrate"), 0) << evpipe->log("migrate.log");
    dir = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_replay";
  }
  replay_result replay(const std::string& args) { return run_replay(evpipe_binary(), dir, args); }
  // The reference: the same window in plain SQL, in position order (the
  // tests first wait until the horizon has passed every row).
  std::vector<std::string> reference(const std::string& where) {
    return db.column("SELECT payload->>'idempotency_key' FROM events_mirror WHERE " + where + " ORDER BY tx, id");
  }
  // Restarts the fixture's evpipe with more sources (sections appended to
  // the config).
  void restart_with(const std::string& extra_sources) {
    tuning t;
    t.tcp_extra = extra_sources;
    evpipe = std::make_unique<evpipe_process>(config_for(db, tcp_port, http_port, t), "replay");
  }
  double metric(const std::string& sample) { return metric_value(http_get(http_port, "/metrics"), sample); }
  void insert_rows() {
    // 600 rows over 6 days, 3 topics, 2 kinds, written by 4 transactions.
    for (int part = 0; part < 4; ++part) {
      db.exec("INSERT INTO events_mirror (topic, payload, created_at) SELECT "
              "CASE g % 3 WHEN 0 THEN 'tracker/events/projects/created' WHEN 1 THEN 'tracker/events/tasks/done' "
              "ELSE 'autocore/ESP32_001/telemetry' END, "
              "jsonb_build_object('idempotency_key', 'r-' || g, 'kind', CASE WHEN g % 4 = 0 THEN 'task_done' ELSE "
              "'project_created' END, 'trace_id', '550e8400-e29b-41d4-a716-446655440000', 'ts', '2025-01-15T10:30:00Z', "
              "'payload', jsonb_build_object('n', g, 'text', 'quote \" backslash \\ tab' || chr(9))), "
              "timestamptz '2025-01-01 00:00:00+00' + (g * interval '15 minutes') "
              "FROM generate_series(" + std::to_string(part * 150 + 1) + ", " + std::to_string(part * 150 + 150) + ") g");
    }
    ASSERT_TRUE(eventually([&] { return replay("--no-progress").lines.size() == 600; }));
  }
  uint16_t tcp_port = 0, http_port = 0;
  std::unique_ptr<evpipe_process> evpipe;
  std::string dir;
};

TEST_F(Replay, WindowsAndFiltersReturnExactlyTheReferenceRowsInPositionOrder) {
  insert_rows();
  auto all = replay("");
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_EQ(keys_of(all.lines), reference("true"));
  EXPECT_NE(all.err.find("replay: 600 rows in"), std::string::npos) << all.err;
  for (size_t i = 1; i < all.lines.size(); ++i) ASSERT_LT(all.lines[i - 1], all.lines[i]);  // positions lead each line
  // Every line is the row: position, topic, the stored event.
  EXPECT_EQ(all.lines[0].rfind("{\"position\":\"1-", 0), 0u) << all.lines[0];

  struct window_case {
    std::string args, where;
  };
  std::string p100 = all.lines[99].substr(13, 34), p400 = all.lines[399].substr(13, 34);
  std::vector<window_case> cases = {
      {"--since 2025-01-02T00:00:00Z --until 2025-01-03T12:00:00Z",
       "created_at >= '2025-01-02T00:00:00Z' AND created_at < '2025-01-03T12:00:00Z'"},
      {"--topic 'tracker/events/#'", "topic LIKE 'tracker/events/%'"},
      {"--topic 'tracker/+/tasks/done' --topic 'autocore/ESP32_001/telemetry'",
       "topic IN ('tracker/events/tasks/done', 'autocore/ESP32_001/telemetry')"},
      {"--kind task_done", "payload->>'kind' = 'task_done'"},
      {"--kind task_done --topic '+/+/+/created' --since 2025-01-03T00:00:00+02:00",
       "payload->>'kind' = 'task_done' AND topic = 'tracker/events/projects/created' AND created_at >= "
       "'2025-01-03T00:00:00+02:00'"},
      {"--since " + p100 + " --until " + p400, "(tx, id) > (SELECT tx, id FROM events_mirror WHERE payload->>'idempotency_key' = '" +
                                                    key_of(all.lines[99]) + "') AND (tx, id) <= (SELECT tx, id FROM events_mirror WHERE payload->>'idempotency_key' = '" +
                                                    key_of(all.lines[399]) + "')"},
      {"--topic nothing/here", "false"},
      {"--topic 'tracker/+/done'", "false"},  // '+' is one level: tasks/done is two
  };
  for (const auto& c : cases) {
    auto r = replay(c.args);
    ASSERT_EQ(r.exit_code, 0) << c.args << ": " << r.err;
    EXPECT_EQ(keys_of(r.lines), reference(c.where)) << c.args;
  }
  EXPECT_EQ(replay("--since " + p100 + " --until " + p400).lines.size(), 300u);
}

TEST_F(Replay, BadOptionsAreRefusedWithTheReason) {
  auto r = replay("--since yesterday-ish");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("neither a position"), std::string::npos) << r.err;
  // A well-formed position no transaction of this database has had.
  r = replay("--since 1-7fffffffffffff000000000000000001");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown position"), std::string::npos) << r.err;
  r = replay("--topic 'a/#/b'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'#' must be"), std::string::npos) << r.err;
  r = replay("--to udp://127.0.0.1:1");
  EXPECT_EQ(r.exit_code, 2);
  r = replay("--to tcp://127.0.0.1:" + std::to_string(free_port()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot connect"), std::string::npos) << r.err;
  r = replay("--to mqtt://127.0.0.1:1883/replayed/#");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("wildcards"), std::string::npos) << r.err;
  r = replay("--to http://127.0.0.1:" + std::to_string(free_port()) + "/v1/events");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot connect"), std::string::npos) << r.err;
}

// Replaying a pipeline's own rows back into its TCP source: every event is
// acknowledged as a duplicate, 0 rows are added, and the printed position is
// the last acknowledged event.
TEST_F(Replay, IntoTheOwnTcpSourceAddsNoRows) {
  evpipe->start(tcp_port);
  {
    ndjson_client producer(tcp_port);
    std::string data;
    for (int i = 0; i < 2000; ++i) {
      data += valid_event("tcp-" + std::to_string(i), "t",
                          i % 2 ? ",\"topic\":\"tracker/events/own\"" : "") + "\n";
    }
    producer.send_all(data);
    ASSERT_EQ(producer.read_acks_until(2000, 60s), 2000u);
  }
  // Rows another writer stored under a topic their events do not carry.
  db.exec("INSERT INTO events_mirror (topic, payload) SELECT 'autocore/dev/telemetry', "
          "jsonb_build_object('idempotency_key', 'mqtt-' || g, 'kind', 'telemetry', 'trace_id', "
          "'550e8400-e29b-41d4-a716-446655440000', 'ts', '2025-01-15T10:30:00Z', 'payload', '{}'::jsonb) "
          "FROM generate_series(1, 500) g");
  long before = db.count("SELECT count(*) FROM events_mirror");
  ASSERT_EQ(before, 2500);
  ASSERT_TRUE(eventually([&] { return replay("--no-progress").lines.size() == 2500; }));
  auto all = replay("--no-progress");
  auto r = replay("--to tcp://127.0.0.1:" + std::to_string(tcp_port));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.lines.empty());
  EXPECT_EQ(r.last_position, all.lines.back().substr(13, 34));
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), before);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
  // Each replayed event kept its topic: no row moved to the source's default.
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic = 'autocore/dev/telemetry'"), 500);
}

// A window that starts at a time, resumed: --since given twice (the printed
// position and the time) keeps the start time, so rows created before it
// that committed after the position (here another writer's backfill) stay
// out, as they were out of the first run.
TEST_F(Replay, ResumingATimeWindowKeepsItsStartTime) {
  insert_rows();
  const std::string t = "2025-01-03T00:00:00Z";
  auto first = replay("--no-progress --since " + t + " --max-rows 100");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_EQ(first.lines.size(), 100u);
  const std::string p = first.last_position;
  EXPECT_NE(first.err.find("resume this window with: --since " + p + " --since '" + t + "'"), std::string::npos)
      << first.err;
  // Another writer, after the first run: rows created before the window.
  db.exec("INSERT INTO events_mirror (topic, payload, created_at) SELECT 'backfill', jsonb_build_object("
          "'idempotency_key', 'late-' || g, 'kind', 'project_created', 'trace_id', "
          "'550e8400-e29b-41d4-a716-446655440000', 'ts', '2025-01-15T10:30:00Z', 'payload', '{}'::jsonb), "
          "timestamptz '2025-01-01 01:00:00+00' FROM generate_series(1, 50) g");
  ASSERT_TRUE(eventually([&] { return replay("--no-progress").lines.size() == 650; }));
  auto rest = replay("--no-progress --since " + p + " --since " + t);
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  std::vector<std::string> expected = reference("created_at >= '" + t + "'");
  expected.erase(expected.begin(), expected.begin() + 100);
  EXPECT_EQ(keys_of(rest.lines), expected);
  std::vector<std::string> joined = keys_of(first.lines);
  joined.insert(joined.end(), expected.begin(), expected.end());
  EXPECT_EQ(joined, reference("created_at >= '" + t + "'")) << "the two runs are the window, once";
  // The position alone lets the backfill in: what the time is kept for.
  EXPECT_EQ(replay("--no-progress --since " + p).lines.size(), expected.size() + 50);
  // Either order; but not two of a kind.
  EXPECT_EQ(keys_of(replay("--no-progress --since " + t + " --since " + p).lines), expected);
  auto two_times = replay("--no-progress --since " + t + " --since 2025-01-04T00:00:00Z");
  EXPECT_EQ(two_times.exit_code, 2);
  EXPECT_NE(two_times.err.find("--since twice takes a position and a time, not two times"), std::string::npos)
      << two_times.err;
  auto two_positions = replay("--no-progress --since " + p + " --since " + p);
  EXPECT_EQ(two_positions.exit_code, 2);
  EXPECT_NE(two_positions.err.find("not two positions"), std::string::npos) << two_positions.err;
}

TEST_F(Replay, ResumingFromThePrintedPositionContinuesExactly) {
  insert_rows();
  auto all = replay("--no-progress");
  ASSERT_EQ(all.lines.size(), 600u);
  // In pages: each run stops after 137 rows and prints where it stopped.
  std::vector<std::string> joined;
  std::string since;
  for (int page = 0; page < 10 && joined.size() < 600; ++page) {
    auto r = replay("--no-progress --max-rows 137" + (since.empty() ? "" : " --since " + since));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_FALSE(r.last_position.empty()) << r.err;
    if (!r.lines.empty()) {
      EXPECT_EQ(r.last_position, r.lines.back().substr(13, 34));
    }
    joined.insert(joined.end(), r.lines.begin(), r.lines.end());
    since = r.last_position;
  }
  EXPECT_EQ(joined, all.lines);
  // Nothing after the end; the position stays where it was.
  auto rest = replay("--since " + since);
  EXPECT_TRUE(rest.lines.empty());
  EXPECT_EQ(rest.last_position, since);

  // Interrupted by SIGINT halfway through a slow replay: the printed
  // position is the last line written, and the rest follows from it.
  std::string out = dir + "/slow.out", err = dir + "/slow.err";
  std::string cmd = evpipe_binary() + " replay --config " + dir + "/evpipe.toml --rate 400 >" + out +
                    " 2>" + err + " & echo $! > " + dir + "/slow.pid; wait";
  std::thread runner([&] { (void)std::system(cmd.c_str()); });
  ASSERT_TRUE(eventually([&] { return read_text(out).size() > 20000; }, 30s));
  ::kill(std::stoi(read_text(dir + "/slow.pid")), SIGINT);
  runner.join();
  std::istringstream lines(read_text(out));
  std::vector<std::string> first;
  for (std::string l; std::getline(lines, l);) first.push_back(l);
  std::string e = read_text(err);
  auto at = e.find("last position: ");
  ASSERT_NE(at, std::string::npos) << e;
  std::string stopped = e.substr(at + 15, 34);
  ASSERT_FALSE(first.empty());
  ASSERT_LT(first.size(), 600u);
  EXPECT_EQ(stopped, first.back().substr(13, 34));
  auto second = replay("--no-progress --since " + stopped);
  first.insert(first.end(), second.lines.begin(), second.lines.end());
  EXPECT_EQ(first, all.lines);
}

// Into evpipe's own MQTT source through Mosquitto: each event is published
// at QoS 1 on its row's topic, evpipe reads every one of them, and stores
// none (each keeps its idempotency_key). The printed position is the last
// event the broker acknowledged.
TEST_F(Replay, IntoTheOwnMqttSourceThroughMosquittoAddsNoRows) {
  if (::access(env_or("EVPIPE_TEST_MOSQUITTO", "/usr/sbin/mosquitto").c_str(), X_OK) != 0) {
    if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "mosquitto is not installed";
    GTEST_SKIP() << "mosquitto is not installed (scripts/test.sh installs it)";
  }
  mosquitto_broker broker("replay");
  restart_with("[[sources.mqtt]]\nurl = \"" + broker.url() +
               "\"\nclient_id = \"evpipe-replay-it\"\ntopics = [\"tracker/events/#\", \"autocore/+/telemetry\"]\n"
               "base_ms = 50\nmax_ms = 500\n");
  insert_rows();
  auto all = replay("--no-progress");
  evpipe->start(tcp_port);
  ASSERT_TRUE(eventually([&] { return broker.subscriptions("evpipe-replay-it", "autocore/+/telemetry") >= 1; }))
      << broker.log();
  long before = db.count("SELECT count(*) FROM events_mirror");
  auto r = replay("--to mqtt://127.0.0.1:" + std::to_string(broker.port()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.lines.empty());
  EXPECT_EQ(r.last_position, all.lines.back().substr(13, 34)) << r.err;
  // evpipe read all 600 and settled them (PUBACKed after their outcome).
  ASSERT_TRUE(eventually([&] {
    return metric("taylor_events_received_total{source=\"mqtt\"}") >= 600 &&
           metric("taylor_unacked_events{source=\"mqtt\"}") == 0;
  }, 60s)) << evpipe->log();
  EXPECT_EQ(metric("taylor_events_received_total{source=\"mqtt\"}"), 600);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), before);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);

  // In two pages, the second resumed from the position the first printed:
  // each ends exactly at its last row, and evpipe reads each event once more.
  auto first = replay("--no-progress --max-rows 250 --to mqtt://127.0.0.1:" + std::to_string(broker.port()));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_EQ(first.last_position, all.lines[249].substr(13, 34));
  auto second = replay("--no-progress --to mqtt://127.0.0.1:" + std::to_string(broker.port()) + " --since " +
                       first.last_position);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(second.last_position, all.lines.back().substr(13, 34));
  ASSERT_TRUE(eventually([&] {
    return metric("taylor_events_received_total{source=\"mqtt\"}") >= 1200 &&
           metric("taylor_unacked_events{source=\"mqtt\"}") == 0;
  }, 60s)) << evpipe->log();
  EXPECT_EQ(metric("taylor_events_received_total{source=\"mqtt\"}"), 1200);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), before);
}

// Into evpipe's own HTTP source: POSTs of NDJSON, each answered after its
// events' commit; 0 rows added. In pages of --max-rows 250, each resumed
// from the position the one before printed, the positions advance exactly
// row by row as the stdout replay lists them.
TEST_F(Replay, IntoTheOwnHttpSourceAddsNoRowsAndResumesExactly) {
  uint16_t source_port = free_port();
  restart_with("[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(source_port) +
               "\"\ntopic = \"tracker/events/http\"\n");
  insert_rows();
  auto all = replay("--no-progress");
  ASSERT_EQ(all.lines.size(), 600u);
  evpipe->start(source_port);
  long before = db.count("SELECT count(*) FROM events_mirror");
  const std::string to = "--to http://127.0.0.1:" + std::to_string(source_port) + "/v1/events";
  auto r = replay(to);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.last_position, all.lines.back().substr(13, 34)) << r.err;
  EXPECT_EQ(metric("taylor_events_received_total{source=\"http\"}"), 600);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), before);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);

  std::string since;
  for (size_t page = 1; page <= 3; ++page) {
    auto p = replay("--no-progress --max-rows 250 " + to + (since.empty() ? "" : " --since " + since));
    ASSERT_EQ(p.exit_code, 0) << p.err;
    EXPECT_EQ(p.last_position, all.lines[std::min<size_t>(page * 250, 600) - 1].substr(13, 34)) << page;
    since = p.last_position;
  }
  EXPECT_EQ(metric("taylor_events_received_total{source=\"http\"}"), 1200);
  auto rest = replay("--no-progress " + to + " --since " + since);
  EXPECT_EQ(rest.exit_code, 0) << rest.err;
  EXPECT_EQ(rest.last_position, since);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), before);

  // --rate applies to a source too: 200 events at 400/s take about half a second.
  auto t0 = std::chrono::steady_clock::now();
  auto paced = replay("--no-progress --max-rows 200 --rate 400 " + to);
  ASSERT_EQ(paced.exit_code, 0) << paced.err;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 450ms);
  EXPECT_EQ(paced.last_position, all.lines[199].substr(13, 34));
}

// Rows with transport headers (the nullable headers column, e.g. an MQTT 5
// message's content type and user properties) carry them in their NDJSON
// line, after "event"; rows without have no "headers" key.
TEST_F(Replay, HeadersAppearInTheNdjsonLinesOfRowsThatHaveThem) {
  db.exec("INSERT INTO events_mirror (topic, payload, headers) VALUES "
          "('t/h', '{\"idempotency_key\": \"h-1\", \"kind\": \"k\"}', "
          "'{\"content_type\": \"application/json\", \"user_properties\": [[\"tenant\", \"acme\"], [\"tenant\", \"beta\"]]}'), "
          "('t/h', '{\"idempotency_key\": \"h-2\", \"kind\": \"k\"}', NULL)");
  replay_result r;
  ASSERT_TRUE(eventually([&] { return (r = replay("--no-progress")).lines.size() == 2; }));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.lines[0].find(R"("h-1"},"headers":{"content_type": "application/json", "user_properties": [["tenant", "acme"], ["tenant", "beta"]]}})"),
            std::string::npos) << r.lines[0];
  EXPECT_EQ(r.lines[1].find("\"headers\""), std::string::npos) << r.lines[1];
}

// --to mqtt:// with a broker that requires a login: user name and password
// come from --mqtt-credentials-file (never the command line) and are never
// printed; the broker speaks MQTT 5, so each row's headers are published
// again as the PUBLISH's content type and user properties (seen by
// mosquitto_sub -V mqttv5). Without the file, or with a wrong password, the
// broker's refusal is the error.
TEST_F(Replay, IntoAnMqtt5BrokerWithALoginTheHeadersBecomeProperties) {
  if (::access(env_or("EVPIPE_TEST_MOSQUITTO", "/usr/sbin/mosquitto").c_str(), X_OK) != 0) {
    if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "mosquitto is not installed";
    GTEST_SKIP() << "mosquitto is not installed (scripts/test.sh installs it)";
  }
  const std::string password = "pw-7f3a9-never-printed";
  mosquitto_broker broker("replay_login", false, "replayer", password);
  db.exec("INSERT INTO events_mirror (topic, payload, headers) VALUES "
          "('site/a', '{\"idempotency_key\": \"m-1\"}', "
          "'{\"content_type\": \"application/cloudevents+json\", \"user_properties\": [[\"tenant\", \"acme\"]]}'), "
          "('site/b', '{\"idempotency_key\": \"m-2\"}', NULL)");
  ASSERT_TRUE(eventually([&] { return replay("--no-progress").lines.size() == 2; }));
  std::ofstream(dir + "/mqtt.login") << "replayer\n" << password << "\n";
  std::ofstream(dir + "/mqtt.wrong") << "replayer\nnot-the-password\n";

  const std::string to = " --to mqtt://127.0.0.1:" + std::to_string(broker.port()) + "/replayed";
  for (const std::string& login : {std::string(""), " --mqtt-credentials-file " + dir + "/mqtt.wrong"}) {
    auto refused = replay("--no-progress" + to + login);
    EXPECT_EQ(refused.exit_code, 1) << refused.err;
    EXPECT_NE(refused.err.find("the broker refused the connection"), std::string::npos) << refused.err;
  }

  const std::string sub_out = dir + "/sub.out";
  std::string sub = "timeout 30 mosquitto_sub -V mqttv5 -h 127.0.0.1 -p " + std::to_string(broker.port()) +
                    " -u replayer -P " + password + " -i replay-check -q 1 -t 'replayed/#' -C 2 -F '%t|%C|%P|%p' >" +
                    sub_out + " 2>&1 &";
  ASSERT_EQ(std::system(sub.c_str()), 0);
  ASSERT_TRUE(eventually([&] { return broker.subscriptions("replay-check", "replayed/#") >= 1; })) << broker.log();
  auto r = replay("--no-progress" + to + " --mqtt-credentials-file " + dir + "/mqtt.login");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find(password), std::string::npos) << r.err;
  std::string got;
  ASSERT_TRUE(eventually([&] {
    got = read_text(sub_out);
    return std::count(got.begin(), got.end(), '\n') >= 2;
  }, 30s)) << got;
  EXPECT_NE(got.find("replayed/site/a|application/cloudevents+json|tenant:acme|{\"idempotency_key\": \"m-1\"}"),
            std::string::npos) << got;
  EXPECT_NE(got.find("replayed/site/b|||{\"idempotency_key\": \"m-2\"}"), std::string::npos) << got;
}

// --to http:// with a source that requires a bearer token: the token comes
// from --bearer-token-file; without it the source's 401 is the error.
TEST_F(Replay, IntoAnHttpSourceWithABearerTokenFromAFile) {
  uint16_t source_port = free_port();
  std::ofstream(dir + "/http.token") << "tok-5b1e-never-printed\n";
  restart_with("[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(source_port) +
               "\"\ntopic = \"tracker/events/http\"\nbearer_token_file = \"" + dir + "/http.token\"\n");
  insert_rows();
  evpipe->start(source_port);
  long before = db.count("SELECT count(*) FROM events_mirror");
  const std::string to = " --to http://127.0.0.1:" + std::to_string(source_port) + "/v1/events";
  auto refused = replay("--no-progress --max-rows 10" + to);
  EXPECT_EQ(refused.exit_code, 1) << refused.err;
  EXPECT_NE(refused.err.find("HTTP 401"), std::string::npos) << refused.err;
  auto r = replay("--no-progress" + to + " --bearer-token-file " + dir + "/http.token");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("tok-5b1e"), std::string::npos) << r.err;
  EXPECT_EQ(metric("taylor_events_received_total{source=\"http\"}"), 600);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), before);

  // Secrets go with their target, and a missing file is named.
  EXPECT_EQ(replay("--bearer-token-file " + dir + "/http.token").exit_code, 2);
  EXPECT_EQ(replay("--mqtt-credentials-file " + dir + "/http.token" + to).exit_code, 2);
  auto missing = replay("--bearer-token-file " + dir + "/nothing-here" + to);
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("nothing-here"), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace evpipe::testing
