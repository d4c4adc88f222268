// [log] format = "json" (issue 15): every line evpipe writes is one JSON object
// with time, level and message, whatever the message holds (quotes,
// backslashes, control characters, bytes that are not UTF-8), and a DSN's
// password stays masked as in text logs.

#include <gtest/gtest.h>
#include <simdjson.h>

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
