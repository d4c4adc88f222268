// Browser producers end to end: a page served from one loopback origin posts
// events to evpipe's HTTP source on another, in headless Chromium (Debian
// `chromium`, installed by scripts/test.sh): fetch() with JSON (a CORS
// preflight, then a response the page may read), fetch() with a text/plain
// body (no preflight) and navigator.sendBeacon. The page reports what it saw
// to the server that served it; the rows are checked in the database.

#include <gtest/gtest.h>
#include <poll.h>
#include <spawn.h>

#include <atomic>
#include <mutex>

#include "tests/support/harness.h"
#include "tests/support/headless_browser.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

// Serves one page on 127.0.0.1 (GET, any path) and keeps the body of the
// last POST /report. One thread; every wait bounded.
class page_server {
 public:
  explicit page_server(std::string html) : html_(std::move(html)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    port_ = free_port();
    a.sin_port = htons(port_);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0) {
      throw std::runtime_error("page server: cannot listen");
    }
    thread_ = std::thread([this] { run(); });
  }
  ~page_server() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] std::string report() {
    std::lock_guard lock(mu_);
    return report_;
  }

 private:
  void run() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      serve(c);
      ::close(c);
    }
  }
  // One request per connection (answered with Connection: close).
  void serve(int c) {
    std::string in;
    char buf[8192];
    auto deadline = std::chrono::steady_clock::now() + 10s;
    size_t want = std::string::npos;
    while (std::chrono::steady_clock::now() < deadline && in.size() < (1 << 20)) {
      auto end = in.find("\r\n\r\n");
      if (end != std::string::npos && want == std::string::npos) {
        auto cl = in.find("\r\nContent-Length: ");
        if (cl == std::string::npos) cl = in.find("\r\ncontent-length: ");
        want = end + 4 + (cl != std::string::npos && cl < end ? std::stoul(in.substr(cl + 18)) : 0);
      }
      if (want != std::string::npos && in.size() >= want) break;
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
    }
    std::string out;
    if (in.starts_with("POST /report")) {
      std::lock_guard lock(mu_);
      report_ = in.substr(std::min(in.size(), in.find("\r\n\r\n") + 4));
      out = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
    } else if (in.starts_with("GET / ")) {
      out = "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n"
            "Connection: close\r\nContent-Length: " + std::to_string(html_.size()) + "\r\n\r\n" + html_;
    } else {
      out = "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    }
    (void)::send(c, out.data(), out.size(), MSG_NOSIGNAL);
  }

  std::string html_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string report_;
  std::thread thread_;
};

TEST(HttpBrowser, APageFromAnotherOriginPostsWithFetchAndSendBeacon) {
  test_db db;
  if (!db.available()) {
    if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
    GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
  }
  std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (scripts/test.sh installs it)";

  uint16_t port = free_port(), metrics_port = free_port();
  const std::string json_event = valid_event("web-fetch"), text_event = valid_event("web-text"),
                    beacon_event = valid_event("web-beacon");
  // The page: every call's outcome, then a report to where it came from.
  std::string html = R"(<!doctype html><html><body><pre id="out">running</pre><script>
const url = 'http://127.0.0.1:)" + std::to_string(port) + R"(/v1/events';
async function run() {
  const out = [];
  try {
    const r = await fetch(url, {method: 'POST', body: ')" + json_event + R"(',
                                headers: {'Content-Type': 'application/json', 'X-Topic': 'browser/fetch'}});
    out.push('fetch ' + r.status + ' ' + (await r.text()).trim());
  } catch (e) { out.push('fetch failed: ' + e); }
  try {
    const r = await fetch(url, {method: 'POST', body: ')" + text_event + R"('});
    out.push('text ' + r.status);
  } catch (e) { out.push('text failed: ' + e); }
  out.push('beacon ' + navigator.sendBeacon(url, ')" + beacon_event + R"('));
  document.getElementById('out').textContent = out.join('\n');
  await fetch('/report', {method: 'POST', body: out.join('\n')});
}
run();
</script></body></html>)";
  page_server page(html);
  const std::string page_origin = "http://127.0.0.1:" + std::to_string(page.port());

  evpipe_process evp("[pipeline]\nshards = 2\n[postgres]\ndsn = \"" + db.dsn() +
                         "\"\n[http]\nlisten = \"127.0.0.1:" + std::to_string(metrics_port) +
                         "\"\n[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(port) +
                         "\"\ntopic = \"browser/default\"\ncors_allow_origins = [\"" + page_origin + "\"]\n",
                     "http_browser");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);

  std::string profile = env_or("TMPDIR", "/tmp") + "/chromium_profile_" + std::to_string(::getpid());
  std::string rm = "rm -rf '" + profile + "'";
  (void)std::system(rm.c_str());
  {
    headless_browser b(chromium, page_origin + "/", profile);
    ASSERT_TRUE(b.started());
    // Chromium starts slowly on a busy machine: generous deadlines.
    EXPECT_TRUE(eventually([&] { return !page.report().empty(); }, 120s)) << "the page never reported";
    EXPECT_TRUE(eventually([&] {
      return db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE 'web-%'") == 3;
    }, 60s));
  }
  (void)std::system(rm.c_str());
  std::string report = page.report();
  // The JSON fetch went through its preflight, and the page could read the answer.
  EXPECT_NE(report.find("fetch 200 {\"accepted\":1,\"ok\":1"), std::string::npos) << report;
  EXPECT_NE(report.find("text 200"), std::string::npos) << report;
  EXPECT_NE(report.find("beacon true"), std::string::npos) << report;
  EXPECT_EQ(db.column("SELECT topic FROM events_mirror WHERE idempotency_key = 'web-fetch'"),
            std::vector<std::string>{"browser/fetch"});
  EXPECT_EQ(db.column("SELECT topic FROM events_mirror WHERE idempotency_key = 'web-beacon'"),
            std::vector<std::string>{"browser/default"});
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
}

}  // namespace
}  // namespace evpipe::testing
