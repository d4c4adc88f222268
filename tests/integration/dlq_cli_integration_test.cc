// `evpipe dlq list | show | purge` against dead letters the pipeline wrote:
// filters select what the equivalent SQL selects, purge asks first and
// deletes exactly what it counted.

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "tests/support/harness.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

struct cli_result {
  int exit_code = -1;
  std::vector<std::string> lines;
  std::string err;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class DlqCli : public TcpPipeline {
 protected:
  void SetUp() override {
    TcpPipeline::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    tcp_port = free_port();
    evpipe = std::make_unique<evpipe_process>(config_for(db, tcp_port, free_port()), "dlq_cli");
    ASSERT_EQ(evpipe->run_command("migrate"), 0) << evpipe->log("migrate.log");
    dir = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_dlq_cli";
    // Dead letters of three reasons on two topics, through the pipeline.
    evpipe->start(tcp_port);
    ndjson_client producer(tcp_port);
    std::string data;
    for (int i = 0; i < 30; ++i) {
      std::string topic = i % 2 ? ",\"topic\":\"autocore/dev" + std::to_string(i % 3) + "/telemetry\"" : "";
      if (i % 3 == 0) data += "{not json " + std::to_string(i) + "\n";
      if (i % 3 == 1) data += "{\"kind\":\"k\",\"idempotency_key\":\"m" + std::to_string(i) + "\"" + topic + "}\n";
      if (i % 3 == 2) data += valid_event("ok-" + std::to_string(i), "x", topic) + "\n";
    }
    producer.send_all(data);
    ASSERT_EQ(producer.read_acks_until(30, 60s), 30u);
    ASSERT_EQ(db.count("SELECT count(*) FROM dlq_events"), 20);
  }
  cli_result dlq(const std::string& args, const std::string& stdin_text = "") {
    cli_result r;
    std::string out = dir + "/dlq.out", err = dir + "/dlq.err", in = dir + "/dlq.in";
    std::ofstream(in) << stdin_text;
    std::string cmd = evpipe_binary() + " dlq " + args + " --config " + dir + "/evpipe.toml <" + in + " >" +
                      out + " 2>" + err;
    int status = std::system(cmd.c_str());
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::istringstream lines(read_text(out));
    for (std::string l; std::getline(lines, l);) r.lines.push_back(l);
    r.err = read_text(err);
    return r;
  }
  // The ids a JSON listing names, in its order.
  static std::vector<std::string> ids_of(const std::vector<std::string>& lines) {
    std::vector<std::string> ids;
    for (const auto& l : lines) {
      auto at = l.find("\"id\" : ");
      ids.push_back(at == std::string::npos ? "?" : l.substr(at + 7, l.find(',', at) - at - 7));
    }
    return ids;
  }
  std::vector<std::string> reference(const std::string& where) {
    return db.column("SELECT id FROM dlq_events WHERE " + where + " ORDER BY id DESC");
  }
  uint16_t tcp_port = 0;
  std::unique_ptr<evpipe_process> evpipe;
  std::string dir;
};

TEST_F(DlqCli, ListFiltersSelectWhatSqlSelects) {
  auto table = dlq("list");
  ASSERT_EQ(table.exit_code, 0) << table.err;
  ASSERT_EQ(table.lines.size(), 21u);  // the heading and 20 rows
  EXPECT_EQ(table.lines[0].rfind("ID", 0), 0u);
  EXPECT_EQ(std::count_if(table.lines.begin(), table.lines.end(),
                          [](const std::string& l) { return l.find(" invalid_json ") != std::string::npos; }),
            10);
  struct filter_case {
    std::string args, where;
  };
  for (const auto& c : std::vector<filter_case>{
           {"", "true"},
           {"--reason invalid_json", "reason_code = 'invalid_json'"},
           {"--reason invalid_json --reason missing_field", "reason_code IN ('invalid_json', 'missing_field')"},
           {"--topic 'autocore/+/telemetry'", "original_topic LIKE 'autocore/%/telemetry'"},
           {"--topic 'autocore/dev1/#' --reason missing_field",
            "original_topic = 'autocore/dev1/telemetry' AND reason_code = 'missing_field'"},
           {"--since 2000-01-01T00:00:00Z --until 2000-01-02T00:00:00Z", "false"},
           {"--limit 3", "true LIMIT 3"},
       }) {
    auto r = dlq("list --json " + c.args);
    ASSERT_EQ(r.exit_code, 0) << c.args << ": " << r.err;
    auto where = c.where;
    auto limit = where.find(" LIMIT ");
    auto expected = limit == std::string::npos
                        ? reference(where)
                        : db.column("SELECT id FROM dlq_events WHERE " + where.substr(0, limit) + " ORDER BY id DESC" +
                                    where.substr(limit));
    EXPECT_EQ(ids_of(r.lines), expected) << c.args;
  }
  auto bad = dlq("list --topic 'a/#/b'");
  EXPECT_EQ(bad.exit_code, 2);
  bad = dlq("list --since not-a-time");
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
}

TEST_F(DlqCli, ShowPrintsOneDeadLetterInFull) {
  std::string id = reference("reason_code = 'invalid_json'").at(0);
  auto r = dlq("show " + id + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.lines.size(), 1u);
  EXPECT_NE(r.lines[0].find("\"raw\" : \"{not json"), std::string::npos) << r.lines[0];
  EXPECT_NE(r.lines[0].find("\"topic\" : \"tracker/events/it\""), std::string::npos) << r.lines[0];
  EXPECT_EQ(dlq("show 999999").exit_code, 3);
}

TEST_F(DlqCli, PurgeAsksThenDeletesExactlyTheSelection) {
  std::string sel = "--reason missing_field --topic 'autocore/#'";
  long selected = static_cast<long>(reference("reason_code = 'missing_field' AND original_topic LIKE 'autocore/%'").size());
  ASSERT_GT(selected, 0);
  auto dry = dlq("purge --dry-run " + sel);
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_EQ(dry.lines.at(0), "would delete " + std::to_string(selected) + " dead letters");
  // Not confirmed (no terminal, no --yes): nothing goes.
  auto refused = dlq("purge " + sel, "y\n");
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.err.find("--yes"), std::string::npos) << refused.err;
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 20);
  auto done = dlq("purge --yes " + sel);
  ASSERT_EQ(done.exit_code, 0) << done.err;
  EXPECT_EQ(done.lines.at(0), "deleted " + std::to_string(selected) + " dead letters");
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 20 - selected);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'missing_field' AND original_topic LIKE 'autocore/%'"), 0);
}

}  // namespace
}  // namespace evpipe::testing
