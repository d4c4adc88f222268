// `evpipe dlq requeue` end to end: dead letters go back through validation
// and the write; each one leaves dlq_events in the transaction that commits
// its new outcome, so SIGKILLs in the middle of a requeue lose nothing and
// store nothing twice.

#include <gtest/gtest.h>
#include <spawn.h>

#include <fstream>
#include <random>
#include <sstream>

#include "tests/support/harness.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

struct cli_result {
  int exit_code = -1;
  std::string out, err;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// An event of kind `kind` (the constraints below look at it).
std::string event_of_kind(const std::string& key, const std::string& kind) {
  return "{\"trace_id\":\"" + uuid_for(static_cast<uint32_t>(std::hash<std::string>{}(key))) +
         "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"" + kind + "\",\"idempotency_key\":\"" + key +
         "\",\"payload\":{\"n\":1}}";
}

class DlqRequeue : public TcpPipeline {
 protected:
  void start_evpipe(const tuning& t = {}) {
    tcp_port = free_port();
    evpipe = std::make_unique<evpipe_process>(config_for(db, tcp_port, free_port(), t), "dlq_requeue");
    ASSERT_EQ(evpipe->run_command("migrate"), 0) << evpipe->log("migrate.log");
    dir = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_dlq_requeue";
  }
  cli_result dlq(const std::string& args) {
    cli_result r;
    std::string out = dir + "/dlq.out", err = dir + "/dlq.err";
    std::string cmd = evpipe_binary() + " dlq " + args + " --config " + dir + "/evpipe.toml </dev/null >" +
                      out + " 2>" + err;
    int status = std::system(cmd.c_str());
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = read_text(out);
    r.err = read_text(err);
    return r;
  }
  // Starts `evpipe dlq requeue` without waiting; output to `log`.
  pid_t spawn_requeue(const std::string& log) {
    std::string config = dir + "/evpipe.toml";
    std::vector<std::string> args = {evpipe_binary(), "dlq", "requeue", "--config", config};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("cannot start evpipe dlq requeue");
    return pid;
  }
  uint16_t tcp_port = 0;
  std::unique_ptr<evpipe_process> evpipe;
  std::string dir;
};

// Rows a CHECK constraint refused are dead-lettered db_rejected; once the
// constraint is dropped, requeue mirrors them and removes their dead
// letters. An event that another constraint still refuses stays
// dead-lettered, once, with the new refusal. Dead letters the filters do not
// select are left alone.
TEST_F(DlqRequeue, RowsRefusedByAConstraintAreMirroredOnceItIsDropped) {
  if (IsSkipped()) return;
  start_evpipe();
  // PostgreSQL checks constraints in name order: a_ first.
  db.exec("ALTER TABLE events_mirror ADD CONSTRAINT a_blocked CHECK (payload->>'kind' NOT IN ('blocked', 'doubly_blocked'))");
  db.exec("ALTER TABLE events_mirror ADD CONSTRAINT b_doubly CHECK (payload->>'kind' <> 'doubly_blocked')");
  evpipe->start(tcp_port);
  {
    ndjson_client producer(tcp_port);
    std::string data;
    for (int i = 0; i < 10; ++i) data += event_of_kind("ok-" + std::to_string(i), "fine") + "\n";
    for (int i = 0; i < 20; ++i) data += event_of_kind("blocked-" + std::to_string(i), "blocked") + "\n";
    for (int i = 0; i < 3; ++i) data += event_of_kind("doubly-" + std::to_string(i), "doubly_blocked") + "\n";
    for (int i = 0; i < 4; ++i) data += "{\"kind\":\"k\",\"idempotency_key\":\"bad-" + std::to_string(i) + "\"}\n";
    producer.send_all(data);
    ASSERT_EQ(producer.read_acks_until(37, 60s), 37u);
  }
  ASSERT_EQ(db.count("SELECT count(*) FROM events_mirror"), 10);
  ASSERT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'db_rejected'"), 23);
  ASSERT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'missing_field'"), 4);
  // One more dead letter whose key is already stored: requeued, it is a duplicate.
  db.exec("INSERT INTO dlq_events (original_topic, failure_reason, reason_code, payload) VALUES "
          "('tracker/events/it', 'refused once', 'db_rejected', '" + event_of_kind("ok-3", "fine") + "'::jsonb)");
  auto others = db.column("SELECT id FROM dlq_events WHERE reason_code = 'missing_field' ORDER BY id");

  // Nothing changes while the constraint is there, nor with --dry-run.
  auto dry = dlq("requeue --dry-run --reason db_rejected");
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("would requeue 24 dead letters (db_rejected 24): 24 pass validation now"), std::string::npos)
      << dry.out;
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 28);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 10);

  db.exec("ALTER TABLE events_mirror DROP CONSTRAINT a_blocked");
  auto r = dlq("requeue --reason db_rejected");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("requeued 24 of 24 dead letters: 20 mirrored, 1 already stored, 3 dead-lettered again "
                       "(db_rejected 3)"),
            std::string::npos)
      << r.out << r.err;
  // Every blocked event is mirrored once, and none of its dead letters is left.
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE payload->>'kind' = 'blocked'"), 20);
  EXPECT_EQ(db.count("SELECT count(DISTINCT idempotency_key) FROM events_mirror"), 30);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE payload->>'kind' IN ('blocked', 'fine')"), 0);
  // Refused again, by the other constraint: one dead letter each, saying so.
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE payload->>'kind' = 'doubly_blocked'"), 3);
  EXPECT_EQ(db.count("SELECT count(DISTINCT payload->>'idempotency_key') FROM dlq_events WHERE "
                     "payload->>'kind' = 'doubly_blocked' AND reason_code = 'db_rejected' AND failure_reason LIKE "
                     "'%b_doubly%'"),
            3)
      << db.column("SELECT failure_reason FROM dlq_events WHERE payload->>'kind' = 'doubly_blocked'").at(0);
  EXPECT_EQ(db.column("SELECT id FROM dlq_events WHERE reason_code = 'missing_field' ORDER BY id"), others);

  // Requeued again while evpipe keeps running: still one each.
  r = dlq("requeue --reason db_rejected");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("requeued 3 of 3 dead letters: 0 mirrored, 0 already stored, 3 dead-lettered again"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE payload->>'kind' = 'doubly_blocked'"), 3);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 30);
}

TEST_F(DlqRequeue, BadInputIsRefusedAndDryRunChangesNothing) {
  if (IsSkipped()) return;
  start_evpipe();
  db.exec("INSERT INTO dlq_events (original_topic, failure_reason, reason_code, payload, raw) VALUES "
          "('tracker/events/it', 'x', 'missing_field', '{\"kind\":\"k\"}'::jsonb, NULL), "
          "('tracker/events/it', 'x', 'invalid_json', NULL, '{not json'::bytea), "
          "('tracker/events/it', 'x', 'too_large', NULL, '{\"kind\":\"trunc'::bytea), "
          "('autocore/dev1/telemetry', 'x', 'db_rejected', '" + event_of_kind("later", "fine") + "'::jsonb, NULL)");
  auto before = db.column("SELECT id || reason_code || failure_reason FROM dlq_events ORDER BY id");

  auto r = dlq("requeue --reason no_such_reason");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--reason no_such_reason: not a reason code"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("db_rejected"), std::string::npos) << r.err;
  r = dlq("requeue --topic 'a/#/b'");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = dlq("requeue --since not-a-time");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  // No rows match: said, and nothing is done.
  r = dlq("requeue --reason route_mismatch");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("no dead letters match"), std::string::npos) << r.out;
  r = dlq("requeue --topic 'nothing/#'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("no dead letters match"), std::string::npos) << r.out;
  // --dry-run validates and tells; only the truncated too_large one is not sent.
  r = dlq("requeue --dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("would requeue 3 dead letters (db_rejected 1, invalid_json 1, missing_field 1): 1 pass "
                       "validation now, 2 would be dead-lettered again (invalid_json 1, missing_field 1)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.err.find("1 too_large dead letters left alone"), std::string::npos) << r.err;
  EXPECT_EQ(db.column("SELECT id || reason_code || failure_reason FROM dlq_events ORDER BY id"), before);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 0);
  // And the real thing, filtered by topic: only the autocore one goes.
  r = dlq("requeue --topic 'autocore/+/telemetry'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE topic = 'autocore/dev1/telemetry'"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 3);
}

// A dead letter's transport headers (an MQTT 5 message's content type and
// user properties) show in `dlq show --json` and `list --json`, and a
// requeue sends them along: the row it becomes has them; one without has
// none (NULL), in the same batch.
TEST_F(DlqRequeue, HeadersAreShownAndTravelWithTheRequeuedEvent) {
  if (IsSkipped()) return;
  start_evpipe();
  db.exec("INSERT INTO dlq_events (original_topic, failure_reason, reason_code, payload, headers) VALUES "
          "('tracker/events/it', 'x', 'db_rejected', '" + event_of_kind("with-headers", "fine") + "'::jsonb, "
          "'{\"content_type\": \"application/json\", \"user_properties\": [[\"tenant\", \"acme\"]]}'), "
          "('tracker/events/it', 'x', 'db_rejected', '" + event_of_kind("without", "fine") + "'::jsonb, NULL)");
  const std::string with_id = db.column("SELECT id FROM dlq_events WHERE payload->>'idempotency_key' = 'with-headers'").at(0);
  auto shown = dlq("show " + with_id + " --json");
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find(R"("headers" : {"content_type": "application/json", "user_properties": [["tenant", "acme"]]})"),
            std::string::npos) << shown.out;
  auto listed = dlq("list --json");
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find(R"("headers" : null)"), std::string::npos) << listed.out;

  auto r = dlq("requeue");
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
  EXPECT_EQ(db.column("SELECT headers::text FROM events_mirror WHERE payload->>'idempotency_key' = 'with-headers'"),
            std::vector<std::string>{R"({"content_type": "application/json", "user_properties": [["tenant", "acme"]]})"});
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE payload->>'idempotency_key' = 'without' AND headers IS NULL"), 1);
}

// 10,000 dead letters requeued (most valid now, some invalid again, some
// already stored, some still refused by PostgreSQL) while the requeue is
// SIGKILLed again and again: after each kill and at the end, every key is in events_mirror
// exactly once or still in dlq_events exactly once, never both, never
// neither.
TEST_F(DlqRequeue, SigkillsDuringARequeueLoseAndDuplicateNothing) {
  if (IsSkipped()) return;
  tuning t;
  t.max_rows = 100;  // many transactions, so that kills land between them
  start_evpipe(t);
  constexpr int n = 10000;
  // Of every 10: 8 valid (mirrored), 1 invalid again (no trace_id), 1 whose
  // key is already stored (a duplicate).
  auto event_sql = [](const std::string& key_expr, bool with_trace) {
    return std::string("jsonb_build_object(") + (with_trace ? "'trace_id', '550e8400-e29b-41d4-a716-446655440000', " : "") +
           "'ts', '2025-01-15T10:30:00Z', 'kind', 'k', 'idempotency_key', " + key_expr + ", 'payload', jsonb_build_object('g', g))";
  };
  db.exec("INSERT INTO dlq_events (original_topic, failure_reason, reason_code, payload) SELECT 'tracker/events/it', "
          "'refused', 'db_rejected', " + event_sql("'k-' || g", true) + " FROM generate_series(1, " +
          std::to_string(n) + ") g WHERE g % 10 <> 8");
  db.exec("INSERT INTO dlq_events (original_topic, failure_reason, reason_code, payload) SELECT 'tracker/events/it', "
          "'refused', 'db_rejected', " + event_sql("'k-' || g", false) + " FROM generate_series(1, " +
          std::to_string(n) + ") g WHERE g % 10 = 8");
  db.exec("INSERT INTO events_mirror (topic, payload) SELECT 'tracker/events/it', " + event_sql("'k-' || g", true) +
          " FROM generate_series(1, " + std::to_string(n) + ") g WHERE g % 10 = 9");
  // And 1 in 50 that PostgreSQL still refuses, so that batches are bisected
  // (ranges committed one by one) while the kills land.
  db.exec("ALTER TABLE events_mirror ADD CONSTRAINT no_sevens CHECK ((payload->'payload'->>'g')::int % 50 <> 7)");

  const std::string keys = "(SELECT 'k-' || g AS k, g FROM generate_series(1, " + std::to_string(n) + ") g) keys";
  // `settled`: also the keys stored before the requeue began, whose dead
  // letters may legitimately remain until the requeue reaches them.
  auto check_exactly_once = [&](const std::string& when, bool settled = false) {
    EXPECT_EQ(db.count("SELECT count(*) FROM " + keys + " WHERE NOT EXISTS (SELECT 1 FROM events_mirror m WHERE "
                       "m.idempotency_key = k) AND NOT EXISTS (SELECT 1 FROM dlq_events d WHERE "
                       "d.payload->>'idempotency_key' = k)"),
              0)
        << "lost, " << when;
    EXPECT_EQ(db.count("SELECT count(*) FROM " + keys + " WHERE EXISTS (SELECT 1 FROM events_mirror m WHERE "
                       "m.idempotency_key = k) AND EXISTS (SELECT 1 FROM dlq_events d WHERE "
                       "d.payload->>'idempotency_key' = k)" + (settled ? "" : " AND g % 10 <> 9")),
              0)
        << "in both tables, " << when;
    EXPECT_EQ(db.count("SELECT count(*) - count(DISTINCT payload->>'idempotency_key') FROM dlq_events"), 0)
        << "twice in dlq_events, " << when;
    EXPECT_EQ(db.count("SELECT count(*) - count(DISTINCT idempotency_key) FROM events_mirror"), 0) << when;
  };
  check_exactly_once("before");

  std::mt19937 rng(12345);
  int mid_run_kills = 0;
  long left = db.count("SELECT count(*) FROM dlq_events");
  for (int kill = 0; kill < 6 && mid_run_kills < 3; ++kill) {
    std::string log = dir + "/requeue_" + std::to_string(kill) + ".log";
    pid_t pid = spawn_requeue(log);
    // Kill once some dead letters have been settled (bounded wait), a random
    // moment later.
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline &&
           db.count("SELECT count(*) FROM dlq_events") >= left - 200) {
      std::this_thread::sleep_for(2ms);
      int status;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        break;
      }
    }
    if (pid > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 60));
      int status;
      bool still_running = ::waitpid(pid, &status, WNOHANG) == 0;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      long now_left = db.count("SELECT count(*) FROM dlq_events");
      if (still_running && now_left > 1200) ++mid_run_kills;  // 1200: the ones refused for good
      left = now_left;
    }
    check_exactly_once("after kill " + std::to_string(kill));
  }
  EXPECT_GE(mid_run_kills, 2) << "the kills did not land in the middle of a requeue";

  auto r = dlq("requeue");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  check_exactly_once("at the end", true);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 8800);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 1200);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'missing_field'"), 1000);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'db_rejected' AND failure_reason LIKE "
                     "'%no_sevens%'"),
            200);
}

// SIGINT (or SIGTERM) stops reading dead letters; what was handed to the
// shards is committed before the exit (130), and the summary says how many:
// exactly that many are mirrored and gone from dlq_events.
TEST_F(DlqRequeue, AnInterruptedRequeueCommitsWhatItHandedOver) {
  if (IsSkipped()) return;
  tuning t;
  t.max_rows = 50;
  start_evpipe(t);
  constexpr int n = 20000;
  db.exec("INSERT INTO dlq_events (original_topic, failure_reason, reason_code, payload) SELECT 'tracker/events/it', "
          "'refused', 'db_rejected', jsonb_build_object('trace_id', '550e8400-e29b-41d4-a716-446655440000', 'ts', "
          "'2025-01-15T10:30:00Z', 'kind', 'k', 'idempotency_key', 'i-' || g, 'payload', '{}'::jsonb) "
          "FROM generate_series(1, " + std::to_string(n) + ") g");
  std::string log = dir + "/requeue_int.log";
  pid_t pid = spawn_requeue(log);
  ASSERT_TRUE(eventually([&] { return db.count("SELECT count(*) FROM dlq_events") < n - 500; }, 30s));
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  std::string text = read_text(log);
  auto at = text.find("requeued ");
  ASSERT_NE(at, std::string::npos) << text;
  long settled = std::stol(text.substr(at + 9));
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), settled);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), n - settled);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror m JOIN dlq_events d ON d.payload->>'idempotency_key' = "
                     "m.idempotency_key"),
            0);
  if (settled < n) {
    EXPECT_EQ(WEXITSTATUS(status), 130) << text;
    EXPECT_NE(text.find("interrupted"), std::string::npos) << text;
  } else {
    EXPECT_EQ(WEXITSTATUS(status), 0) << text;  // it had finished first
  }
  auto r = dlq("requeue");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), n);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
}

}  // namespace
}  // namespace evpipe::testing
