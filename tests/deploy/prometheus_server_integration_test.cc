// deploy/ against a real Prometheus server (issue 15): Debian's prometheus,
// on loopback with a scratch TSDB, scrapes a running evpipe under load every
// second and evaluates deploy/prometheus/evpipe_alerts.yml. Then every query
// of deploy/grafana/evpipe.json and every alert's expression go through
// Prometheus's HTTP API: each must parse and return series. An alert's
// expression is a comparison (`... > 10`) that returns series only when it
// fires, so each of its operands is evaluated instead (`sum by (instance,
// reason) (increase(evpipe_dlq_total[10m]))`), and the rule itself must be
// evaluated by the server without error (health "ok" in /api/v1/rules).
// monitoring_integration_test checks the names and promtool's parse; this
// proves the queries find data.

#include <gtest/gtest.h>
#include <simdjson.h>
#include <spawn.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string url_encode(const std::string& s) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// The body of GET `path` (HTTP/1.0: Prometheus then answers without chunks); "" when unreachable.
std::string get_body(uint16_t port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  auto at = out.find("\r\n\r\n");
  return at == std::string::npos ? "" : out.substr(at + 4);
}

// A string field of a JSON object; "" when absent.
std::string text_of(simdjson::dom::element e, const char* key) {
  std::string_view v;
  return e[key].get(v) == simdjson::SUCCESS ? std::string(v) : std::string();
}

// The operands of an expression's top-level comparisons and set operators
// (`a > 10`, `a unless b > 0`): the parts that must return series whether
// or not the alert fires. Numbers are left out.
std::vector<std::string> operands(const std::string& expr) {
  static const char* ops[] = {" unless ", " and ", " or ", " >= ", " <= ", " == ", " != ", " > ", " < "};
  std::vector<std::string> out;
  int depth = 0;
  bool quoted = false;
  size_t from = 0;
  auto take = [&](size_t to) {
    std::string part = expr.substr(from, to - from);
    part.erase(0, part.find_first_not_of(" \n"));
    part.erase(part.find_last_not_of(" \n") + 1);
    char* end = nullptr;
    (void)std::strtod(part.c_str(), &end);
    if (part.empty() || end == part.c_str() + part.size()) return;  // a number
    // A parenthesised comparison (`a or (b > 0 unless c > 0)`): its own operands.
    if (part.front() == '(' && part.back() == ')') {
      int d = 0;
      size_t close = 0;
      for (size_t k = 0; k < part.size(); ++k) {
        d += part[k] == '(' ? 1 : part[k] == ')' ? -1 : 0;
        if (d == 0) {
          close = k;
          break;
        }
      }
      if (close == part.size() - 1) {
        for (auto& inner : operands(part.substr(1, part.size() - 2))) out.push_back(std::move(inner));
        return;
      }
    }
    out.push_back(part);
  };
  for (size_t i = 0; i < expr.size(); ++i) {
    char c = expr[i];
    if (c == '"') quoted = !quoted;
    if (quoted) continue;
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') --depth;
    if (depth != 0) continue;
    for (const char* op : ops) {
      if (expr.compare(i, std::strlen(op), op) == 0) {
        take(i);
        i += std::strlen(op) - 1;
        from = i + 1;
        break;
      }
    }
  }
  take(expr.size());
  return out;
}

class PrometheusServer : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    if (std::string(EVPIPE_PROMETHEUS).empty() || ::access(EVPIPE_PROMETHEUS, X_OK) != 0) {
      FAIL() << "prometheus is not installed (Debian package prometheus; scripts/test.sh installs it)";
    }
  }
  void TearDown() override {
    if (prometheus_ > 0) {
      ::kill(prometheus_, SIGTERM);
      if (wait_for_exit(prometheus_, 30s) != 0 && prometheus_ > 0) ::kill(prometheus_, SIGKILL);
      if (prometheus_ > 0) ::waitpid(prometheus_, nullptr, 0);
    }
    if (!dir_.empty()) (void)std::system(("rm -rf " + dir_).c_str());
  }
  // Starts prometheus scraping 127.0.0.1:`target` every second with the alert rules.
  uint16_t start_prometheus(uint16_t target) {
    dir_ = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_prometheus";
    (void)std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_ + "/data").c_str());
    const std::string rules = std::string(EVPIPE_SOURCE_DIR) + "/deploy/prometheus/evpipe_alerts.yml";
    std::ofstream(dir_ + "/prometheus.yml") << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                                               "rule_files:\n  - " << rules << "\n"
                                               "scrape_configs:\n  - job_name: evpipe\n    static_configs:\n"
                                               "      - targets: [\"127.0.0.1:" << target << "\"]\n";
    uint16_t port = free_port();
    std::vector<std::string> args = {EVPIPE_PROMETHEUS,
                                     "--config.file=" + dir_ + "/prometheus.yml",
                                     "--storage.tsdb.path=" + dir_ + "/data",
                                     "--web.listen-address=127.0.0.1:" + std::to_string(port),
                                     "--log.level=warn"};
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string log = dir_ + "/prometheus.log";
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (posix_spawn(&prometheus_, argv[0], &fa, nullptr, argv.data(), environ) != 0) prometheus_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    return port;
  }
  std::string prometheus_log() const { return read_text(dir_ + "/prometheus.log"); }

  test_db db;
  pid_t prometheus_ = -1;
  std::string dir_;
};

TEST_F(PrometheusServer, EveryPanelQueryAndAlertExpressionReturnsSeries) {
  uint16_t tcp_port = free_port(), http_port = free_port(), ingest_port = free_port(), no_broker = free_port(),
           no_nats = free_port();
  std::string cfg = "[pipeline]\nshards = 2\n[batch]\nlinger_ms = 2\n[postgres]\ndsn = \"" + db.dsn() +
                    "\"\n[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
                    "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) + "\"\ntopic = \"prom/tcp\"\n"
                    "[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(ingest_port) + "\"\n"
                    "[[sources.mqtt]]\nurl = \"mqtt://127.0.0.1:" + std::to_string(no_broker) + "\"\n"
                    "client_id = \"evpipe-prom\"\ntopics = [\"prom/#\"]\nbase_ms = 200\nmax_ms = 1000\n"
                    // A NATS source whose server is away: its series exist (EvpipeNatsDisconnected, the broker panel).
                    "[[sources.nats]]\nservers = [\"nats://127.0.0.1:" + std::to_string(no_nats) + "\"]\n"
                    "stream = \"EVENTS\"\ndurable = \"evpipe-prom\"\n";
  evpipe_process evp(cfg, "prometheus_server");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  // A row PostgreSQL refuses, so that db_rejected has a series.
  db.exec("ALTER TABLE events_mirror ADD CONSTRAINT prom_refuse CHECK (payload->'payload'->>'text' IS DISTINCT FROM 'refuse')");
  evp.start(tcp_port);

  // Load until the end of the test (bounded): valid events, a duplicate and
  // an invalid line per chunk, and one the database refuses.
  std::atomic<bool> stop{false};
  std::thread load([&] {
    ndjson_client c(tcp_port);
    uint64_t sent = 0;
    for (int chunk = 0; chunk < 100'000 && !stop.load(); ++chunk) {
      std::string data;
      for (int i = 0; i < 50; ++i) data += valid_event("prom-" + std::to_string(chunk) + "-" + std::to_string(i)) + "\n";
      data += valid_event("prom-" + std::to_string(chunk) + "-0") + "\n{not json\n";
      if (chunk == 3) data += valid_event("prom-refused", "refuse") + "\n";
      sent += 52 + (chunk == 3 ? 1 : 0);
      c.send_all(data);
      if (c.read_acks_until(sent, 30s) != sent) return;
      std::this_thread::sleep_for(20ms);
    }
  });
  struct joiner {
    std::atomic<bool>& stop;
    std::thread& t;
    ~joiner() {
      stop.store(true);
      if (t.joinable()) t.join();
    }
  } join_load{stop, load};

  uint16_t prom = start_prometheus(http_port);
  ASSERT_GT(prometheus_, 0);
  ASSERT_TRUE(eventually([&] { return get_body(prom, "/-/ready").find("Ready") != std::string::npos; }, 60s))
      << prometheus_log();
  // Enough scrapes for a rate over 15 s, and the target up.
  ASSERT_TRUE(eventually([&] {
    std::string b = get_body(prom, "/api/v1/query?query=" + url_encode("count_over_time(up{job=\"evpipe\"}[1m]) >= 12"));
    return b.find("\"result\":[{") != std::string::npos;
  }, 90s, 500ms)) << prometheus_log();

  simdjson::dom::parser parser;
  // Whether `expr` parses and returns at least one series; `why` says what came back.
  auto returns_series = [&](const std::string& expr, std::string& why) {
    why = get_body(prom, "/api/v1/query?query=" + url_encode(expr));
    simdjson::dom::element root;
    if (parser.parse(why).get(root) != simdjson::SUCCESS) return false;
    std::string_view status;
    if (root["status"].get(status) != simdjson::SUCCESS || status != "success") return false;
    simdjson::dom::array result;
    if (root["data"]["result"].get(result) != simdjson::SUCCESS) return false;
    return result.size() > 0;
  };

  // Every panel's query, Grafana's $__rate_interval as 15 s (15 scrapes).
  std::string dashboard = read_text(std::string(EVPIPE_SOURCE_DIR) + "/deploy/grafana/evpipe.json");
  simdjson::dom::parser dash_parser;
  simdjson::dom::element dash;
  ASSERT_EQ(dash_parser.parse(dashboard).get(dash), simdjson::SUCCESS);
  size_t queries = 0;
  for (simdjson::dom::element panel : dash["panels"].get_array()) {
    simdjson::dom::array targets;
    if (panel["targets"].get(targets) != simdjson::SUCCESS) continue;  // rows
    const std::string title = text_of(panel, "title");
    for (simdjson::dom::element t : targets) {
      std::string_view view;
      ASSERT_EQ(t["expr"].get(view), simdjson::SUCCESS);
      std::string e(view);
      for (auto at = e.find("$__rate_interval"); at != std::string::npos; at = e.find("$__rate_interval")) {
        e.replace(at, 16, "15s");
      }
      std::string why;
      EXPECT_TRUE(eventually([&] { return returns_series(e, why); }, 30s, 1s))
          << "panel \"" << title << "\": " << e << "\n" << why;
      ++queries;
    }
  }
  EXPECT_GE(queries, 15u);

  // Every alert: evaluated by the server without error, and each operand of its expression returns series.
  std::string rules_body;
  simdjson::dom::element rules_root;
  ASSERT_TRUE(eventually([&] {
    rules_body = get_body(prom, "/api/v1/rules?type=alert");
    if (parser.parse(rules_body).get(rules_root) != simdjson::SUCCESS) return false;
    // Every rule evaluated at least once.
    return rules_body.find("\"lastEvaluation\":\"0001-01-01") == std::string::npos &&
           rules_body.find("\"health\":\"unknown\"") == std::string::npos;
  }, 30s, 1s)) << rules_body;
  // Copies: the parser is reused by returns_series below.
  struct alert {
    std::string name, query, health, error;
  };
  std::vector<alert> alerts;
  for (simdjson::dom::element group : rules_root["data"]["groups"].get_array()) {
    for (simdjson::dom::element rule : group["rules"].get_array()) {
      alerts.push_back({text_of(rule, "name"), text_of(rule, "query"), text_of(rule, "health"),
                        text_of(rule, "lastError")});
    }
  }
  EXPECT_GE(alerts.size(), 6u) << rules_body;
  for (const auto& a : alerts) {
    EXPECT_EQ(a.health, "ok") << a.name << ": " << a.error;
    auto parts = operands(a.query);
    EXPECT_FALSE(parts.empty()) << a.name << ": " << a.query;
    for (const auto& part : parts) {
      std::string why;
      EXPECT_TRUE(eventually([&] { return returns_series(part, why); }, 30s, 1s))
          << a.name << ": " << part << "\n" << why;
    }
  }
  stop.store(true);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// The operand split itself, on the shapes the rules use.
TEST(PrometheusOperands, SplitsTopLevelComparisonsAndSetOperators) {
  EXPECT_EQ(operands("sum by (a) (increase(x[10m])) > 10"), std::vector<std::string>{"sum by (a) (increase(x[10m]))"});
  EXPECT_EQ(operands("a > 0 unless b{c=\"x > y\"} > 0"), (std::vector<std::string>{"a", "b{c=\"x > y\"}"}));
  EXPECT_EQ(operands("m == 0"), std::vector<std::string>{"m"});
  EXPECT_EQ(operands("min by (i) (r) == 0 or (sum(e) > 0 unless sum(b) > 0)"),
            (std::vector<std::string>{"min by (i) (r)", "sum(e)", "sum(b)"}));
  EXPECT_EQ(operands("histogram_quantile(0.99, sum by (le) (rate(h[5m]))) > 1"),
            std::vector<std::string>{"histogram_quantile(0.99, sum by (le) (rate(h[5m])))"});
}

}  // namespace
}  // namespace evpipe::testing
