// evpipe-load against evpipe and the real PostgreSQL: a short mixed run with
// --verify passes, and the verifier then catches a row taken away and a stray
// one; each protocol target verifies; --input sends a file's lines and the
// report counts the generator's own CPU while it sent; --tick-us paces sends.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <thread>

#include "load/verify.h"
#include "tests/support/harness.h"
#include "tests/support/mqtt_peer.h"

namespace evpipe::testing {
namespace {

// evpipe with one TCP source on `port`, its tables migrated, started; null
// when the migration failed (its log says why).
std::unique_ptr<evpipe_process> tcp_evpipe(test_db& db, uint16_t port, const std::string& name) {
  auto evp = std::make_unique<evpipe_process>(
      "[postgres]\ndsn = \"" + db.dsn() + "\"\n[http]\nlisten = \"\"\n[log]\nlevel = \"warn\"\n"
      "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\n",
      name);
  if (evp->run_command("migrate") != 0) {
    ADD_FAILURE() << evp->log("migrate.log");
    return nullptr;
  }
  evp->start(port);
  return evp;
}

TEST(LoadVerify, MixedRunVerifiesAndTamperingIsCaught) {
  test_db db;
  if (!db.available()) {
    if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
    GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
  }
  uint16_t port = free_port();
  auto started = tcp_evpipe(db, port, "loadverify");
  ASSERT_TRUE(started) << "migrate failed";
  evpipe_process& evp = *started;
  const std::string run = "lv" + std::to_string(::getpid());
  std::string cmd = evpipe_load_binary() + " --target tcp://127.0.0.1:" + std::to_string(port) +
                    " --count 5000 --connections 2 --invalid-frac 0.05 --dup-frac 0.1 --seed 3 --quiet --run-id " + run +
                    " --verify '" + db.dsn() + "' > " + env_or("TMPDIR", "/tmp") + "/" + run + ".out 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();

  // The same expectations, rebuilt from what the run reported, now fail once
  // a row is missing and another run's key has crept in.
  long rows = db.count("SELECT count(*) FROM events_mirror");
  long dlq = db.count("SELECT count(*) FROM dlq_events");
  ASSERT_GT(rows, 4000);
  ASSERT_GT(dlq, 100);
  std::vector<std::string> keys = db.column("SELECT idempotency_key FROM events_mirror");
  std::unordered_set<std::string> expected(keys.begin(), keys.end());
  auto clean = load::verify_run(db.dsn(), run, expected, static_cast<uint64_t>(dlq));
  EXPECT_TRUE(clean.ok()) << clean.summary();

  db.exec("DELETE FROM events_mirror WHERE idempotency_key = '" + *expected.begin() + "'");
  db.exec("INSERT INTO events_mirror (topic, payload) VALUES ('t', '{\"trace_id\":\"550e8400-e29b-41d4-a716-446655440000\","
          "\"idempotency_key\":\"" + run + "-9-999999\"}')");
  auto tampered = load::verify_run(db.dsn(), run, expected, static_cast<uint64_t>(dlq));
  EXPECT_FALSE(tampered.ok());
  EXPECT_EQ(tampered.missing, 1u);
  EXPECT_EQ(tampered.stray, 1u);
}

// Each protocol target of evpipe-load end to end, each run checked with --verify:
// http://, mqtt-serve:// (evpipe-load is the broker evpipe's session connects
// to, so every ack is evpipe's PUBACK) and mqtt:// through Mosquitto.
TEST(LoadVerify, HttpMqttServeAndMqttTargetsVerify) {
  test_db db;
  if (!db.available()) {
    if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
    GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
  }
  mosquitto_broker broker("loadverify");
  uint16_t http_port = free_port(), serve_port = free_port();
  evpipe_process evp("[postgres]\ndsn = \"" + db.dsn() + "\"\n[http]\nlisten = \"\"\n[log]\nlevel = \"warn\"\n"
                     "[events]\nmax_event_bytes = 4096\n"
                     "[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
                     "[[sources.mqtt]]\nurl = \"mqtt://127.0.0.1:" + std::to_string(serve_port) + "\"\n"
                     "client_id = \"lv-serve\"\ntopics = [\"tracker/events/#\"]\nbase_ms = 20\nmax_ms = 100\n"
                     "[[sources.mqtt]]\nurl = \"" + broker.url() + "\"\nclient_id = \"lv-broker\"\n"
                     "topics = [\"tracker/events/#\"]\n",
                     "loadverify_protocols");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(http_port);
  // The broker session's subscription is in place before evpipe-load
  // publishes to Mosquitto (else the first messages would go nowhere).
  ASSERT_TRUE(eventually([&] { return broker.subscriptions("lv-broker", "tracker/events/#") >= 1; })) << broker.log();

  for (const std::string& target : {"http://127.0.0.1:" + std::to_string(http_port) + "/v1/events",
                                   "mqtt-serve://127.0.0.1:" + std::to_string(serve_port), broker.url()}) {
    const std::string run = "lvp" + std::to_string(::getpid()) + "x" + std::to_string(target.size());
    std::string out = env_or("TMPDIR", "/tmp") + "/" + run + ".out";
    std::string cmd = evpipe_load_binary() + " --target " + target +
                      " --count 3000 --invalid-frac 0.05 --dup-frac 0.1 --too-large-bytes 4096 --seed 5 --quiet --run-id " + run +
                      " --verify '" + db.dsn() + "' > " + out + " 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << evp.log();
  }
  EXPECT_GT(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'too_large'"), 0);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

// --input sends every line of the file as it is (the last one without its
// newline, a CRLF line without its CR), and the report counts the load
// generator's own CPU while it sent, apart from reading the file.
TEST(LoadInput, SendsEveryLineAndReportsItsOwnCpuWhileSending) {
  test_db db;
  if (!db.available()) {
    if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
    GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
  }
  uint16_t port = free_port();
  auto started = tcp_evpipe(db, port, "loadinput");
  ASSERT_TRUE(started) << "migrate failed";
  evpipe_process& evp = *started;
  const std::string dir = env_or("TMPDIR", "/tmp"), run = "li" + std::to_string(::getpid());
  const std::string file = dir + "/" + run + ".ndjson", json = dir + "/" + run + ".json";
  std::string cmd = evpipe_load_binary() + " --emit " + file + " --count 3000 --seed 4 --run-id " + run + " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  {
    // Two more lines: one ended by CRLF, the last one by nothing.
    std::ofstream out(file, std::ios::app | std::ios::binary);
    for (int i = 0; i < 2; ++i) {
      out << R"({"trace_id":"550e8400-e29b-41d4-a716-446655440000","ts":"2026-12-03T10:19:03.697Z","kind":"extra",)"
          << R"("idempotency_key":")" << run << "-extra-" << i << R"(","topic":"load/input","payload":{}})"
          << (i == 0 ? "\r\n" : "");
    }
  }
  cmd = evpipe_load_binary() + " --target tcp://127.0.0.1:" + std::to_string(port) + " --input " + file +
        " --connections 3 --quiet --json " + json + " > " + dir + "/" + run + ".out 2>&1";
  // The CPU of this command's processes (the shell and evpipe-load), which
  // its own count of the sending must not exceed.
  auto children_cpu = [] {
    rusage u{};
    ::getrusage(RUSAGE_CHILDREN, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  };
  const double children_before = children_cpu();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const double whole_command = children_cpu() - children_before;
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();

  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 3002);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE '" + run + "-extra-%'"), 2);
  std::stringstream text;
  text << std::ifstream(json).rdbuf();
  std::smatch m;
  const std::string j = text.str();
  ASSERT_TRUE(std::regex_search(j, m, std::regex(R"re("acked":(\d+).*"seconds":([0-9.e-]+).*"cpu_seconds":([0-9.e-]+))re")))
      << j;
  EXPECT_EQ(m[1].str(), "3002");
  const double seconds = std::stod(m[2].str()), cpu = std::stod(m[3].str());
  EXPECT_GT(cpu, 0.0) << j;
  EXPECT_LE(cpu, whole_command + 0.01) << j;
  // Its threads are a sender and a receiver per connection: at most all of
  // them busy for the run (plus the clock's granularity).
  EXPECT_LE(cpu, 6 * seconds + 0.05) << j;
  for (const auto& f : {file, json, dir + "/" + run + ".out"}) ::unlink(f.c_str());
}

// A TCP peer that acks every line it gets and counts the reads that
// brought data: how many sends evpipe-load made, at most (the kernel may
// join sends, never split one into more reads here: each is a few lines).
size_t reads_of_paced_run(uint32_t tick_us) {
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) return 0;
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd, 4) != 0) {
    ::close(lfd);
    return 0;
  }
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string cmd = evpipe_load_binary() + " --target tcp://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) +
                          " --rate 1000 --duration 2 --connections 1 --quiet --tick-us " + std::to_string(tick_us) +
                          " >/dev/null 2>&1";
  int status = -1;
  std::thread load([&] { status = std::system(cmd.c_str()); });
  size_t reads = 0;
  pollfd p{lfd, POLLIN, 0};
  const int fd = ::poll(&p, 1, 10'000) == 1 ? ::accept(lfd, nullptr, nullptr) : -1;
  ::close(lfd);  // one connection only
  if (fd >= 0) {
    timeval limit{30, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    uint64_t lines = 0;
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      ++reads;
      for (ssize_t k = 0; k < n; ++k) lines += buf[k] == '\n';
      const std::string ack = "{\"ack\":" + std::to_string(lines) + "}\n";
      (void)::send(fd, ack.data(), ack.size(), MSG_NOSIGNAL);
    }
    ::close(fd);
  }
  load.join();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd << ": every event acked, exit 0";
  return reads;
}

TEST(LoadPacing, TickUsSendsAtMostOncePerTick) {
  // 2,000 events in 2 s: one send per event due (every 1 ms) by default,
  // at most one per 20 ms (about 100, each of about 20 events) with a tick.
  const size_t plain = reads_of_paced_run(0), ticked = reads_of_paced_run(20'000);
  EXPECT_GE(ticked, 1u) << "evpipe-load connected and sent";
  EXPECT_LE(ticked, 105u) << "--tick-us 20000 over 2 s";
  EXPECT_GE(plain, 200u) << "without a tick, each event goes when it is due (about 2,000 sends)";
}

}  // namespace
}  // namespace evpipe::testing
