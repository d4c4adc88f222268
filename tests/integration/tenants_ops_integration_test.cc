// Tenants in operation (issue 13, docs/tenants.md): metrics by tenant with
// their label folding, `evpipe dlq requeue` keeping each dead letter's
// tenant, HTTP requests whose tenants come from their events' claims
// answered 429 before anything of them is committed, quotas reloaded in
// place on SIGHUP, and an HTTP source's tokens swapped in place on SIGHUP.

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/integration/tenants_fixture.h"
#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

namespace fs = std::filesystem;

// The value of one series (`name{labels}` exactly as rendered), -1 when absent.
double series(const std::string& metrics, const std::string& name_and_labels) {
  std::istringstream lines(metrics);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name_and_labels + " ", 0) == 0) return std::stod(line.substr(name_and_labels.size() + 1));
  }
  return -1;
}

// Two tenants by listener, a third by claim: committed events, dead letters
// and quota pauses by tenant; with max_label_values = 2 the third tenant
// folds into "other" and no count is lost.
TEST_F(Tenants, MetricsCountEachTenantApartAndFoldTheRestIntoOther) {
  uint16_t a = free_port(), b = free_port(), c = free_port(), metrics = free_port();
  std::string cfg = config(metrics, "[tenants.quotas.alpha]\nevents_per_s = 20\nburst = 5\n") +
                    "[metrics]\nmax_label_values = 2\n" + tcp(a, "tenant = \"alpha\"\n") +
                    tcp(b, "tenant = \"beta\"\n") + tcp(c, "");
  evpipe_process evp(cfg, "tenants_metrics");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(c);
  std::string on_a, on_b, on_c;
  for (int i = 0; i < 30; ++i) on_a += event("ma" + std::to_string(i)) + "\n";  // over alpha's burst: paused
  for (int i = 0; i < 3; ++i) on_b += event("mb" + std::to_string(i)) + "\n";
  on_b += event("mb-claim", claim("alpha")) + "\n";  // tenant_mismatch, beta's
  for (int i = 0; i < 4; ++i) on_c += event("mc" + std::to_string(i), claim("gamma")) + "\n";
  {
    ndjson_client ca(a);
    ca.send_all(on_a);
    ASSERT_EQ(ca.read_acks_until(30, 60s), 30u) << evp.log();
  }
  {
    ndjson_client cb(b);
    cb.send_all(on_b);
    ASSERT_EQ(cb.read_acks_until(4, 60s), 4u) << evp.log();
  }
  {
    ndjson_client cc(c);
    cc.send_all(on_c);
    ASSERT_EQ(cc.read_acks_until(4, 60s), 4u) << evp.log();
  }
  std::string m;
  // Counted once each batch commits: the acks above came after the commits.
  ASSERT_TRUE(eventually([&] {
    m = http_get(metrics, "/metrics");
    return series(m, "evpipe_ingest_by_tenant_total{tenant=\"other\"}") == 4;
  }, 30s)) << m;
  EXPECT_EQ(series(m, "evpipe_ingest_by_tenant_total{tenant=\"alpha\"}"), 30) << m;
  EXPECT_EQ(series(m, "evpipe_ingest_by_tenant_total{tenant=\"beta\"}"), 3) << m;
  EXPECT_EQ(series(m, "evpipe_ingest_by_tenant_total{tenant=\"gamma\"}"), -1) << "folded: " << m;
  EXPECT_EQ(series(m, "evpipe_dlq_by_tenant_total{tenant=\"beta\",reason=\"tenant_mismatch\"}"), 1) << m;
  EXPECT_EQ(series(m, "evpipe_dlq_by_tenant_total{tenant=\"alpha\",reason=\"tenant_mismatch\"}"), -1) << m;
  EXPECT_GE(series(m, "evpipe_throttled_by_tenant_total{tenant=\"alpha\"}"), 1) << m;
  EXPECT_EQ(series(m, "evpipe_throttled_by_tenant_total{tenant=\"beta\"}"), -1) << m;
  EXPECT_EQ(metric_family_sum(m, "evpipe_ingest_by_tenant_total"), 37) << m;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// Dead letters of two tenants with the same key, refused by a constraint,
// then requeued once it is dropped: each comes back as its own tenant's
// event (two rows, not one and a duplicate). A dead letter that claimed
// another tenant is refused again as its sender's, and one whose source did
// not allow the tenant it claimed stays refused: neither is ever stored as
// the claimed tenant's.
TEST_F(Tenants, DlqRequeueKeepsEachDeadLettersTenant) {
  uint16_t a = free_port(), b = free_port(), c = free_port(), metrics = free_port();
  std::string cfg = config(metrics, "") + tcp(a, "tenant = \"alpha\"\n") + tcp(b, "tenant = \"beta\"\n") +
                    tcp(c, "allowed_tenants = [\"alpha\"]\n");
  std::ofstream(dir / "evpipe.toml") << cfg;
  evpipe_process evp(cfg, "tenants_requeue");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  db.exec("ALTER TABLE events_mirror ADD CONSTRAINT blocked CHECK (NOT (payload->'payload' ? 'blocked'))");
  evp.start(b);
  const std::string blocked = ",\"blocked\":true";
  {
    ndjson_client ca(a), cb(b), cc(c);
    ca.send_all(event("r1", "", blocked) + "\n" + event("r2", claim("beta")) + "\n");
    cb.send_all(event("r1", "", blocked) + "\n");
    cc.send_all(event("r3", claim("beta")) + "\n");  // not allowed there: a tenant_mismatch without a tenant
    ASSERT_EQ(ca.read_acks_until(2, 60s), 2u) << evp.log();
    ASSERT_EQ(cb.read_acks_until(1, 60s), 1u) << evp.log();
    ASSERT_EQ(cc.read_acks_until(1, 60s), 1u) << evp.log();
  }
  ASSERT_EQ(db.column("SELECT coalesce(payload->>'idempotency_key', '?') || '|' || tenant_id || '|' || reason_code "
                      "FROM dlq_events ORDER BY 1"),
            (std::vector<std::string>{"r1|alpha|db_rejected", "r1|beta|db_rejected", "r2|alpha|tenant_mismatch",
                                      "r3||tenant_mismatch"}));
  db.exec("ALTER TABLE events_mirror DROP CONSTRAINT blocked");
  std::string out = (dir / "requeue.out").string();
  std::string cmd = evpipe_binary() + " dlq requeue --config " + (dir / "evpipe.toml").string() + " > " +
                    out + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(out);
  std::string said(std::istreambuf_iterator<char>(in), {});
  EXPECT_NE(said.find("requeued 4 of 4 dead letters: 2 mirrored, 0 already stored, 2 dead-lettered again"),
            std::string::npos)
      << said;
  EXPECT_EQ(rows(), (std::vector<std::string>{"alpha|r1", "beta|r1"}));
  EXPECT_EQ(db.column("SELECT coalesce(payload->>'idempotency_key', '?') || '|' || tenant_id || '|' || reason_code "
                      "FROM dlq_events ORDER BY 1"),
            (std::vector<std::string>{"r2|alpha|tenant_mismatch", "r3||tenant_mismatch"}));
  // Requeued again: the same key of the same tenant is already stored.
  db.exec("INSERT INTO dlq_events (original_topic, failure_reason, reason_code, payload, tenant_id) VALUES "
          "('t', 'x', 'db_rejected', '" + event("r1") + "'::jsonb, 'beta')");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  EXPECT_EQ(rows(), (std::vector<std::string>{"alpha|r1", "beta|r1"}));
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// An HTTP listener without tokens or a fixed tenant: the tenants are the
// events' claims, known only once the body is read. A request naming a
// tenant that was already over its quota gets 429 with Retry-After and
// nothing of it is committed (not even another tenant's events in it);
// the request that took the tenant over was taken whole.
TEST_F(Tenants, HttpRequestsClaimingATenantOverItsQuotaGet429AndNothingOfThemIsCommitted) {
  uint16_t http = free_port(), metrics = free_port();
  std::string cfg = config(metrics, "[tenants.quotas.alpha]\nevents_per_s = 1\nburst = 2\n") +
                    "[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(http) + "\"\n";
  evpipe_process evp(cfg, "tenants_http_claims");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http);
  std::string ten;
  for (int i = 0; i < 10; ++i) ten += event("hc" + std::to_string(i), claim("alpha")) + "\n";
  auto r = post(http, ten, "");
  ASSERT_EQ(r.status, 200) << r.body;  // within the quota when it came: all of it (now 8 s over)
  EXPECT_NE(r.body.find("\"ok\":10"), std::string::npos) << r.body;
  r = post(http, event("hc-late", claim("alpha")) + "\n", "");
  EXPECT_EQ(r.status, 429) << r.headers << r.body;
  EXPECT_NE(r.headers.find("Retry-After: "), std::string::npos) << r.headers;
  EXPECT_NE(r.body.find("alpha"), std::string::npos) << r.body;
  r = post(http, event("hc-beta", claim("beta")) + "\n" + event("hc-mixed", "", claim("alpha")) + "\n", "");
  EXPECT_EQ(r.status, 429) << r.body;
  r = post(http, event("hb1", claim("beta")) + "\n" + event("hn1") + "\n", "");
  EXPECT_EQ(r.status, 200) << "other tenants, and events without one, go on: " << r.body;
  auto stored = rows();
  std::sort(stored.begin(), stored.end());  // byte order, whatever the database's collation
  std::vector<std::string> expected = {"beta|hb1", "|hn1"};
  for (int i = 0; i < 10; ++i) expected.push_back("alpha|hc" + std::to_string(i));
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(stored, expected);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
  std::string m = http_get(metrics, "/metrics");
  EXPECT_EQ(series(m, "evpipe_throttled_by_tenant_total{tenant=\"alpha\"}"), 2) << m;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// SIGHUP with new [tenants] quotas: applied from the next event on, each
// tenant's debt re-priced at its new rate, and no connection is closed.
TEST_F(Tenants, ASighupAppliesNewQuotasWithoutClosingConnections) {
  uint16_t http = free_port(), b = free_port(), metrics = free_port();
  auto cfg = [&](const std::string& alpha_quota) {
    return config(metrics, "[tenants.quotas.alpha]\n" + alpha_quota) + tcp(b, "tenant = \"beta\"\n") +
           "[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(http) + "\"\n";
  };
  evpipe_process evp(cfg("events_per_s = 1\nburst = 1\n"), "tenants_reload");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http);
  ndjson_client beta(b);  // open across the reload
  beta.send_all(event("rb1") + "\n");
  ASSERT_EQ(beta.read_acks_until(1, 60s), 1u) << evp.log();
  std::string sixty;
  for (int i = 0; i < 60; ++i) sixty += event("ra" + std::to_string(i), claim("alpha")) + "\n";
  ASSERT_EQ(post(http, sixty, "").status, 200);  // alpha is now some 59 s over
  ASSERT_EQ(post(http, event("ra-late", claim("alpha")) + "\n", "").status, 429);
  evp.write_config(cfg("events_per_s = 100000\nburst = 100000\n"));
  evp.kill(SIGHUP);
  int status = 0;
  EXPECT_TRUE(eventually([&] {
    status = post(http, event("ra-late", claim("alpha")) + "\n", "").status;
    return status == 200;
  }, 20s, 200ms)) << "still " << status << "\n" << evp.log();
  EXPECT_EQ(evp.log().find("cannot change while evpipe runs"), std::string::npos) << evp.log();
  beta.send_all(event("rb2") + "\n");
  EXPECT_EQ(beta.read_acks_until(2, 60s), 2u) << "the connection opened before the reload still works";
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE tenant_id = 'alpha'"), 61);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// One keep-alive HTTP/1.1 connection: POSTs in turn on the same socket. A
// reply with status 0 means the connection was closed (or timed out).
class keepalive_poster {
 public:
  explicit keepalive_poster(uint16_t port) : fd_(connect_loopback(port)) {
    timeval tv{30, 0};  // a test must not hang on a missing answer
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~keepalive_poster() { ::close(fd_); }
  keepalive_poster(const keepalive_poster&) = delete;
  keepalive_poster& operator=(const keepalive_poster&) = delete;

  http_reply post(const std::string& body, const std::string& token) {
    std::string req = "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                      "Authorization: Bearer " + token + "\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\n\r\n" + body;
    http_reply r;
    if (::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return r;
    size_t end;
    while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
      if (!read_more()) return r;
    }
    std::string head = in_.substr(0, end), lower = head;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    size_t length = 0;
    if (auto at = lower.find("\r\ncontent-length: "); at != std::string::npos) {
      length = std::stoul(lower.substr(at + 18));
    }
    while (in_.size() < end + 4 + length) {
      if (!read_more()) return r;
    }
    r.status = std::atoi(head.c_str() + 9);
    r.headers = head;
    r.body = in_.substr(end + 4, length);
    in_.erase(0, end + 4 + length);
    return r;
  }

 private:
  bool read_more() {
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    in_.append(buf, static_cast<size_t>(n));
    return true;
  }
  int fd_;
  std::string in_;
};

// SIGHUP after the tokens file changed: the HTTP source's binding is swapped
// in place. A keep-alive connection authenticated before the reload stays
// open; on it, after the reload, a kept token still works, a new token works
// and a removed one gets 401. A producer posting all along loses nothing.
TEST_F(Tenants, ASighupSwapsAnHttpSourcesTokensWithoutClosingItsConnections) {
  uint16_t http = free_port(), metrics = free_port();
  const fs::path tokens = dir / "reload.tokens";
  std::ofstream(tokens) << "a-token alpha\ngone-token gone\n";
  std::string cfg = config(metrics, "") + "[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(http) +
                    "\"\ntokens_file = \"" + tokens.string() + "\"\n";
  evpipe_process evp(cfg, "tenants_token_swap");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http);

  keepalive_poster kept(http);
  auto r = kept.post(event("ka1") + "\n", "a-token");
  ASSERT_EQ(r.status, 200) << r.body;
  r = kept.post(event("kg1") + "\n", "gone-token");
  ASSERT_EQ(r.status, 200) << r.body;

  // A producer on fresh connections across the reload: each event is posted
  // until it gets 200 (a 503 or a refused connection is retried), bounded.
  constexpr int produced = 150;
  std::atomic<int> committed{0}, refused{0};
  std::thread producer([&] {
    for (int i = 0; i < produced; ++i) {
      for (int attempt = 0; attempt < 100; ++attempt) {
        auto p = post(http, event("p" + std::to_string(i)) + "\n", "a-token");
        if (p.status == 200) {
          committed.fetch_add(1);
          break;
        }
        refused.fetch_add(1);
        std::this_thread::sleep_for(20ms);
      }
    }
  });
  std::this_thread::sleep_for(200ms);
  std::ofstream(tokens) << "a-token alpha\nnew-token newcomer\n";
  evp.kill(SIGHUP);
  EXPECT_TRUE(eventually([&] { return evp.log().find("reload done") != std::string::npos; }, 30s, 50ms)) << evp.log();
  producer.join();
  EXPECT_EQ(committed.load(), produced) << refused.load() << " refused\n" << evp.log();

  r = kept.post(event("ka2") + "\n", "a-token");
  EXPECT_EQ(r.status, 200) << "the connection opened before the reload still works: " << r.headers << r.body << "\n"
                           << evp.log();
  r = kept.post(event("kn1") + "\n", "new-token");
  EXPECT_EQ(r.status, 200) << "a token added by the reload works on it: " << r.headers << r.body;
  r = kept.post(event("kg2") + "\n", "gone-token");
  EXPECT_EQ(r.status, 401) << "a token the reload removed is refused on it: " << r.headers << r.body;
  EXPECT_EQ(evp.log().find("reload: stopping"), std::string::npos) << evp.log();

  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE tenant_id = 'alpha'"), produced + 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE tenant_id = 'newcomer'"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE tenant_id = 'gone'"), 1);  // kg1, before the reload
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
