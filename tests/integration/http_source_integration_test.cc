// The HTTP source end to end: the evpipe binary against the real PostgreSQL
// that scripts/test.sh starts; requests over a plain socket; every status the
// source promises, and responses that wait for the commit.

#include <gtest/gtest.h>

#include <poll.h>

#include <algorithm>
#include <future>
#include <iostream>

#include "tests/support/harness.h"
#include "tests/support/http_request.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

class HttpSource : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
  }
  std::string config(uint16_t port, uint16_t metrics_port, const std::string& extra = "") {
    return "[pipeline]\nshards = 2\nqueue_capacity = 64\n"
           "[events]\nmax_event_bytes = 4096\n"
           "[postgres]\ndsn = \"" + db.dsn() + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
           "[http]\nlisten = \"127.0.0.1:" + std::to_string(metrics_port) + "\"\n"
           "[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\ntopic = \"tracker/events/http\"\n"
           "max_body_bytes = 65536\n" + extra;
  }
  test_db db;
};

TEST_F(HttpSource, AcceptsOneEventAnArrayOrNdjsonAndReportsEachOutcome) {
  uint16_t port = free_port(), metrics_port = free_port();
  evpipe_process evp(config(port, metrics_port), "http_forms");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);

  auto one = http_request(port, "POST", "/v1/events", valid_event("h-1"));
  EXPECT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(one.body, "{\"accepted\":1,\"ok\":1,\"duplicate\":0,\"dlq\":0,\"results\":[{\"outcome\":\"ok\"}]}\n");

  std::string array = "[" + valid_event("h-2") + ", " + valid_event("h-1") + ", 42, {\"kind\":\"x\"}]";
  auto arr = http_request(port, "POST", "/v1/events", array);
  EXPECT_EQ(arr.status, 200);
  EXPECT_EQ(arr.body,
            "{\"accepted\":4,\"ok\":1,\"duplicate\":1,\"dlq\":2,\"results\":[{\"outcome\":\"ok\"},{\"outcome\":"
            "\"duplicate\"},{\"outcome\":\"dlq\",\"reason\":\"invalid_json\"},{\"outcome\":\"dlq\",\"reason\":"
            "\"missing_field\"}]}\n");

  // One event with a number beyond a double: refused on its own (an
  // envelope's numbers must fit one), its neighbours stored; the body is
  // still JSON.
  std::string big = "[" + valid_event("h-5") + ", " +
                    valid_event("h-6", "t", ",\"reading\":1e400,\"serial\":123456789012345678901234567890") + "]";
  auto bigs = http_request(port, "POST", "/v1/events", big);
  EXPECT_EQ(bigs.status, 200) << bigs.body;
  EXPECT_EQ(bigs.body,
            "{\"accepted\":2,\"ok\":1,\"duplicate\":0,\"dlq\":1,\"results\":[{\"outcome\":\"ok\"},{\"outcome\":"
            "\"dlq\",\"reason\":\"invalid_json\"}]}\n");

  std::string ndjson = valid_event("h-3") + "\n\n" + valid_event("h-4", "t", ",\"topic\":\"ignored/by/x-topic\"") + "\r\n";
  auto nd = http_request(port, "POST", "/v1/events", ndjson,
                         "Content-Type: application/x-ndjson\r\nX-Topic: autocore/ESP32_001/telemetry\r\n");
  EXPECT_EQ(nd.status, 200);
  EXPECT_NE(nd.body.find("\"accepted\":2,\"ok\":2"), std::string::npos) << nd.body;

  // Stored as sent; topics from X-Topic, else the event, else the listener.
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 5);
  EXPECT_EQ(db.column("SELECT topic FROM events_mirror WHERE idempotency_key = 'h-1'").at(0), "tracker/events/http");
  EXPECT_EQ(db.column("SELECT topic FROM events_mirror WHERE idempotency_key = 'h-4'").at(0),
            "autocore/ESP32_001/telemetry");
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 3);
}

TEST_F(HttpSource, AnswersEveryErrorWithItsStatus) {
  uint16_t port = free_port(), metrics_port = free_port();
  std::string token_file = env_or("TMPDIR", "/tmp") + "/http_token_" + std::to_string(::getpid());
  std::ofstream(token_file) << "tok-123\n";
  evpipe_process evp(config(port, metrics_port, "bearer_token_file = \"" + token_file + "\"\n"), "http_errors");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  const std::string auth = "Content-Type: application/json\r\nAuthorization: Bearer tok-123\r\n";

  auto no_token = http_request(port, "POST", "/v1/events", valid_event("e-1"));
  EXPECT_EQ(no_token.status, 401);
  EXPECT_NE(no_token.headers.find("WWW-Authenticate: Bearer"), std::string::npos);
  EXPECT_EQ(http_request(port, "POST", "/v1/events", valid_event("e-1"),
                         "Content-Type: application/json\r\nAuthorization: Bearer tok-124\r\n").status, 401);
  EXPECT_EQ(http_request(port, "POST", "/v1/events", valid_event("e-1"), auth).status, 200);

  EXPECT_EQ(http_request(port, "POST", "/v1/events", "{\"not\": json", auth).status, 400);
  EXPECT_EQ(http_request(port, "POST", "/v1/events", "\"just a string\"", auth).status, 400);
  EXPECT_EQ(http_request(port, "POST", "/v1/events", std::string(70000, ' '), auth).status, 413);
  EXPECT_EQ(http_request(port, "POST", "/v1/events", "<xml/>",
                         "Content-Type: application/xml\r\nAuthorization: Bearer tok-123\r\n").status, 415);
  EXPECT_EQ(http_request(port, "POST", "/v1/elsewhere", "{}", auth).status, 404);
  auto get = http_request(port, "GET", "/v1/events", "", auth);
  EXPECT_EQ(get.status, 405);
  EXPECT_NE(get.headers.find("Allow: POST"), std::string::npos);
  EXPECT_EQ(http_request(port, "POST", "/v1/events", valid_event("e-2"),
                         auth + "X-Padding: " + std::string(20000, 'p') + "\r\n").status, 431);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 1) << "nothing refused was stored";
}

TEST_F(HttpSource, AnswersOnlyAfterEveryShardCommitsAndSays503WhenFull) {
  uint16_t port = free_port(), metrics_port = free_port();
  evpipe_process evp(config(port, metrics_port), "http_commit");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);

  // 300 events a request: both shards get some of each.
  auto batch_of = [](const std::string& run) {
    std::string array = "[";
    for (int i = 0; i < 300; ++i) array += (i ? "," : "") + valid_event(run + std::to_string(i));
    return array + "]";
  };
  std::string first = batch_of("c-"), second = batch_of("d-");
  db.exec("BEGIN");
  db.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  auto metric = [&](const std::string& sample) { return metric_value(http_get(metrics_port, "/metrics"), sample); };
  auto received = [&] { return metric("evpipe_events_received_total{source=\"http\"}"); };
  auto pending = std::async(std::launch::async, [&] { return http_request(port, "POST", "/v1/events", first); });
  // No answer before the commit. Checked once both shards' batches of the
  // request are waiting for the lock, so the 1.5 s below watch an answer that
  // a broken evpipe could send now, on any machine.
  ASSERT_TRUE(eventually([&] { return received() >= 300 && db.lock_waiters("events_mirror") >= 2; }))
      << "received " << received() << ", lock waiters " << db.lock_waiters("events_mirror") << "\n" << evp.log();
  EXPECT_EQ(pending.wait_for(1500ms), std::future_status::timeout) << "answered before the commit";
  // The shards hold the first request in their blocked batches; the second
  // fills their queues (capacity 64), so a third finds no room.
  auto queued = std::async(std::launch::async, [&] { return http_request(port, "POST", "/v1/events", second); });
  ASSERT_TRUE(eventually([&] {
    return received() >= 600 && std::max(metric("evpipe_queue_depth{shard=\"0\"}"),
                                          metric("evpipe_queue_depth{shard=\"1\"}")) >= 64;
  })) << "received " << received() << "\n" << evp.log();
  auto busy = http_request(port, "POST", "/v1/events", valid_event("c-busy"));
  EXPECT_EQ(busy.status, 503) << busy.body;
  EXPECT_NE(busy.headers.find("Retry-After: 1"), std::string::npos);

  db.exec("COMMIT");
  ASSERT_EQ(pending.wait_for(60s), std::future_status::ready);
  ASSERT_EQ(queued.wait_for(60s), std::future_status::ready);
  for (auto* f : {&pending, &queued}) {
    auto reply = f->get();
    EXPECT_EQ(reply.status, 200);
    EXPECT_NE(reply.body.find("\"accepted\":300,\"ok\":300"), std::string::npos) << reply.body.substr(0, 200);
  }
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 600);
}

TEST_F(HttpSource, ConnectionsOverTheLimitAreClosedAtOnce) {
  uint16_t port = free_port(), metrics_port = free_port();
  evpipe_process evp(config(port, metrics_port, "max_connections = 2\n"), "http_limit");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  auto active = [&] {
    return metric_value(http_get(metrics_port, "/metrics"), "evpipe_connections_active{source=\"http\"}");
  };
  ASSERT_TRUE(eventually([&] { return active() == 0; }));  // the readiness probe's connection is gone
  int a = connect_loopback(port), b = connect_loopback(port);
  ASSERT_TRUE(eventually([&] { return active() == 2; }));
  int c = connect_loopback(port);
  pollfd p{c, POLLIN, 0};
  char byte;
  // Closed at once: poll returns as soon as it is; 60 s only bounds a broken run.
  ASSERT_EQ(::poll(&p, 1, 60000), 1) << "the third connection was left open";
  EXPECT_LE(::recv(c, &byte, 1, 0), 0);
  ::close(c);
  EXPECT_EQ(metric_value(http_get(metrics_port, "/metrics"), "evpipe_connections_refused_total{source=\"http\"}"), 1);
  ::close(a);
  ::close(b);
  ASSERT_TRUE(eventually([&] { return active() == 0; }));
  EXPECT_EQ(http_request(port, "POST", "/v1/events", valid_event("after-limit")).status, 200);
}

// Slow or silent clients do not hold a connection forever: headers must
// arrive within idle_timeout_s, and idle keep-alive connections are closed.
TEST_F(HttpSource, TricklingAndIdleClientsAreDisconnected) {
  uint16_t port = free_port(), metrics_port = free_port();
  evpipe_process evp(config(port, metrics_port, "idle_timeout_s = 1\n"), "http_trickle");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  // Closed by the server: a read returns end of stream (or reset).
  auto closed_within = [](int fd, std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    char buf[256];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) > 0 && ::recv(fd, buf, sizeof buf, MSG_DONTWAIT) <= 0) return true;
    }
    return false;
  };

  int trickle = connect_loopback(port);
  const std::string head = "POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Slow: ";
  // One byte every 100 ms, never finishing the headers, for up to 10 s: a
  // server that restarted its timer on every byte would never close it, one
  // that holds the headers to idle_timeout_s closes it after about 1 s. The
  // bound is ten idle timeouts, so a loaded machine's late timers do not fail
  // the test, while a server that waits for the trickle to stop still does.
  auto started = std::chrono::steady_clock::now();
  bool closed = false;
  for (int i = 0; i < 100 && !closed; ++i) {
    (void)::send(trickle, i < static_cast<int>(head.size()) ? &head[i] : "a", 1, MSG_NOSIGNAL);
    closed = closed_within(trickle, 100ms);
  }
  EXPECT_TRUE(closed) << "a trickling client kept its connection for 10 s";
  std::cout << "the trickling client was closed after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count()
            << " ms\n";
  ::close(trickle);

  int idle = connect_loopback(port);
  EXPECT_TRUE(closed_within(idle, 10s)) << "an idle connection stayed open";
  ::close(idle);

  // The listener still serves.
  EXPECT_EQ(http_request(port, "POST", "/v1/events", valid_event("after-trickle")).status, 200);
}

}  // namespace
}  // namespace evpipe::testing
