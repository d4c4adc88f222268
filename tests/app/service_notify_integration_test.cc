// The systemd notify protocol without systemd (app/service_notify.cc): the test
// plays the service manager, a unix datagram socket named by NOTIFY_SOCKET,
// and checks that READY=1 comes only once evpipe's TCP source accepts, that a
// daemon whose database is unreachable says it waits for it and never says READY, and that
// WATCHDOG_USEC brings WATCHDOG=1 pings.

#include <gtest/gtest.h>

#include <future>

#include "tests/support/harness.h"

namespace evpipe::testing {
namespace {

// The service manager's end: NOTIFY_SOCKET names it for every child started
// while it lives.
class notify_socket : public notify_listener {
 public:
  notify_socket() { ::setenv("NOTIFY_SOCKET", address().c_str(), 1); }
  ~notify_socket() {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
  }
};

bool accepts(uint16_t port) {
  try {
    ::close(connect_loopback(port));
    return true;
  } catch (const std::runtime_error&) {
    return false;
  }
}

std::string config(const std::string& dsn, uint16_t tcp_port) {
  // Its own metrics port: the default (9464) may be taken by another test.
  return "[postgres]\ndsn = \"" + dsn + "\"\n[http]\nlisten = \"127.0.0.1:" + std::to_string(free_port()) + "\"\n"
         "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) + "\"\ntopic = \"notify/it\"\n";
}

TEST(ServiceNotify, ReadyOnlyOnceTheSourceAcceptsThenWatchdogPings) {
  test_db db;
  if (!db.available()) GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
  uint16_t tcp_port = free_port();
  evpipe_process evp(config(db.dsn(), tcp_port), "notify_ready");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  notify_socket manager;
  ::setenv("WATCHDOG_USEC", "400000", 1);  // pings every 200 ms
  ASSERT_FALSE(accepts(tcp_port));
  auto started = std::async(std::launch::async, [&] { evp.start(tcp_port); });

  std::string first = manager.receive(60s);
  // READY=1 is the first message, and at that moment the source already accepts.
  ASSERT_NE(first.find("READY=1"), std::string::npos) << "got: '" << first << "'\n" << evp.log();
  EXPECT_TRUE(accepts(tcp_port)) << "READY=1 before the TCP source listened";
  started.get();

  int pings = 0;
  for (int i = 0; i < 50 && pings < 3; ++i) {  // bounded: 50 messages or 10 s each
    std::string m = manager.receive(10s);
    if (m.empty()) break;
    if (m.find("WATCHDOG=1") != std::string::npos) ++pings;
  }
  EXPECT_EQ(pings, 3) << evp.log();

  evp.kill(SIGTERM);
  bool stopping = false;
  for (int i = 0; i < 200 && !stopping; ++i) {
    std::string m = manager.receive(10s);
    if (m.empty()) break;
    stopping = m.find("STOPPING=1") != std::string::npos;
  }
  EXPECT_TRUE(stopping) << evp.log();
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

TEST(ServiceNotify, NoReadyWhenTheDatabaseDoesNotAnswer) {
  uint16_t tcp_port = free_port(), no_db = free_port();
  evpipe_process evp(config("postgresql://evpipe@127.0.0.1:" + std::to_string(no_db) + "/none", tcp_port),
                     "notify_nodb");
  notify_socket manager;
  // startup = "wait" (the default): it listens and waits, says why in its
  // status once the source accepts, and is not ready.
  evp.start(tcp_port);
  std::string first = manager.receive(60s);
  EXPECT_EQ(first.rfind("STATUS=waiting for PostgreSQL: ", 0), 0) << "got: '" << first << "'\n" << evp.log();
  EXPECT_EQ(first.find("READY=1"), std::string::npos) << first;
  EXPECT_TRUE(accepts(tcp_port)) << "the waiting status came before the TCP source listened";
  EXPECT_EQ(manager.receive(1s), "") << "READY sent by a daemon that cannot reach its database";
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(), 0) << evp.log();
}

}  // namespace
}  // namespace evpipe::testing
