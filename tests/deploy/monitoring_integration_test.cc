// deploy/prometheus and deploy/grafana against a real evpipe (issue 15): every
// metric name the alert rules and the dashboard use must be one that evpipe
// serves on /metrics, so a renamed metric cannot silently blind an alert or a
// panel. The dashboard must be JSON whose every query parses as PromQL
// (checked by promtool), and /metrics must pass `promtool check metrics`.
// promtool's own checks of the rules (check config, check rules, test rules)
// are plain ctest commands in tests/CMakeLists.txt.

#include <gtest/gtest.h>
#include <simdjson.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The names a scrape can match: each family from its # TYPE line, plus the
// series a histogram family expands to.
std::set<std::string> served_names(const std::string& metrics) {
  std::set<std::string> names;
  std::istringstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) != 0) continue;
    std::istringstream f(line.substr(7));
    std::string name, type;
    f >> name >> type;
    names.insert(name);
    if (type == "histogram") {
      for (const char* s : {"_bucket", "_sum", "_count"}) names.insert(name + s);
    }
  }
  return names;
}

// Metric names (default prefix) a rules file or a dashboard mentions, outside
// YAML comments (which name files such as evpipe_alerts_test.yml).
std::set<std::string> referenced_names(const std::string& text) {
  static const std::regex name_re("evpipe_[a-z0-9_]*[a-z0-9]");
  std::set<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto first = line.find_first_not_of(' ');
    if (first != std::string::npos && line[first] == '#') continue;
    for (std::sregex_iterator it(line.begin(), line.end(), name_re), end; it != end; ++it) out.insert(it->str());
  }
  return out;
}

// Runs a shell command; returns its exit code and puts its output in `out`.
int run(const std::string& cmd, std::string& out) {
  out.clear();
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class MonitoringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    if (std::string(EVPIPE_PROMTOOL).empty() || ::access(EVPIPE_PROMTOOL, X_OK) != 0) {
      FAIL() << "promtool is not installed (Debian package prometheus; scripts/test.sh installs it)";
    }
  }
  test_db db;
};

// Every kind of source is configured (MQTT at a port where no broker listens:
// the session retries, and its metrics are served at 0), and a valid and an
// invalid event go through, so the scrape holds every family a deployment can.
TEST_F(MonitoringTest, RulesAndDashboardUseOnlyMetricsEvpipeServes) {
  uint16_t tcp_port = free_port(), http_port = free_port(), ingest_port = free_port(), no_broker = free_port(),
           no_nats = free_port();
  std::string cfg = "[pipeline]\nshards = 2\n[postgres]\ndsn = \"" + db.dsn() + "\"\n"
                    "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
                    "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) + "\"\ntopic = \"mon/tcp\"\n"
                    "[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(ingest_port) + "\"\n"
                    "[[sources.mqtt]]\nurl = \"mqtt://127.0.0.1:" + std::to_string(no_broker) + "\"\n"
                    "client_id = \"evpipe-mon\"\ntopics = [\"mon/#\"]\nbase_ms = 200\nmax_ms = 1000\n"
                    // A NATS source whose server is away: its families are served too.
                    "[[sources.nats]]\nservers = [\"nats://127.0.0.1:" + std::to_string(no_nats) + "\"]\n"
                    "stream = \"EVENTS\"\ndurable = \"evpipe-mon\"\n";
  evpipe_process evp(cfg, "monitoring");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(tcp_port);
  {
    ndjson_client client(tcp_port);
    client.send_all(valid_event("mon-1") + "\n{not json\n");
    ASSERT_TRUE(eventually([&] {
      return metric_family_sum(http_get(http_port, "/metrics"), "evpipe_batches_total") >= 1 &&
             http_get(http_port, "/metrics").find("evpipe_dlq_total{") != std::string::npos;
    }, 60s)) << http_get(http_port, "/metrics") << evp.log();
  }
  std::string response = http_get(http_port, "/metrics");
  auto body_at = response.find("\r\n\r\n");
  ASSERT_NE(body_at, std::string::npos) << response;
  std::string metrics = response.substr(body_at + 4);
  auto served = served_names(metrics);
  ASSERT_TRUE(served.count("evpipe_mqtt_connections_active")) << metrics;

  const std::string deploy = std::string(EVPIPE_SOURCE_DIR) + "/deploy/";
  std::string rules = read_text(deploy + "prometheus/evpipe_alerts.yml");
  std::string dashboard = read_text(deploy + "grafana/evpipe.json");
  auto in_rules = referenced_names(rules), in_dashboard = referenced_names(dashboard);
  // One name per alert at least: a broken pattern must not pass as "nothing to check".
  EXPECT_GE(in_rules.size(), 6u);
  EXPECT_GE(in_dashboard.size(), 15u);
  for (const auto& n : in_rules) EXPECT_TRUE(served.count(n)) << "evpipe_alerts.yml uses " << n << ", not in /metrics";
  for (const auto& n : in_dashboard) EXPECT_TRUE(served.count(n)) << "evpipe.json uses " << n << ", not in /metrics";

  // The dashboard parses as JSON, and every target's query parses as PromQL:
  // they go into a rules file (Grafana's $__rate_interval as 5m) for promtool.
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  ASSERT_EQ(parser.parse(dashboard).get(root), simdjson::SUCCESS) << "deploy/grafana/evpipe.json is not JSON";
  std::string as_rules = "groups:\n  - name: dashboard\n    rules:\n";
  size_t queries = 0;
  for (simdjson::dom::element panel : root["panels"].get_array()) {
    simdjson::dom::array targets;
    if (panel["targets"].get(targets) != simdjson::SUCCESS) continue;  // rows
    for (simdjson::dom::element t : targets) {
      std::string_view expr;
      ASSERT_EQ(t["expr"].get(expr), simdjson::SUCCESS);
      std::string e(expr);
      EXPECT_FALSE(referenced_names(e).empty()) << "a panel query names no evpipe metric: " << e;
      for (auto at = e.find("$__rate_interval"); at != std::string::npos; at = e.find("$__rate_interval")) {
        e.replace(at, 16, "5m");
      }
      std::string quoted;
      for (char c : e) quoted += (c == '\'') ? std::string("''") : std::string(1, c);
      as_rules += "      - record: dashboard:q" + std::to_string(queries++) + "\n        expr: '" + quoted + "'\n";
    }
  }
  EXPECT_GE(queries, 15u);
  std::string dir = env_or("TMPDIR", "/tmp");
  std::string rules_path = dir + "/evpipe_dashboard_rules_" + std::to_string(::getpid()) + ".yml";
  std::ofstream(rules_path) << as_rules;
  std::string out;
  EXPECT_EQ(run(std::string(EVPIPE_PROMTOOL) + " check rules " + rules_path, out), 0) << out << as_rules;
  std::remove(rules_path.c_str());

  // /metrics itself: the exposition format and Prometheus's naming lint.
  std::string metrics_path = dir + "/evpipe_metrics_" + std::to_string(::getpid()) + ".txt";
  std::ofstream(metrics_path) << metrics;
  EXPECT_EQ(run(std::string(EVPIPE_PROMTOOL) + " check metrics < " + metrics_path, out), 0) << out;
  std::remove(metrics_path.c_str());
}

}  // namespace
}  // namespace evpipe::testing
