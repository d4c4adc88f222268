// The NATS JetStream source (io/sources/nats) against Debian's nats-server and
// the real PostgreSQL: every message stored once and acked only after its
// commit; a database outage holds the acks and sends in-progress acks, so the
// server does not redeliver the window; a SIGKILL mid-stream loses and
// duplicates nothing; max_deliveries dead-letters without processing; refused
// credentials stop the start with a clear error; metrics and /health/ready.

#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <set>

#include "tests/support/harness.h"
#include "tests/support/held_queues.h"
#include "tests/support/nats_jwt.h"
#include "tests/support/nats_server.h"
#include "tests/support/tcp_proxy.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

struct nats_options {
  std::string dsn;             // default: the test schema
  std::string durable = "evpipe";
  std::string filters = R"(["tracker.>"])";
  std::string extra;           // more keys of [[sources.nats]]
  uint32_t ack_wait_s = 30;
  uint32_t max_deliveries = 10;
};

std::string nats_config(const test_db& db, const std::string& url, uint16_t http_port, const nats_options& o = {}) {
  return "[pipeline]\nshards = 2\n"
         "[events]\nmax_event_bytes = 4096\n"
         "[postgres]\ndsn = \"" + (o.dsn.empty() ? db.dsn() : o.dsn) + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
         "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
         "[health]\nmax_commit_stall_ms = 500\n"
         "[stream]\nlisten = \"\"\n"
         "[log]\nlevel = \"info\"\n"
         "[[sources.nats]]\nservers = [\"" + url + "\"]\nstream = \"EVENTS\"\ndurable = \"" + o.durable + "\"\n"
         "filter_subjects = " + o.filters + "\n"
         "ack_wait_s = " + std::to_string(o.ack_wait_s) + "\nmax_deliveries = " + std::to_string(o.max_deliveries) +
         "\n" + o.extra;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

double metric(uint16_t http_port, const std::string& sample) { return metric_value(http_get(http_port, "/metrics"), sample); }
double received(uint16_t p) { return metric(p, "evpipe_events_received_total{source=\"nats\"}"); }
double unacked(uint16_t p) { return metric(p, "evpipe_unacked_events{source=\"nats\"}"); }
double acks(uint16_t p) { return metric(p, "evpipe_nats_acks_total"); }

std::vector<std::pair<std::string, std::string>> messages(const std::string& run, int from, int n) {
  std::vector<std::pair<std::string, std::string>> out;
  for (int i = from; i < from + n; ++i) {
    out.emplace_back("tracker.events.projects.created", valid_event(run + "-" + std::to_string(i)));
  }
  return out;
}

class NatsSource : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
    if (::access(env_or("EVPIPE_TEST_NATS_SERVER", "/usr/sbin/nats-server").c_str(), X_OK) != 0) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "nats-server is not installed";
      GTEST_SKIP() << "nats-server is not installed (scripts/test.sh installs it)";
    }
  }
  long count(const std::string& sql) { return db.count(sql); }
  // A server that wants `a`'s secret (its password, or its token): evpipe
  // given a file with a wrong one (`key` = "<file>", with what goes before
  // that key) stops the start with the reason and `hint`, and the wrong
  // secret is not in its log; given the right one, it reads, and the right
  // one is not in its log either.
  void refused_then_accepted(const nats_server::auth& a, const std::string& name, const std::string& key,
                             const std::string& hint) {
    const std::string right = a.token.empty() ? a.password : a.token;
    const std::string wrong = "wrong-" + name + "-secret";
    nats_server server(name, a);
    nats_client client(server.url(), a);
    client.add_stream("EVENTS", "tracker.>");
    uint16_t http_port = free_port();
    std::string dir = env_or("TMPDIR", "/tmp") + "/nats_it_" + std::to_string(::getpid()) + "_" + name;
    ASSERT_EQ(std::system(("mkdir -p '" + dir + "'").c_str()), 0);
    std::ofstream(dir + "/wrong") << wrong << "\n";
    std::ofstream(dir + "/right") << right << "\n";
    nats_options o;
    o.extra = key + " = \"" + dir + "/wrong\"\n";
    evpipe_process bad(nats_config(db, server.url(), http_port, o), "nats_bad_" + name);
    ASSERT_EQ(bad.run_command("migrate"), 0) << bad.log("migrate.log");
    EXPECT_THROW(bad.start(http_port), std::runtime_error);
    std::string log = bad.log();
    EXPECT_NE(log.find("the server refused evpipe's credentials"), std::string::npos) << log;
    EXPECT_NE(log.find(hint), std::string::npos) << log;
    EXPECT_EQ(log.find(wrong), std::string::npos) << "the secret was logged";

    o.extra = key + " = \"" + dir + "/right\"\n";
    evpipe_process good(nats_config(db, server.url(), http_port, o), "nats_good_" + name);
    good.start(http_port);
    client.publish("tracker.a", valid_event(name + "-1"));
    ASSERT_TRUE(eventually([&] { return acks(http_port) >= 1; })) << good.log();
    EXPECT_EQ(good.log().find(right), std::string::npos);
    EXPECT_EQ(count("SELECT count(*) FROM events_mirror"), 1);
  }
  // Every key of the run stored exactly once.
  void expect_once(const std::string& run, long n) {
    EXPECT_EQ(count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE '" + run + "-%'"), n);
    EXPECT_EQ(count("SELECT count(DISTINCT idempotency_key) FROM events_mirror WHERE idempotency_key LIKE '" + run +
                    "-%'"),
              n);
  }
  test_db db;
};

TEST_F(NatsSource, EveryMessageStoredOnceAndAckedAfterCommitWithTheSubjectAsTopic) {
  nats_server server("basic");
  nats_client client(server.url());
  client.add_stream("EVENTS", "tracker.>");
  // A backlog published while evpipe is not running.
  client.publish_async(messages("basic", 0, 500));
  uint16_t http_port = free_port();
  evpipe_process evp(nats_config(db, server.url(), http_port), "nats_basic");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  client.publish_async(messages("basic", 500, 500));
  ASSERT_TRUE(eventually([&] { return acks(http_port) >= 1000 && unacked(http_port) == 0; }))
      << "acks " << acks(http_port) << "\n" << evp.log();
  expect_once("basic", 1000);
  EXPECT_EQ(count("SELECT count(*) FROM events_mirror WHERE topic = 'tracker/events/projects/created'"), 1000);
  // evpipe counts an ack when its client library has taken it; the server
  // counts it once the client's flusher has sent it, a moment later on a
  // loaded machine.
  auto st = client.consumer("EVENTS", "evpipe");
  eventually([&] {
    st = client.consumer("EVENTS", "evpipe");
    return st.ack_pending == 0 && st.ack_floor >= 1000u;
  }, 10s);
  EXPECT_EQ(st.ack_pending, 0);
  EXPECT_EQ(st.ack_floor, 1000u);
  EXPECT_EQ(st.redelivered, 0u);
  std::string m = http_get(http_port, "/metrics");
  EXPECT_EQ(metric_value(m, "evpipe_nats_connections_active"), 1) << m;
  EXPECT_EQ(metric_value(m, "evpipe_nats_consumers_ready"), 1) << m;
  EXPECT_NE(http_get(http_port, "/health/ready").find("200"), std::string::npos);

  // A clean stop keeps the durable consumer (nothing to redeliver on restart).
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
  st = client.consumer("EVENTS", "evpipe");
  EXPECT_TRUE(st.exists);
  EXPECT_EQ(st.ack_floor, 1000u);
}

// Two filter subjects: nats-server 2.9 takes one filter per consumer, so
// evpipe pulls from <durable>-1 and <durable>-2, each acked after commit;
// a subject no filter names stays on the server. topic_separator "." keeps
// the subject as the topic.
TEST_F(NatsSource, EachFilterSubjectHasItsConsumerAndTheSeparatorIsKept) {
  nats_server server("filters");
  nats_client client(server.url());
  client.add_stream("EVENTS", "tracker.>");
  uint16_t http_port = free_port();
  nats_options o;
  o.filters = R"(["tracker.events.>", "tracker.audit.*"])";
  o.extra = "topic_separator = \".\"\n";
  evpipe_process evp(nats_config(db, server.url(), http_port, o), "nats_filters");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  std::vector<std::pair<std::string, std::string>> msgs;
  for (int i = 0; i < 100; ++i) {
    msgs.emplace_back("tracker.events.created", valid_event("f-events-" + std::to_string(i)));
    msgs.emplace_back("tracker.audit.login", valid_event("f-audit-" + std::to_string(i)));
    msgs.emplace_back("tracker.other.x", valid_event("f-other-" + std::to_string(i)));
  }
  client.publish_async(msgs);
  ASSERT_TRUE(eventually([&] { return acks(http_port) >= 200 && unacked(http_port) == 0; })) << evp.log();
  std::this_thread::sleep_for(300ms);  // anything of the third subject would show now
  expect_once("f-events", 100);
  expect_once("f-audit", 100);
  EXPECT_EQ(count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'f-other-%'"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM events_mirror WHERE topic = 'tracker.events.created'"), 100);
  EXPECT_EQ(count("SELECT count(*) FROM events_mirror WHERE topic = 'tracker.audit.login'"), 100);
  for (const char* durable : {"evpipe-1", "evpipe-2"}) {
    auto st = client.consumer("EVENTS", durable);
    EXPECT_TRUE(st.exists) << durable;
    EXPECT_TRUE(eventually([&] { return client.consumer("EVENTS", durable).ack_floor >= 100u; }, 10s)) << durable;
  }
  EXPECT_EQ(metric(http_port, "evpipe_nats_consumers_ready"), 2);
}

// A puller paused because a shard queue is full fetches again once the
// shards have taken their queues: the shard rings the puller's room bell
// (router::wait_for_room). Here nothing else can wake it: it has nothing in
// flight, and its last wake (its first message's ack) came 50 ms before the
// release, so its 1 s back-up wait would end about 950 ms after it.
TEST_F(NatsSource, APullerPausedForRoomFetchesOnceTheShardsTakeTheirQueues) {
  nats_server server("ring");
  nats_client client(server.url());
  client.add_stream("EVENTS", "tracker.>");
  uint16_t http_port = free_port(), tcp_port = free_port();
  nats_options o;
  o.extra = "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) + "\"\ntopic = \"tracker/events/it\"\n";
  std::string cfg = nats_config(db, server.url(), http_port, o);
  const std::string pipeline = "[pipeline]\nshards = 2\n";
  cfg.replace(cfg.find(pipeline), pipeline.size(), pipeline + held_queues_tuning);
  evpipe_process evp(cfg, "nats_ring");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  // The first message's shard waits on `first`, the other on the flood's
  // held keys; both queues fill behind them.
  held_keys first(db, "nats-ring-first-", 1);
  client.publish("tracker.ring", valid_event("nats-ring-first-0"));
  ASSERT_TRUE(eventually([&] { return first.waiting_on_me(db) == 1; })) << evp.log();
  held_queues queues(db, tcp_port, http_port, "evpipe", "nats-ring");
  queues.wait_full(1);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(eventually([&] { return metric(http_port, "evpipe_backpressure_waits_total{source=\"nats\"}") >= 1; }))
      << "the puller should pause, " << queues.depths() << "\n" << evp.log();
  client.publish("tracker.ring", valid_event("nats-ring-second"));
  // The first message commits and its ack wakes the puller, which finds the
  // queues still full and waits again.
  first.release();
  ASSERT_TRUE(eventually([&] { return acks(http_port) == 1; }, 30s, 5ms)) << evp.log();
  std::this_thread::sleep_for(50ms);
  ASSERT_EQ(received(http_port), 1) << "the puller fetched while the queues were full, " << queues.depths();
  const auto released = std::chrono::steady_clock::now();
  queues.release();
  ASSERT_TRUE(eventually([&] { return received(http_port) == 2; }, 30s, 5ms)) << evp.log();
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - released);
  std::cout << "the puller fetched its next message " << waited.count() << " ms after the release\n";
  EXPECT_LT(waited, 600ms) << "the puller fetched again " << waited.count() << " ms after the queues had room";
  EXPECT_TRUE(eventually([&] { return acks(http_port) == 2 && unacked(http_port) == 0; })) << evp.log();
  EXPECT_EQ(queues.acks(60s), uint64_t(held_queues::flood)) << evp.log();
  expect_once("nats-ring", held_queues::flood + 2);
}

TEST_F(NatsSource, DatabaseOutageHoldsAcksSendsInProgressAndNothingIsRedelivered) {
  nats_server server("dbdown");
  nats_client client(server.url());
  client.add_stream("EVENTS", "tracker.>");
  tcp_proxy proxy(db.server_port());
  uint16_t http_port = free_port();
  nats_options o;
  o.dsn = db.dsn_via(proxy.port());
  o.ack_wait_s = 3;  // in-progress acks every second; without them a redelivery after 3 s
  evpipe_process evp(nats_config(db, server.url(), http_port, o), "nats_dbdown");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  client.publish("tracker.a", valid_event("before-outage"));
  ASSERT_TRUE(eventually([&] { return acks(http_port) >= 1; })) << evp.log();

  proxy.cut();
  client.publish_async(messages("down", 0, 300));
  ASSERT_TRUE(eventually([&] {
    return received(http_port) >= 301 && metric(http_port, "evpipe_db_errors_total") >= 1;
  })) << evp.log();
  // Three AckWaits of outage: no ack may leave, and the server must not
  // redeliver (it would, after 3 s, without the in-progress acks).
  std::this_thread::sleep_for(std::chrono::seconds(3 * o.ack_wait_s));
  EXPECT_EQ(acks(http_port), 1);
  auto st = client.consumer("EVENTS", "evpipe");
  EXPECT_EQ(st.ack_pending, 300);
  EXPECT_EQ(st.redelivered, 0u) << "the server redelivered during the outage";
  EXPECT_GE(metric(http_port, "evpipe_nats_in_progress_acks_total"), 300);
  EXPECT_EQ(received(http_port), 301) << "messages came again during the outage";
  EXPECT_NE(http_get(http_port, "/health/ready").find("503"), std::string::npos);

  proxy.restore();
  ASSERT_TRUE(eventually([&] { return acks(http_port) >= 301 && unacked(http_port) == 0; })) << evp.log();
  expect_once("down", 300);
  st = client.consumer("EVENTS", "evpipe");
  EXPECT_EQ(st.ack_pending, 0);
  EXPECT_EQ(st.redelivered, 0u);
}

TEST_F(NatsSource, PullingStopsAtMaxAckPendingWhileNothingCommits) {
  nats_server server("bound");
  nats_client client(server.url());
  client.add_stream("EVENTS", "tracker.>");
  tcp_proxy proxy(db.server_port());
  uint16_t http_port = free_port();
  nats_options o;
  o.dsn = db.dsn_via(proxy.port());
  o.extra = "max_ack_pending = 100\nfetch_batch = 30\n";
  evpipe_process evp(nats_config(db, server.url(), http_port, o), "nats_bound");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] { return metric(http_port, "evpipe_nats_consumers_ready") == 1; })) << evp.log();
  proxy.cut();
  client.publish_async(messages("bound", 0, 500));
  ASSERT_TRUE(eventually([&] {
    return received(http_port) >= 100 && metric(http_port, "evpipe_db_errors_total") >= 1;
  })) << evp.log();
  // A second and more of pulling time: the bound holds, the rest stays on the server.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(received(http_port), 100);
  auto st = client.consumer("EVENTS", "evpipe");
  EXPECT_EQ(st.ack_pending, 100);
  EXPECT_EQ(st.pending, 400u);
  EXPECT_GE(metric(http_port, "evpipe_backpressure_waits_total{source=\"nats\"}"), 1);
  proxy.restore();
  ASSERT_TRUE(eventually([&] { return acks(http_port) >= 500 && unacked(http_port) == 0; })) << evp.log();
  expect_once("bound", 500);
}

TEST_F(NatsSource, SigkillMidStreamThenRestartLosesAndDuplicatesNothing) {
  nats_server server("sigkill");
  nats_client client(server.url());
  client.add_stream("EVENTS", "tracker.>");
  uint16_t http_port = free_port();
  nats_options o;
  o.ack_wait_s = 3;  // what the killed process held comes back after 3 s
  evpipe_process evp(nats_config(db, server.url(), http_port, o), "nats_sigkill");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  const int total = 6000;
  std::thread producer([&] {
    nats_client pub(server.url());
    for (int i = 0; i < total; i += 500) pub.publish_async(messages("kill", i, 500));
  });
  for (int round = 0; round < 3; ++round) {
    evp.start(http_port);
    // Killed once it has taken some (a different point each round).
    double at = received(http_port);
    eventually([&] { return received(http_port) >= at + 300 + 400 * round; }, 20s, 5ms);
    evp.kill(SIGKILL);
  }
  producer.join();
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] {
    auto st = client.consumer("EVENTS", "evpipe");
    return st.ack_floor == static_cast<uint64_t>(st.delivered) && st.pending == 0 && st.ack_pending == 0 &&
           unacked(http_port) == 0;
  }, 90s)) << evp.log();
  expect_once("kill", total);
  EXPECT_EQ(count("SELECT count(*) FROM dlq_events"), 0);
  // The kills did leave messages unacked: the server delivered some again.
  EXPECT_GT(client.consumer("EVENTS", "evpipe").delivered, static_cast<uint64_t>(total));
}

// Killed before the commit: with events_mirror locked, evpipe pulls and
// writes, but nothing it holds can commit, so nothing may be acked; after a
// SIGKILL the server delivers every message it held again, and each is
// stored once.
TEST_F(NatsSource, SigkillBeforeTheCommitLeavesEveryHeldMessageToTheServer) {
  nats_server server("sigkill_held");
  nats_client client(server.url());
  client.add_stream("EVENTS", "tracker.>");
  uint16_t http_port = free_port();
  nats_options o;
  o.ack_wait_s = 3;  // what the killed process held comes back after 3 s
  evpipe_process evp(nats_config(db, server.url(), http_port, o), "nats_sigkill_held");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  db.exec("BEGIN");
  db.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  client.publish_async(messages("held", 0, 1000));
  ASSERT_TRUE(eventually([&] { return received(http_port) >= 100 && db.lock_waiters("events_mirror") > 0; }))
      << evp.log();
  const auto held = client.consumer("EVENTS", "evpipe");
  evp.kill(SIGKILL);
  db.exec("COMMIT");
  EXPECT_GE(held.ack_pending, 100) << "evpipe held fewer messages than it had received";
  EXPECT_EQ(held.ack_floor, 0u) << "a message was acked before its commit";
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] {
    auto st = client.consumer("EVENTS", "evpipe");
    return st.ack_floor == st.delivered && st.pending == 0 && st.ack_pending == 0 && unacked(http_port) == 0;
  }, 60s)) << evp.log();
  expect_once("held", 1000);
  EXPECT_GE(client.consumer("EVENTS", "evpipe").delivered, 1000u + static_cast<uint64_t>(held.ack_pending))
      << "every message the killed process held was delivered again";
}

TEST_F(NatsSource, MessageDeliveredMoreThanMaxDeliveriesIsDeadLetteredUnprocessed) {
  nats_server server("maxdeliv");
  nats_client client(server.url());
  client.add_stream("EVENTS", "tracker.>");
  client.add_consumer("EVENTS", "evpipe", 30'000);
  // A valid event that has already been delivered twice (and given back).
  client.publish("tracker.poison", valid_event("poison-1"));
  ASSERT_EQ(client.fetch_and_nak("EVENTS", "evpipe", 1), 1);
  ASSERT_EQ(client.fetch_and_nak("EVENTS", "evpipe", 1), 1);
  client.publish("tracker.fine", valid_event("fine-1"));
  uint16_t http_port = free_port();
  nats_options o;
  o.max_deliveries = 2;
  o.filters = "[]";  // the consumer made above takes the whole stream
  evpipe_process evp(nats_config(db, server.url(), http_port, o), "nats_maxdeliv");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] { return acks(http_port) >= 2 && unacked(http_port) == 0; })) << evp.log();
  // The third delivery is over the limit: a dead letter, not a row, even
  // though the event itself is valid.
  EXPECT_EQ(count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'poison-1'"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'fine-1'"), 1);
  auto reasons = db.column("SELECT reason_code || ' ' || original_topic || ' ' || failure_reason FROM dlq_events");
  ASSERT_EQ(reasons.size(), 1u);
  EXPECT_EQ(reasons[0], "max_deliveries tracker/poison delivered 3 times, over max_deliveries = 2");
  EXPECT_EQ(metric(http_port, "evpipe_nats_max_deliveries_total"), 1);
  EXPECT_EQ(client.consumer("EVENTS", "evpipe").ack_pending, 0);
}

TEST_F(NatsSource, RefusedCredentialsStopTheStartWithAClearError) {
  nats_server::auth a;
  a.user = "evpipe";
  a.password = "right-secret";
  refused_then_accepted(a, "pw", "user = \"evpipe\"\npassword_file", "check user and password_file");
}

TEST_F(NatsSource, ATokenFileIsPresentedAndNeverLogged) {
  nats_server::auth a;
  a.token = "right-token";
  refused_then_accepted(a, "token", "token_file", "check token_file");
}

// Operator mode (decentralised JWT auth, as NGS and nsc set up): a creds
// file of a user the server's operator does not trust stops the start with
// the reason; the right one reads, and its seed is never logged.
TEST_F(NatsSource, ACredsFileOfATrustedUserIsPresentedAndItsSeedNeverLogged) {
  const std::string dir = env_or("TMPDIR", "/tmp") + "/nats_it_" + std::to_string(::getpid()) + "_creds";
  ASSERT_EQ(std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "/right' '" + dir + "/other'").c_str()), 0);
  make_test_nats_jwts(dir + "/right");
  make_test_nats_jwts(dir + "/other");  // another operator's user
  nats_server::auth a;
  a.jwt_dir = dir + "/right";
  nats_server server("creds", a);
  nats_client client(server.url(), a);
  client.add_stream("EVENTS", "tracker.>");
  uint16_t http_port = free_port();
  auto seed_of = [](const std::string& creds) {
    const std::string text = read_file(creds);
    const size_t at = text.find("-----BEGIN USER NKEY SEED-----\n") + 31;
    return text.substr(at, text.find('\n', at) - at);
  };

  nats_options o;
  o.extra = "creds_file = \"" + dir + "/other/user.creds\"\n";
  evpipe_process bad(nats_config(db, server.url(), http_port, o), "nats_badcreds");
  ASSERT_EQ(bad.run_command("migrate"), 0) << bad.log("migrate.log");
  EXPECT_THROW(bad.start(http_port), std::runtime_error);
  std::string log = bad.log();
  EXPECT_NE(log.find("the server refused evpipe's credentials"), std::string::npos) << log;
  EXPECT_NE(log.find("check creds_file"), std::string::npos) << log;
  EXPECT_EQ(log.find(seed_of(dir + "/other/user.creds")), std::string::npos) << "the seed was logged";
  // The server looked up the account of the user JWT presented (an unknown
  // one): evpipe presented the file, not nothing.
  EXPECT_NE(server.log().find("Account fetch failed: account missing"), std::string::npos) << server.log();

  o.extra = "creds_file = \"" + dir + "/right/user.creds\"\n";
  evpipe_process good(nats_config(db, server.url(), http_port, o), "nats_goodcreds");
  good.start(http_port);
  client.publish_async(messages("creds", 0, 50));
  ASSERT_TRUE(eventually([&] { return acks(http_port) >= 50 && unacked(http_port) == 0; })) << good.log();
  expect_once("creds", 50);
  const std::string right_seed = seed_of(dir + "/right/user.creds");
  ASSERT_GT(right_seed.size(), 50u);
  EXPECT_EQ(good.log().find(right_seed), std::string::npos);
}

// TLS with the server's CA and a client certificate (the server verifies
// clients): events flow; without the client certificate the server refuses
// the connection and evpipe stops at start with the reason.
TEST_F(NatsSource, TlsWithACaAndAClientCertificate) {
  const std::string dir = env_or("TMPDIR", "/tmp") + "/nats_it_" + std::to_string(::getpid()) + "_tls";
  ASSERT_EQ(std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str()), 0);
  make_test_certificates(dir);
  nats_server::auth a;
  a.tls_dir = dir;
  nats_server server("tls", a);
  nats_client client(server.url(), a);
  client.add_stream("EVENTS", "tracker.>");
  uint16_t http_port = free_port();
  const std::string url = "tls://127.0.0.1:" + std::to_string(server.port());

  nats_options o;
  o.extra = "ca_file = \"" + dir + "/ca.pem\"\n";
  evpipe_process bare(nats_config(db, url, http_port, o), "nats_tls_nocert");
  ASSERT_EQ(bare.run_command("migrate"), 0) << bare.log("migrate.log");
  EXPECT_THROW(bare.start(http_port), std::runtime_error) << "the server took a client without a certificate";
  EXPECT_NE(bare.log().find("if the server verifies client certificates (tls { verify: true }), set cert_file and "
                            "key_file"),
            std::string::npos)
      << bare.log();

  o.extra = "ca_file = \"" + dir + "/ca.pem\"\ncert_file = \"" + dir + "/client.pem\"\nkey_file = \"" + dir +
            "/client.key\"\n";
  evpipe_process evp(nats_config(db, url, http_port, o), "nats_tls");
  evp.start(http_port);
  client.publish_async(messages("tls", 0, 200));
  ASSERT_TRUE(eventually([&] { return acks(http_port) >= 200 && unacked(http_port) == 0; })) << evp.log();
  expect_once("tls", 200);  // through a server that takes nothing but TLS with a client certificate
}

TEST_F(NatsSource, ServerAwayIsWaitedForAndShownInMetricsAndReadiness) {
  auto server = std::make_unique<nats_server>("away");
  std::string url = server->url();
  {
    nats_client client(url);
    client.add_stream("EVENTS", "tracker.>");
  }
  server->stop();
  uint16_t http_port = free_port();
  evpipe_process evp(nats_config(db, url, http_port), "nats_away");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  EXPECT_EQ(metric(http_port, "evpipe_nats_connections_active"), 0);
  EXPECT_EQ(metric(http_port, "evpipe_nats_consumers_ready"), 0);
  std::string ready = http_get(http_port, "/health/ready");
  EXPECT_NE(ready.find("not connected to a server"), std::string::npos) << ready;
  server->start();  // same port and storage: the stream is still there
  ASSERT_TRUE(eventually([&] { return metric(http_port, "evpipe_nats_consumers_ready") == 1; })) << evp.log();
  EXPECT_EQ(metric(http_port, "evpipe_nats_connections_active"), 1);
  nats_client client(url);
  client.publish("tracker.a", valid_event("away-1"));
  ASSERT_TRUE(eventually([&] { return acks(http_port) >= 1; })) << evp.log();
  ready = http_get(http_port, "/health/ready");
  EXPECT_EQ(ready.find("not connected"), std::string::npos) << ready;
}

// A server that comes back refusing evpipe's credentials (a password
// changed, a creds JWT expired): the library tries twice and then closes the
// connection for good. evpipe says so in its log and is not ready, with the
// reason, rather than "not connected", which waiting would fix.
TEST_F(NatsSource, CredentialsRefusedOnAReconnectMakeTheSourceNotReadyWithTheReason) {
  nats_server::auth a;
  a.user = "evpipe";
  a.password = "first-secret";
  auto server = std::make_unique<nats_server>("reauth", a);
  const std::string url = server->url();
  const uint16_t port = static_cast<uint16_t>(std::stoi(url.substr(url.rfind(':') + 1)));
  {
    nats_client client(url, a);
    client.add_stream("EVENTS", "tracker.>");
  }
  std::string dir = env_or("TMPDIR", "/tmp") + "/nats_it_" + std::to_string(::getpid()) + "_reauth";
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "'").c_str()), 0);
  std::ofstream(dir + "/password") << "first-secret\n";
  nats_options o;
  o.extra = "user = \"evpipe\"\npassword_file = \"" + dir + "/password\"\n";
  uint16_t http_port = free_port();
  evpipe_process evp(nats_config(db, url, http_port, o), "nats_reauth");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  ASSERT_TRUE(eventually([&] { return metric(http_port, "evpipe_nats_consumers_ready") == 1; })) << evp.log();
  EXPECT_NE(http_get(http_port, "/health/ready").find("200"), std::string::npos);

  server.reset();  // killed; back on the same port with another password
  nats_server::auth changed = a;
  changed.password = "second-secret";
  nats_server again("reauth2", changed, "", port);
  ASSERT_TRUE(evp.log_has("closed the connection", 30s)) << evp.log();
  std::string ready = http_get(http_port, "/health/ready");
  EXPECT_NE(ready.find("503"), std::string::npos) << ready;
  EXPECT_NE(ready.find("closed for good"), std::string::npos) << ready;
  EXPECT_NE(ready.find("restart evpipe"), std::string::npos) << ready;
  EXPECT_EQ(evp.log().find("first-secret"), std::string::npos) << "the password was logged";
}

TEST_F(NatsSource, LoadGeneratorPublishesTheMixAndItVerifies) {
  nats_server server("load");
  nats_client client(server.url());
  client.add_stream("EVENTS", "tracker.>");
  uint16_t http_port = free_port();
  evpipe_process evp(nats_config(db, server.url(), http_port), "nats_load");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  const std::string run = "nl" + std::to_string(::getpid());
  std::string out = env_or("TMPDIR", "/tmp") + "/" + run + ".out";
  std::string cmd = evpipe_load_binary() + " --target " + server.url() +
                    " --connections 2 --count 3000 --invalid-frac 0.05 --dup-frac 0.1 --too-large-bytes 4096 --seed 7"
                    " --quiet --run-id " + run + " --verify '" + db.dsn() + "' > " + out + " 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << read_file(out) << "\n" << evp.log();
  EXPECT_EQ(count("SELECT count(DISTINCT topic) FROM events_mirror"), 1);
  EXPECT_EQ(db.column("SELECT DISTINCT topic FROM events_mirror").at(0), "tracker/events/load");
  // A subject no stream stores: the publisher stops with the reason.
  cmd = evpipe_load_binary() + " --target " + server.url() + " --topic other/x --count 10 --quiet > " + out +
        " 2>&1";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_NE(read_file(out).find("no JetStream stream stores \"other.x\""), std::string::npos) << read_file(out);
}

}  // namespace
}  // namespace evpipe::testing
