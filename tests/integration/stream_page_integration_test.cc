// The stream's page (GET / on [stream] listen, read/stream/page.html) in a
// real browser: headless Chromium (Debian `chromium`) opens it with a kind
// filter, the test sends events of that kind and of another one plus a dead
// letter, and reads the page's DOM over the DevTools protocol (Beast's
// WebSocket client): the matching events appear, the others do not, the
// dead letter is counted by reason and the latency table is filled from
// /v1/metrics. With EVPIPE_PAGE_SCREENSHOT=<file.png> the page is saved
// there (docs/img/stream_page.png comes from it).

#include <gtest/gtest.h>

#include <cstring>

#include <algorithm>
#include <spawn.h>
#include <sys/wait.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/websocket.hpp>

#include <fstream>
#include <optional>

#include "tests/support/harness.h"
#include "tests/support/headless_browser.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;


// GET from Chromium's DevTools HTTP server, which answers only a Host that
// is an address or localhost and may keep the connection open: bounded by a
// receive timeout.
std::string devtools_get(uint16_t port, const std::string& path) {
  std::string out;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                      "\r\nConnection: close\r\n\r\n";
    (void)::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    char buf[8192];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, n);
  }
  ::close(fd);
  return out;
}

// The DevTools protocol of one page: Runtime.evaluate and
// Page.captureScreenshot, one call at a time.
class devtools {
 public:
  devtools(uint16_t port, const std::string& path) : ws_(ioc_) {
    asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    ws_.next_layer().connect(ep);
    ws_.read_message_max(64 << 20);
    ws_.handshake("127.0.0.1:" + std::to_string(port), path);
  }
  // The raw JSON answer to one call.
  std::string call(const std::string& method, const std::string& params) {
    int id = ++next_id_;
    ws_.write(asio::buffer("{\"id\":" + std::to_string(id) + ",\"method\":\"" + method + "\",\"params\":" + params + "}"));
    const std::string tag = "\"id\":" + std::to_string(id) + ",";
    for (;;) {  // skip events and other answers
      beast::flat_buffer buf;
      ws_.read(buf);
      std::string m = beast::buffers_to_string(buf.data());
      if (m.find(tag) != std::string::npos) return m;
    }
  }
  // A string expression's value (no quotes or backslashes in it, as used here).
  std::string text_of(const std::string& expression) {
    std::string escaped;
    for (char c : expression) {
      if (c == '"' || c == '\\') escaped += '\\';
      escaped += c;
    }
    std::string r = call("Runtime.evaluate", "{\"expression\":\"" + escaped + "\",\"returnByValue\":true}");
    const std::string tag = "\"value\":\"";
    auto at = r.find(tag);
    if (at == std::string::npos) return "";
    at += tag.size();
    return r.substr(at, r.find('"', at) - at);
  }
  void screenshot(const std::string& file) {
    std::string r = call("Page.captureScreenshot", "{\"format\":\"png\"}");
    const std::string tag = "\"data\":\"";
    auto at = r.find(tag);
    ASSERT_NE(at, std::string::npos) << r.substr(0, 300);
    at += tag.size();
    std::string b64 = r.substr(at, r.find('"', at) - at);
    std::string png(beast::detail::base64::decoded_size(b64.size()), '\0');
    auto n = beast::detail::base64::decode(png.data(), b64.data(), b64.size());
    png.resize(n.first);
    std::ofstream(file, std::ios::binary) << png;
  }

 private:
  asio::io_context ioc_;
  websocket::stream<asio::ip::tcp::socket> ws_;
  int next_id_ = 0;
};

std::string with_kind(std::string event, const std::string& kind) {
  auto at = event.find("\"project_created\"");
  return event.replace(at, 17, "\"" + kind + "\"");
}

class StreamPage : public TcpPipeline {
 protected:
  void SetUp() override {
    TcpPipeline::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    tcp_port = free_port();
    stream_port = free_port();
    http_port = free_port();
    tuning t;
    t.linger_ms = 1;
    t.tcp_extra = "\n[stream]\nlisten = \"127.0.0.1:" + std::to_string(stream_port) + "\"\npoll_ms = 5\n";
    evpipe = std::make_unique<evpipe_process>(config_for(db, tcp_port, http_port, t), "stream_page");
    ASSERT_EQ(evpipe->run_command("migrate"), 0) << evpipe->log("migrate.log");
    evpipe->start(tcp_port);
    ASSERT_TRUE(eventually([&] {
      try {
        ::close(connect_loopback(stream_port));
        return true;
      } catch (const std::exception&) {
        return false;
      }
    }, 30s));
  }
  void send_lines(const std::string& lines, uint64_t n) {
    ndjson_client p(tcp_port);
    p.send_all(lines);
    ASSERT_EQ(p.read_acks_until(n, 60s), n);
  }
  uint16_t tcp_port = 0, stream_port = 0, http_port = 0;
  std::unique_ptr<evpipe_process> evpipe;
};

TEST_F(StreamPage, ServesThePageAndTheMetricsItReads) {
  std::string page = http_get(stream_port, "/");
  EXPECT_NE(page.find("200 OK"), std::string::npos) << page.substr(0, 200);
  EXPECT_NE(page.find("text/html"), std::string::npos);
  EXPECT_NE(page.find("<title>evpipe stream</title>"), std::string::npos);
  EXPECT_NE(page.find("new EventSource("), std::string::npos);
  // Nothing from the network: no absolute URL is loaded, and the browser is told so.
  EXPECT_EQ(page.find("src=\"http"), std::string::npos);
  EXPECT_NE(page.find("Content-Security-Policy: default-src 'none'"), std::string::npos);
  std::string metrics = http_get(stream_port, "/v1/metrics");
  EXPECT_NE(metrics.find("taylor_event_latency_seconds_bucket"), std::string::npos) << metrics.substr(0, 300);
  EXPECT_NE(metrics.find("taylor_stream_commit_to_send_seconds_bucket"), std::string::npos);
  EXPECT_NE(http_get(stream_port, "/nothing").find("404"), std::string::npos);
}

TEST_F(StreamPage, HeadlessChromiumShowsTheEventsSentMeanwhile) {
  std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (scripts/lib.sh installs it)";
  std::string profile = env_or("TMPDIR", "/tmp") + "/chromium_stream_page_" + std::to_string(::getpid());
  std::string rm = "rm -rf '" + profile + "'";
  (void)std::system(rm.c_str());
  uint16_t debug_port = free_port();
  {
    headless_browser b(chromium, "http://127.0.0.1:" + std::to_string(stream_port) + "/?kinds=page_shown&topics=tracker%2F%23",
                       profile, debug_port);
    ASSERT_TRUE(b.started());
    // The page's DevTools target (Chromium starts slowly on a busy machine).
    std::string target;
    ASSERT_TRUE(eventually([&] {
      std::string list = devtools_get(debug_port, "/json/list");
      auto at = list.find("ws://127.0.0.1:" + std::to_string(debug_port) + "/devtools/page/");
      if (at == std::string::npos) return false;
      at = list.find("/devtools/page/", at);
      target = list.substr(at, list.find('"', at) - at);
      return true;
    }, 120s, 200ms)) << "no DevTools target";
    devtools page(debug_port, target);
    ASSERT_TRUE(eventually([&] { return page.text_of("document.getElementById('state').textContent") == "live"; },
                           60s, 100ms))
        << "the page never connected to the stream";
    // Subscribed once the stream has sent the caught_up frame.
    ASSERT_TRUE(eventually([&] { return !page.text_of("document.getElementById('position').textContent").empty(); },
                           30s, 100ms));

    // Sent now, while the page watches: 20 of its kind, 10 of another, 5 of
    // its kind on a topic its filter does not take, one dead letter.
    std::string lines;
    for (int i = 0; i < 20; ++i) lines += with_kind(valid_event("shown-" + std::to_string(i)), "page_shown") + "\n";
    for (int i = 0; i < 10; ++i) lines += valid_event("hidden-" + std::to_string(i)) + "\n";
    for (int i = 0; i < 5; ++i) {
      lines += with_kind(valid_event("elsewhere-" + std::to_string(i), "plain", ",\"topic\":\"plant/line/1\""),
                         "page_shown") + "\n";
    }
    lines += "{\"not\":\"an event\"}\n";
    send_lines(lines, 36);
    // The rates: each shows the last second, so they are watched from now on.
    std::string ingest_rate, stream_rate;
    bool ingest_seen = false, stream_seen = false;
    EXPECT_TRUE(eventually([&] {
      ingest_rate = page.text_of("document.getElementById('rate_ingest').textContent");
      stream_rate = page.text_of("document.getElementById('rate_stream').textContent");
      ingest_seen = ingest_seen || std::atoi(ingest_rate.c_str()) > 0;
      stream_seen = stream_seen || std::atoi(stream_rate.c_str()) > 0;
      return ingest_seen && stream_seen;
    }, 20s, 50ms)) << "ingest " << ingest_rate << ", delivered " << stream_rate;

    const std::string keys_js =
        "[...document.querySelectorAll('#events tr')].map(r => JSON.parse(r.cells[3].textContent).idempotency_key)"
        ".join(' ')";
    std::string keys;
    EXPECT_TRUE(eventually([&] {
      keys = " " + page.text_of(keys_js) + " ";
      for (int i = 0; i < 20; ++i) {
        if (keys.find(" shown-" + std::to_string(i) + " ") == std::string::npos) return false;
      }
      return true;
    }, 60s, 200ms)) << "keys on the page: " << keys;
    EXPECT_EQ(keys.find("hidden-"), std::string::npos) << keys;     // filtered out by kind
    EXPECT_EQ(keys.find("elsewhere-"), std::string::npos) << keys;  // and by topic
    // The newest first: the page lists shown-19 above shown-0.
    EXPECT_LT(keys.find(" shown-19 "), keys.find(" shown-0 ")) << keys;

    // The side panels, from /v1/metrics (refreshed every second).
    std::string dlq, latency;
    EXPECT_TRUE(eventually([&] {
      dlq = page.text_of("document.getElementById('dlq').innerText");
      return dlq.find("missing_field") != std::string::npos;
    }, 30s, 200ms)) << dlq;
    // Each histogram's row: name, p50, p90, p99, count. These two have counted
    // the events just sent, and show a p99.
    const std::string rows_js =
        "[...document.querySelectorAll('#latency tr')].filter(r => r.cells[0].textContent === 'event_latency' || "
        "r.cells[0].textContent === 'stream_commit_to_send').map(r => r.cells[0].textContent + '=' + "
        "r.cells[3].textContent + '/' + r.cells[4].textContent).join(';') + ';'";
    EXPECT_TRUE(eventually([&] {
      latency = page.text_of(rows_js);
      for (const char* name : {"event_latency=", "stream_commit_to_send="}) {
        const size_t at = latency.find(name);
        if (at == std::string::npos) return false;
        const std::string cell = latency.substr(at + std::strlen(name), latency.find(';', at) - at - std::strlen(name));
        const size_t slash = cell.find('/');
        if (slash == std::string::npos || cell.substr(0, slash) == "–" || cell.substr(0, slash).empty()) return false;
        if (std::atol(cell.c_str() + slash + 1) < 20) return false;
      }
      return true;
    }, 30s, 200ms)) << latency;

    if (std::string shot = env_or("EVPIPE_PAGE_SCREENSHOT"); !shot.empty()) page.screenshot(shot);
  }
  (void)std::system(rm.c_str());
}

// A browser's own WebSocket (Chromium's, which offers permessage-deflate and
// masks its frames) against the stream's framing: it subscribes by kind,
// gets caught_up, then exactly the events of that kind sent meanwhile, in
// position order (the shards' transactions' order, as stored).
TEST_F(StreamPage, HeadlessChromiumsWebSocketSubscribesAndReceives) {
  std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (scripts/lib.sh installs it)";
  std::string profile = env_or("TMPDIR", "/tmp") + "/chromium_stream_ws_" + std::to_string(::getpid());
  std::string rm = "rm -rf '" + profile + "'";
  (void)std::system(rm.c_str());
  uint16_t debug_port = free_port();
  {
    headless_browser b(chromium, "about:blank", profile, debug_port);
    ASSERT_TRUE(b.started());
    std::string target;
    ASSERT_TRUE(eventually([&] {
      std::string list = devtools_get(debug_port, "/json/list");
      auto at = list.find("ws://127.0.0.1:" + std::to_string(debug_port) + "/devtools/page/");
      if (at == std::string::npos) return false;
      at = list.find("/devtools/page/", at);
      target = list.substr(at, list.find('"', at) - at);
      return true;
    }, 120s, 200ms)) << "no DevTools target";
    devtools page(debug_port, target);
    const std::string open_js =
        "window.got = []; window.state = 'connecting';"
        "const ws = new WebSocket('ws://127.0.0.1:" + std::to_string(stream_port) + "/v1/stream');"
        "ws.onopen = () => ws.send(JSON.stringify({type: 'subscribe', kinds: ['browser_seen'], since: 'now'}));"
        "ws.onmessage = e => { const m = JSON.parse(e.data);"
        "  if (m.type === 'caught_up') window.state = 'live';"
        "  if (m.type === 'event') window.got.push(m.event.idempotency_key); };"
        "ws.onclose = () => { window.state = 'closed'; };"
        "'started'";
    ASSERT_EQ(page.text_of(open_js), "started");
    ASSERT_TRUE(eventually([&] { return page.text_of("window.state") == "live"; }, 30s, 100ms))
        << page.text_of("window.state");
    std::string lines, expected;
    for (int i = 0; i < 10; ++i) lines += with_kind(valid_event("seen-" + std::to_string(i)), "browser_seen") + "\n";
    for (int i = 0; i < 5; ++i) lines += valid_event("other-" + std::to_string(i)) + "\n";
    send_lines(lines, 15);
    for (const auto& k : db.column("SELECT payload->>'idempotency_key' FROM events_mirror "
                                   "WHERE payload->>'kind' = 'browser_seen' ORDER BY tx, id")) {
      expected += (expected.empty() ? "" : " ") + k;
    }
    ASSERT_EQ(std::count(expected.begin(), expected.end(), ' '), 9) << expected;
    std::string got;
    EXPECT_TRUE(eventually([&] { return (got = page.text_of("window.got.join(' ')")) == expected; }, 30s, 100ms))
        << "got: " << got;
    EXPECT_EQ(page.text_of("window.state"), "live");
  }
  (void)std::system(rm.c_str());
}

}  // namespace
}  // namespace evpipe::testing
