// Tenants through the running daemon and PostgreSQL (issue 13,
// docs/tenants.md): each way of finding the tenant, cross-tenant claims
// dead-lettered as tenant_mismatch and never mirrored, the same key from two
// tenants as two rows (and from one tenant as one row, across restarts),
// the migration to the (tenant_id, idempotency_key) index while writers
// run, and quotas (a paused TCP connection, HTTP 429 with Retry-After).

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"
#include "tests/integration/stream_clients.h"
#include "tests/integration/tenants_fixture.h"

namespace evpipe::testing {
namespace {

namespace fs = std::filesystem;

// The stream's SSE client (stream_clients.h), reduced to what these tests
// look at: the status code, and the data of the frames that carry an event.
class sse_reader {
 public:
  sse_reader(uint16_t port, const std::string& query, const std::string& headers = "")
      : client_(port, query, "Accept: text/event-stream\r\n" + headers) {}
  // The response's status code (reads the head first).
  int status(std::chrono::milliseconds timeout = 10s) {
    std::string head = client_.head(timeout);
    return head.size() > 12 ? std::atoi(head.c_str() + 9) : 0;
  }
  // Data of event frames until `n` came or `timeout` passed (all so far).
  std::vector<std::string> events(size_t n, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (got_.size() < n) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      auto frame = client_.next(left);
      if (!frame) break;
      if (frame->data.find("idempotency_key") != std::string::npos) got_.push_back(frame->data);
    }
    return got_;
  }

 private:
  sse_client client_;
  std::vector<std::string> got_;
};

TEST_F(Tenants, ListenersFixTenantsClaimsAreCheckedAndKeysAreScopedToTheTenant) {
  uint16_t a = free_port(), b = free_port(), c = free_port(), metrics = free_port();
  std::string cfg = config(metrics, "") + tcp(a, "tenant = \"alpha\"\n") + tcp(b, "tenant = \"beta\"\n") +
                    tcp(c, "allowed_tenants = [\"alpha\", \"gamma\"]\n");
  evpipe_process evp(cfg, "tenants_tcp");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(c);
  const std::string on_a = event("k1") + "\n" + event("k2", claim("alpha")) + "\n" + event("k3", claim("beta")) +
                           "\n" + event("k1") + "\n" + event("k6", "", claim("beta")) + "\n";
  const std::string on_b = event("k1") + "\n" + event("k2") + "\n";
  const std::string on_c = event("k1", claim("gamma")) + "\n" + event("k4", claim("beta")) + "\n" +
                           event("k5", "", claim("alpha")) + "\n" + event("k7") + "\n" + event("k8", claim("x y")) + "\n";
  {
    ndjson_client ca(a), cb(b), cc(c);
    ca.send_all(on_a);
    cb.send_all(on_b);
    cc.send_all(on_c);
    ASSERT_EQ(ca.read_acks_until(5, 60s), 5u) << evp.log();
    ASSERT_EQ(cb.read_acks_until(2, 60s), 2u) << evp.log();
    ASSERT_EQ(cc.read_acks_until(5, 60s), 5u) << evp.log();
  }
  const std::vector<std::string> expected = {"alpha|k1", "alpha|k2", "alpha|k5", "beta|k1", "beta|k2", "gamma|k1"};
  EXPECT_EQ(rows(), expected);
  auto dead = db.column(
      "SELECT coalesce(payload->>'idempotency_key', '?') || '|' || tenant_id || '|' || reason_code FROM dlq_events ORDER BY 1");
  const std::vector<std::string> dead_expected = {"k3|alpha|tenant_mismatch", "k4||tenant_mismatch",
                                                  "k6|alpha|tenant_mismatch", "k7||tenant_mismatch",
                                                  "k8||invalid_tenant"};
  EXPECT_EQ(dead, dead_expected);
  std::string m = http_get(metrics, "/metrics");
  EXPECT_NE(m.find("reason=\"tenant_mismatch\"} 4"), std::string::npos) << m;

  // Restarted (the dedup window is empty): resent keys meet the unique index
  // on (tenant_id, idempotency_key); a new tenant's copy of a key is new.
  evp.kill(SIGTERM);
  ASSERT_EQ(evp.wait(60s), 0) << evp.log();
  evp.start(c);
  {
    ndjson_client ca(a), cb(b), cc(c);
    ca.send_all(on_a);
    cb.send_all(on_b);
    cc.send_all(event("k2", claim("gamma")) + "\n");
    ASSERT_EQ(ca.read_acks_until(5, 60s), 5u) << evp.log();
    ASSERT_EQ(cb.read_acks_until(2, 60s), 2u) << evp.log();
    ASSERT_EQ(cc.read_acks_until(1, 60s), 1u) << evp.log();
  }
  const std::vector<std::string> after = {"alpha|k1", "alpha|k2", "alpha|k5", "beta|k1", "beta|k2", "gamma|k1", "gamma|k2"};
  EXPECT_EQ(rows(), after);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 5) << "resent dead letters are stored once per tenant";
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

TEST_F(Tenants, HttpTokensBindTenantsAndRefuseOtherClaims) {
  std::ofstream(dir / "tokens") << "# token tenant\nalpha-token alpha\nbeta-token  beta\n";
  uint16_t port = free_port(), metrics = free_port();
  std::string cfg = config(metrics, "") + "[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(port) +
                    "\"\ntokens_file = \"" + (dir / "tokens").string() + "\"\n";
  evpipe_process evp(cfg, "tenants_http");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  EXPECT_EQ(post(port, event("h1") + "\n", "").status, 401);
  EXPECT_EQ(post(port, event("h1") + "\n", "gamma-token").status, 401);
  EXPECT_EQ(post(port, event("h1") + "\n", "alpha-tokenx").status, 401);
  auto r = post(port, event("h1") + "\n" + event("h2", claim("alpha")) + "\n", "beta-token");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("\"dlq\":1"), std::string::npos) << r.body;
  r = post(port, event("h1") + "\n" + event("h2", "", claim("alpha")) + "\n", "alpha-token");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("\"ok\":2"), std::string::npos) << r.body;
  const std::vector<std::string> expected = {"alpha|h1", "alpha|h2", "beta|h1"};
  EXPECT_EQ(rows(), expected);
  EXPECT_EQ(db.column("SELECT tenant_id || '|' || reason_code FROM dlq_events"),
            std::vector<std::string>{"beta|tenant_mismatch"});
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

TEST_F(Tenants, WithTenancyOffTheColumnsStayEmptyAndAClaimIsJustPayload) {
  uint16_t port = free_port(), metrics = free_port();
  std::string cfg = "[pipeline]\nshards = 2\n[postgres]\ndsn = \"" + db.dsn() + "\"\n[http]\nlisten = \"127.0.0.1:" +
                    std::to_string(metrics) + "\"\n" + tcp(port, "");
  evpipe_process evp(cfg, "tenants_off");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  ndjson_client c(port);
  c.send_all(event("o1", claim("alpha")) + "\n" + event("o1", claim("beta")) + "\n" + event("o2") + "\n");
  ASSERT_EQ(c.read_acks_until(3, 60s), 3u) << evp.log();
  const std::vector<std::string> expected = {"|o1", "|o2"};
  EXPECT_EQ(rows(), expected);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// An events_mirror as the previous evpipe left it (unique index on the key
// alone, no tenant_id), writers inserting all along: `evpipe migrate` adds
// the column, builds the new index concurrently and drops the old one; no
// writer fails or loses a row, and writers commit while the index is built.
TEST_F(Tenants, MigrateMovesTheUniqueIndexWhileWritersRun) {
  uint16_t port = free_port(), metrics = free_port();
  evpipe_process evp(config(metrics, "") + tcp(port, ""), "tenants_migrate");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec("DROP INDEX events_mirror_tenant_idempotency_key_key");
  db.exec("ALTER TABLE events_mirror DROP COLUMN tenant_id");
  db.exec("ALTER TABLE dlq_events DROP COLUMN tenant_id");
  db.exec("ALTER TABLE events_mirror ADD CONSTRAINT events_mirror_idempotency_key_key UNIQUE (idempotency_key)");
  const long prefilled = 300'000;  // enough rows that the index build takes a while
  db.exec("INSERT INTO events_mirror (topic, payload) SELECT 't', jsonb_build_object('idempotency_key', 'p' || i, "
          "'trace_id', '550e8400-e29b-41d4-a716-446655440000', 'kind', 'k') FROM generate_series(1, " +
          std::to_string(prefilled) + ") i");

  std::atomic<bool> stop{false}, migrating{false};
  std::atomic<long> written{0}, written_while_migrating{0}, failures{0};
  std::string first_error;
  std::mutex error_mu;
  auto writer = [&](int id) {
    PGconn* conn = PQconnectdb(db.dsn().c_str());
    for (long i = 0; i < 200'000 && !stop.load(); ++i) {
      std::string sql = "INSERT INTO events_mirror (topic, payload) VALUES ('t', jsonb_build_object('idempotency_key', 'w" +
                        std::to_string(id) + "-" + std::to_string(i) +
                        "', 'trace_id', '550e8400-e29b-41d4-a716-446655440000', 'kind', 'k'))";
      PGresult* r = PQexec(conn, sql.c_str());
      if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        ++written;
        if (migrating.load()) ++written_while_migrating;
      } else {
        ++failures;
        std::lock_guard lock(error_mu);
        if (first_error.empty()) first_error = PQresultErrorMessage(r);
      }
      PQclear(r);
    }
    PQfinish(conn);
  };
  std::thread w1(writer, 1), w2(writer, 2);
  ASSERT_TRUE(eventually([&] { return written.load() > 100; }, 60s));
  migrating = true;
  int rc = evp.run_command("migrate");
  migrating = false;
  std::this_thread::sleep_for(200ms);
  stop = true;
  w1.join();
  w2.join();
  ASSERT_EQ(rc, 0) << evp.log("migrate.log");
  EXPECT_NE(evp.log("migrate.log").find("concurrently"), std::string::npos) << evp.log("migrate.log");
  EXPECT_EQ(failures.load(), 0) << first_error;
  EXPECT_GT(written_while_migrating.load(), 0) << "writers must go on while migrate runs";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), prefilled + written.load());
  // One unique index besides the primary key: the new one (the old constraint is gone), valid.
  EXPECT_EQ(db.column("SELECT string_agg(ic.relname, ',') FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
                      "WHERE i.indrelid = 'events_mirror'::regclass AND i.indisunique AND NOT i.indisprimary"),
            std::vector<std::string>{"events_mirror_tenant_idempotency_key_key"});
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_index WHERE indrelid = 'events_mirror'::regclass AND NOT indisvalid"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM pg_constraint WHERE conrelid = 'events_mirror'::regclass AND contype = 'u'"), 0);
  // evpipe runs on the migrated table: same key, two tenants, two rows.
  evp.start(port);
  ndjson_client c(port);
  c.send_all(event("p1", claim("alpha")) + "\n" + event("p1", claim("beta")) + "\n" + event("p1") + "\n");
  ASSERT_EQ(c.read_acks_until(3, 60s), 3u) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'p1'"), 3);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key = 'p1' AND tenant_id = ''"), 1);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

TEST_F(Tenants, OverItsQuotaATenantsConnectionPausesAndItsRequestsGet429WhileOthersFlow) {
  std::ofstream(dir / "tokens") << "alpha-token alpha\nbeta-token beta\n";
  uint16_t a = free_port(), b = free_port(), http = free_port(), metrics = free_port();
  std::string cfg = config(metrics, "[tenants.quotas.alpha]\nevents_per_s = 200\nburst = 200\n") +
                    tcp(a, "tenant = \"alpha\"\n") + tcp(b, "tenant = \"beta\"\n") +
                    "[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(http) + "\"\ntokens_file = \"" +
                    (dir / "tokens").string() + "\"\n";
  evpipe_process evp(cfg, "tenants_quota");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http);
  // 3000 alpha events at 200/s past a burst of 200: at least 14 s by the
  // quota (a connection pauses after each read for as long as its tenant is
  // over; a read holds at most 64 KiB, some 400 of these events).
  const uint64_t n = 3000;
  std::string alpha, beta;
  for (uint64_t i = 0; i < n; ++i) alpha += event("qa" + std::to_string(i)) + "\n";
  for (uint64_t i = 0; i < n; ++i) beta += event("qb" + std::to_string(i)) + "\n";
  ndjson_client ca(a), cb(b);
  const auto sent_at = std::chrono::steady_clock::now();
  std::thread alpha_sender([&] { ca.send_all(alpha); });  // blocks while alpha's connection is paused
  ASSERT_TRUE(eventually([&] { return ca.read_acks_until(1, 100ms) >= 1; }, 60s)) << evp.log();
  cb.send_all(beta);
  ASSERT_EQ(cb.read_acks_until(n, 60s), n) << evp.log();
  EXPECT_LT(ca.read_acks_until(n, 1ms), n) << "alpha, over its quota, is still paused when beta is done";
  // HTTP: alpha is over its quota: 429 with Retry-After; beta is not.
  auto r = post(http, event("qh1") + "\n", "alpha-token");
  EXPECT_EQ(r.status, 429) << r.headers << r.body;
  EXPECT_NE(r.headers.find("Retry-After: "), std::string::npos) << r.headers;
  r = post(http, event("qh2") + "\n", "beta-token");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ca.read_acks_until(n, 120s), n) << evp.log();
  // The quota holds: past its burst and one read, alpha's events go in no
  // faster than 200/s. A lower bound: a slow machine only takes longer.
  const auto took = std::chrono::steady_clock::now() - sent_at;
  EXPECT_GE(took, std::chrono::seconds(10)) << "alpha's " << n << " events at 200/s took only "
                                            << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  alpha_sender.join();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE tenant_id = 'alpha'"), long(n));
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE tenant_id = 'beta'"), long(n) + 1);
  // Over its quota, alpha's connection reads a little at a time (4 KiB,
  // some 24 of these events), so what it takes trickles in at the quota's
  // pace rather than a whole read at once every 2 s, whose one large batch
  // would hold up other tenants' events in the shard (perf/tenant_fairness.sh):
  // past its burst and first read (at most 64 KiB, some 400 events), it
  // pauses after every small read, over 100 times, where 64 KiB reads paused
  // it some 8 times. (Counted by pauses, not by rows per transaction: a
  // shard behind on beta's events batches what queued up meanwhile.)
  std::string m = http_get(metrics, "/metrics");
  EXPECT_GE(metric_family_sum(m, "evpipe_tenant_throttled_total"), 50) << m;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// While a TCP connection waits for its tenant's quota it reads nothing, so
// lines may wait in its socket: it is not idle, and idle_timeout_s counts
// only time in which it reads. Here its first read overdraws the quota by 40
// events at 10/s, a 4 s wait, and the client sends 10 more 2 s into it. The
// connection before this was closed as idle 1 s into the wait (nothing was
// unacked), and those 10 were never read.
TEST_F(Tenants, AConnectionWaitingForItsQuotaIsNotClosedAsIdle) {
  uint16_t a = free_port(), metrics = free_port();
  std::string cfg = config(metrics, "[tenants.quotas.alpha]\nevents_per_s = 10\nburst = 10\n") +
                    tcp(a, "tenant = \"alpha\"\nidle_timeout_s = 1\n");
  evpipe_process evp(cfg, "tenants_quota_idle");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(metrics);
  std::string first, second;
  for (int i = 0; i < 50; ++i) first += event("qi" + std::to_string(i)) + "\n";
  for (int i = 50; i < 60; ++i) second += event("qi" + std::to_string(i)) + "\n";
  ndjson_client c(a);
  c.send_all(first);
  ASSERT_EQ(c.read_acks_until(50, 30s), 50u) << evp.log();
  std::this_thread::sleep_for(2s);
  c.send_all(second);
  EXPECT_EQ(c.read_acks_until(60, 30s), 60u) << evp.log();
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE tenant_id = 'alpha'"), 60);
  EXPECT_EQ(metric_family_sum(http_get(metrics, "/metrics"), "evpipe_connections_timed_out_total"), 0);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// The read side: a stream client with a tenant's token sees only that
// tenant's events, live and caught up, whatever it asks for; replay and
// dlq list take --tenant.
TEST_F(Tenants, AStreamClientOfATenantNeverSeesAnotherTenantsEvents) {
  std::ofstream(dir / "stream.tokens") << "alpha-s alpha\nbeta-s beta\n";
  uint16_t a = free_port(), b = free_port(), stream = free_port(), metrics = free_port();
  std::string cfg = config(metrics, "") + tcp(a, "tenant = \"alpha\"\n") + tcp(b, "tenant = \"beta\"\n") +
                    "[stream]\nlisten = \"127.0.0.1:" + std::to_string(stream) + "\"\npoll_ms = 5\ntokens_file = \"" +
                    (dir / "stream.tokens").string() + "\"\n";
  std::ofstream(dir / "evpipe.toml") << cfg;
  evpipe_process evp(cfg, "tenants_stream");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(b);
  ASSERT_TRUE(eventually([&] {
    try {
      ::close(connect_loopback(stream));
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }));
  EXPECT_EQ(sse_reader(stream, "?since=now").status(), 401);
  EXPECT_EQ(sse_reader(stream, "?since=now&access_token=gamma-s").status(), 401);
  // Subscribed before the events commit (from a time in the past, so that
  // none is missed whenever the subscription takes effect): alpha's client
  // asks for beta's events; beta's client asks for nothing in particular.
  sse_reader alpha_live(stream, "?since=2000-01-01T00:00:00Z&tenant=beta&access_token=alpha-s");
  sse_reader beta_live(stream, "?since=2000-01-01T00:00:00Z", "Authorization: Bearer beta-s\r\n");
  ASSERT_EQ(alpha_live.status(), 200);
  ASSERT_EQ(beta_live.status(), 200);
  const int n = 50;
  std::string on_a, on_b;
  for (int i = 0; i < n; ++i) {
    on_a += event("s" + std::to_string(i), "", ",\"from\":\"from-alpha\"") + "\n";
    on_b += event("s" + std::to_string(i), "", ",\"from\":\"from-beta\"") + "\n";
  }
  on_b += event("s-claim", claim("alpha"), ",\"from\":\"from-beta\"") + "\n";  // dead-lettered: beta's, not alpha's
  {
    ndjson_client ca(a), cb(b);
    ca.send_all(on_a);
    cb.send_all(on_b);
    ASSERT_EQ(ca.read_acks_until(n, 60s), uint64_t(n)) << evp.log();
    ASSERT_EQ(cb.read_acks_until(n + 1, 60s), uint64_t(n + 1)) << evp.log();
  }
  auto check = [&](sse_reader& r, const std::string& mine, const std::string& theirs, const char* what) {
    // Rows are read below the visibility horizon: another test's long
    // transaction on the same cluster may hold them back for a while.
    EXPECT_EQ(r.events(n, 60s).size(), size_t(n)) << what;
    auto got = r.events(n + 1, 2s);  // one more than there is: waits the whole time for an extra one
    EXPECT_EQ(got.size(), size_t(n)) << what;
    for (const auto& d : got) {
      EXPECT_NE(d.find(mine), std::string::npos) << what << ": " << d;
      EXPECT_EQ(d.find(theirs), std::string::npos) << what << ": " << d;
    }
  };
  check(alpha_live, "from-alpha", "from-beta", "alpha live");
  check(beta_live, "from-beta", "from-alpha", "beta live");
  // Caught up from the table.
  sse_reader alpha_past(stream, "?since=2000-01-01T00:00:00Z&tenant=beta&access_token=alpha-s");
  ASSERT_EQ(alpha_past.status(), 200);
  check(alpha_past, "from-alpha", "from-beta", "alpha from the table");

  // replay --tenant and dlq list --tenant.
  auto run = [&](const std::string& args) {
    std::string out = (dir / "out.txt").string();
    std::string cmd = evpipe_binary() + " " + args + " --config " + (dir / "evpipe.toml").string() +
                      " > " + out + " 2>/dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    std::ifstream in(out);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  std::string replayed;
  eventually([&] {
    replayed = run("replay --no-progress --tenant alpha");
    return std::count(replayed.begin(), replayed.end(), '\n') >= n;
  }, 60s, 200ms);
  EXPECT_EQ(std::count(replayed.begin(), replayed.end(), '\n'), n) << replayed;
  EXPECT_EQ(replayed.find("from-beta"), std::string::npos);
  std::string dead_alpha = run("dlq list --json --tenant alpha");
  EXPECT_EQ(dead_alpha.find("tenant_mismatch"), std::string::npos) << dead_alpha;
  std::string dead_beta = run("dlq list --json --tenant beta");
  EXPECT_NE(dead_beta.find("tenant_mismatch"), std::string::npos) << dead_beta;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
