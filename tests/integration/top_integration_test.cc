// `evpipe top` on a real terminal (issue 15): tmux runs it against a live
// evpipe under a bounded load; the screen, read with `tmux capture-pane`,
// shows the figures /metrics has; `q` quits and leaves the terminal as it was.

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

// The words of the first screen line that starts with `first`.
std::vector<std::string> fields(const std::string& screen, const std::string& first) {
  std::istringstream lines(screen);
  for (std::string l; std::getline(lines, l);) {
    if (l.rfind(first + " ", 0) != 0) continue;
    std::vector<std::string> out;
    std::istringstream words(l);
    for (std::string w; words >> w;) out.push_back(w);
    return out;
  }
  return {};
}

std::string plain(double v) {  // as top writes whole numbers: 12,345
  std::string digits = std::to_string(static_cast<long long>(v)), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

class Top : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
    if (run("command -v tmux").empty()) GTEST_SKIP() << "tmux is not installed (scripts/lib.sh installs it)";
  }
  void TearDown() override {
    if (!tmux_.empty()) (void)run(tmux_ + " kill-server 2>/dev/null");
  }
  std::string screen() { return run(tmux_ + " capture-pane -p -t top"); }
  test_db db;
  std::string tmux_;
};

TEST_F(Top, ShowsWhatMetricsSaysOnAnEightyByTwentyFourTerminalAndQuitsOnQ) {
  uint16_t port = free_port(), http = free_port();
  std::string config = "[pipeline]\nshards = 2\n[postgres]\ndsn = \"" + db.dsn() + "\"\n[http]\nlisten = \"127.0.0.1:" +
                       std::to_string(http) + "\"\n[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(port) +
                       "\"\ntopic = \"top/it\"\n";
  evpipe_process evp(config, "top");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  std::string config_path = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_top/evpipe.toml";

  tmux_ = "tmux -L evpipe_top_" + std::to_string(::getpid()) + " -f /dev/null";
  // A shell in the pane, as an operator has: the terminal's settings before
  // and after top must match.
  std::string start = tmux_ + " new-session -d -s top -x 80 -y 24 sh";
  ASSERT_EQ(std::system(start.c_str()), 0) << start;
  std::string typed = "stty -g; " + evpipe_binary() + " top --config " + config_path +
                      "; echo top exited $?; stty -g";
  ASSERT_EQ(std::system((tmux_ + " send-keys -t top '" + typed + "' Enter").c_str()), 0);

  // Bounded load: 40 chunks of 500 valid events and 5 that are not JSON, 100 ms apart.
  ndjson_client c(port);
  const int chunks = 40, valid = 500, invalid = 5;
  std::thread load([&] {
    for (int i = 0; i < chunks; ++i) {
      std::string data;
      for (int j = 0; j < valid; ++j) data += valid_event("top-" + std::to_string(i * valid + j)) + "\n";
      // Each one different: identical dead letters are stored (and counted) once.
      for (int j = 0; j < invalid; ++j) data += "{not json " + std::to_string(i * invalid + j) + "\n";
      c.send_all(data);
      std::this_thread::sleep_for(100ms);
    }
  });
  // While it runs: a rate, end-to-end percentiles, and each shard's own
  // batch rate and write time (the write metrics are labelled by shard).
  bool saw_rate = false, saw_latency = false;
  std::set<std::string> shards_writing;
  std::string last;
  ASSERT_TRUE(eventually([&] {
    last = screen();
    auto tcp = fields(last, "tcp");
    if (tcp.size() >= 2 && tcp[1] != "-" && tcp[1] != "0") saw_rate = true;
    auto at = last.find("p50 ");
    if (at != std::string::npos && last.compare(at + 4, 1, "-") != 0) saw_latency = true;
    for (const char* shard : {"0", "1"}) {
      auto row = fields(last, shard);
      if (row.size() == 8 && row[2] != "-" && row[2] != "0" && row[4] != "-") shards_writing.insert(shard);
    }
    return saw_rate && saw_latency && shards_writing.size() == 2;
  }, 30s, 200ms)) << last;
  load.join();
  const uint64_t total = chunks * (valid + invalid);
  ASSERT_EQ(c.read_acks_until(total, 60s), total) << evp.log();

  // Once the load is over and acked, the screen settles on the figures
  // /metrics has (which no longer move).
  ASSERT_TRUE(eventually([&] {
    last = screen();
    auto tcp = fields(last, "tcp");
    auto dlq = fields(last, "invalid_json");
    return tcp.size() == 6 && tcp[2] == plain(double(total)) && tcp[4] == "0" && dlq.size() == 3 &&
           dlq[1] == plain(double(chunks * invalid));
  }, 30s, 300ms)) << last;
  std::string metrics = http_get(http, "/metrics");
  std::cout << "the screen at 80x24:\n" << last;
  auto tcp = fields(last, "tcp");
  EXPECT_EQ(tcp[2], plain(metric_value(metrics, "evpipe_events_received_total{source=\"tcp\"}"))) << last;
  EXPECT_EQ(tcp[3], plain(metric_value(metrics, "evpipe_connections_active{source=\"tcp\"}"))) << last;
  EXPECT_EQ(tcp[3], "1") << last;
  EXPECT_EQ(tcp[4], plain(metric_value(metrics, "evpipe_unacked_events{source=\"tcp\"}"))) << last;
  auto dlq = fields(last, "invalid_json");
  ASSERT_EQ(dlq.size(), 3u) << last;
  EXPECT_EQ(dlq[1], plain(double(chunks * invalid))) << last;
  EXPECT_EQ(metric_value(metrics, "evpipe_dlq_total{topic=\"top/it\",reason=\"invalid_json\"}"), chunks * invalid)
      << metrics;
  // One row per shard, its figures from that shard's series: no "all" row.
  EXPECT_TRUE(fields(last, "all").empty()) << last;
  double batches = 0;
  for (const char* shard : {"0", "1"}) {
    auto row = fields(last, shard);
    ASSERT_EQ(row.size(), 8u) << last;
    const std::string l = "{shard=\"" + std::string(shard) + "\"}";
    EXPECT_EQ(row[1], plain(metric_value(metrics, "evpipe_queue_depth" + l)));
    EXPECT_EQ(row[7], plain(metric_value(metrics, "evpipe_batches_total" + l))) << last << metrics;
    EXPECT_GT(metric_value(metrics, "evpipe_batches_total" + l), 0) << metrics;
    EXPECT_EQ(metric_value(metrics, "evpipe_db_retries_total" + l), 0) << metrics;
    EXPECT_EQ(row[6], "0") << last;  // retries per second, settled
    batches += metric_value(metrics, "evpipe_batches_total" + l);
  }
  EXPECT_GT(batches, 0);
  EXPECT_NE(last.find("database: ready"), std::string::npos) << last;
  // Within 80 x 24.
  std::istringstream lines(last);
  int n = 0;
  for (std::string l; std::getline(lines, l); ++n) EXPECT_LE(l.size(), 80u) << l;
  EXPECT_LE(n, 24);

  // Wider: the same view, still whole.
  (void)run(tmux_ + " resize-window -t top -x 132 -y 40");
  ASSERT_TRUE(eventually([&] {
    last = screen();
    return last.find("DLQ REASON") != std::string::npos && last.find("more lines") == std::string::npos &&
           fields(last, "invalid_json").size() == 3;
  }, 10s, 200ms)) << last;

  // q quits: exit 0, off the alternate screen, the cursor shown, the
  // terminal's settings (raw mode while top runs) as before.
  EXPECT_EQ(run(tmux_ + " display-message -p -t top '#{alternate_on} #{cursor_flag}'"), "1 0\n");
  (void)run(tmux_ + " send-keys -t top q");
  ASSERT_TRUE(eventually([&] { return screen().find("top exited") != std::string::npos; }, 10s, 100ms)) << screen();
  EXPECT_EQ(run(tmux_ + " display-message -p -t top '#{alternate_on} #{cursor_flag}'"), "0 1\n");
  (void)run(tmux_ + " resize-window -t top -x 200 -y 40");  // the stty lines unwrapped
  ASSERT_TRUE(eventually([&] { return fields(screen(), "top").size() == 3; }, 10s, 100ms));
  last = screen();
  EXPECT_EQ(fields(last, "top"), (std::vector<std::string>{"top", "exited", "0"})) << last;
  std::vector<std::string> stty;
  std::istringstream lines_after(last);
  for (std::string l; std::getline(lines_after, l);) {
    // The line may start with the shell's prompt: the settings are its last word.
    if (std::count(l.begin(), l.end(), ':') > 10) stty.push_back(l.substr(l.find_last_of(' ') + 1));
  }
  ASSERT_EQ(stty.size(), 2u) << last;
  EXPECT_EQ(stty[0], stty[1]) << last;
}

}  // namespace
}  // namespace evpipe::testing
