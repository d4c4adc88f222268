// [log] format = "json" (issue 15): every line evpipe writes is one JSON object
// with time, level and message, whatever the message holds (quotes,
// backslashes, control characters, bytes that are not UTF-8), and a DSN's
// password stays masked as in text logs.

#include <gtest/gtest.h>
#include <simdjson.h>

#include <dirent.h>

#include <fstream>
#include <set>
#include <sstream>

#include "app/process.h"
#include "tests/support/harness.h"

namespace evpipe::testing {
namespace {

TEST(JsonLog, EscapesWhatWouldBreakTheLine) {
  std::string msg = std::string("quote \" backslash \\ newline \n tab \t nul ") + '\0' + " bad \xff\xfe utf8 é end";
  std::string line = app::json_log_line("2026-11-30T00:00:00.000Z", "warning", msg);
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line per message";
  simdjson::dom::parser parser;
  simdjson::dom::element e;
  ASSERT_EQ(parser.parse(line).get(e), simdjson::SUCCESS) << line;
  std::string_view m;
  ASSERT_EQ(e["message"].get(m), simdjson::SUCCESS);
  std::string want = std::string("quote \" backslash \\ newline \n tab \t nul ") + '\0' +
                     " bad \xef\xbf\xbd\xef\xbf\xbd utf8 é end";
  EXPECT_EQ(std::string(m), want);
  std::string_view level;
  ASSERT_EQ(e["level"].get(level), simdjson::SUCCESS);
  EXPECT_EQ(level, "warning");
  simdjson::dom::object fields;
  EXPECT_EQ(e["fields"].get(fields), simdjson::SUCCESS) << "an empty object when the thread has none: " << line;
}

// The fields of the thread that logged a line (pipeline/thread_name.h), and the
// threads' OS names, in a running daemon: main, the reload thread, and the
// named shards, HTTP and I/O threads.
TEST(JsonLog, EachLineCarriesTheFieldsOfTheThreadThatLoggedIt) {
  test_db db;
  if (!db.available()) GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
  uint16_t tcp_port = free_port(), http_port = free_port();
  evpipe_process evp("[pipeline]\nshards = 2\nio_threads = 2\n[postgres]\ndsn = \"" + db.dsn() +
                         "\"\n[log]\nformat = \"json\"\n[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) +
                         "\"\n[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) +
                         "\"\ntopic = \"json/log\"\n",
                     "json_log_fields");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(tcp_port);
  evp.kill(SIGHUP);
  ASSERT_TRUE(eventually([&] { return evp.log().find("reload done") != std::string::npos; }, 30s)) << evp.log();

  std::set<std::string> names;
  std::string task = "/proc/" + std::to_string(evp.pid()) + "/task";
  if (DIR* d = ::opendir(task.c_str())) {
    while (dirent* t = ::readdir(d)) {
      std::string comm;
      std::getline(std::ifstream(task + "/" + t->d_name + "/comm"), comm);
      if (!comm.empty()) names.insert(comm);
    }
    ::closedir(d);
  }
  for (const char* want : {"evpipe", "shard-0", "shard-1", "http", "io-1", "reload"}) {
    EXPECT_TRUE(names.count(want)) << want << " is not among the threads";
  }

  std::istringstream in(evp.log());
  std::string line;
  simdjson::dom::parser parser;
  std::set<std::string> seen;  // "thread: message start" of the lines looked for
  while (std::getline(in, line)) {
    simdjson::dom::element e;
    ASSERT_EQ(parser.parse(line).get(e), simdjson::SUCCESS) << "not JSON: " << line;
    simdjson::dom::object fields;
    ASSERT_EQ(e["fields"].get(fields), simdjson::SUCCESS) << line;
    std::string_view message, thread;
    ASSERT_EQ(e["message"].get(message), simdjson::SUCCESS) << line;
    if (fields["thread"].get(thread) != simdjson::SUCCESS) continue;
    if (message.starts_with("received SIGHUP")) seen.insert(std::string(thread) + ": SIGHUP");
    if (message.starts_with("metrics and health on")) seen.insert(std::string(thread) + ": metrics");
  }
  EXPECT_TRUE(seen.count("reload: SIGHUP")) << evp.log();
  EXPECT_TRUE(seen.count("main: metrics")) << evp.log();
}

// The real daemon, failing at start-up on an unreachable database: libpq's
// message carries a newline and quotes.
TEST(JsonLog, DaemonWritesOneObjectPerLineWithoutThePassword) {
  uint16_t tcp_port = free_port(), no_db = free_port();
  evpipe_process evp("[postgres]\ndsn = \"postgresql://evpipe:sekret-pw@127.0.0.1:" + std::to_string(no_db) +
                         "/none\"\nstartup = \"fail\"\n[log]\nformat = \"json\"\n[http]\nlisten = \"127.0.0.1:" + std::to_string(free_port()) +
                         "\"\n[[sources.tcp]]\nlisten = \"127.0.0.1:" +
                         std::to_string(tcp_port) + "\"\ntopic = \"json/log\"\n",
                     "json_log");
  EXPECT_THROW(evp.start(tcp_port), std::runtime_error);
  std::string log = evp.log();
  EXPECT_EQ(log.find("sekret-pw"), std::string::npos) << log;
  std::istringstream in(log);
  std::string line;
  int lines = 0;
  bool error_seen = false;
  simdjson::dom::parser parser;
  while (std::getline(in, line)) {
    ++lines;
    simdjson::dom::element e;
    ASSERT_EQ(parser.parse(line).get(e), simdjson::SUCCESS) << "not JSON: " << line;
    std::string_view time, level, message;
    ASSERT_EQ(e["time"].get(time), simdjson::SUCCESS) << line;
    ASSERT_EQ(e["level"].get(level), simdjson::SUCCESS) << line;
    ASSERT_EQ(e["message"].get(message), simdjson::SUCCESS) << line;
    EXPECT_EQ(time.size(), 24u) << line;  // 2026-11-30T21:40:20.705Z
    if (level == "error" && message.find("cannot connect to PostgreSQL") != std::string_view::npos) error_seen = true;
  }
  EXPECT_GE(lines, 1);
  EXPECT_TRUE(error_seen) << log;
}

}  // namespace
}  // namespace evpipe::testing
