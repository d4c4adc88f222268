// The HTTP source by the RFCs, end to end against the evpipe binary and the
// PostgreSQL that scripts/test.sh starts: compressed request bodies
// (Content-Encoding), Expect: 100-continue, the lingering close after an
// early error, CORS for browser producers, Keep-Alive and idle timeouts, and a
// leading UTF-8 byte order mark. Requests go over plain sockets (and Python's
// urllib where a real client's behaviour is the point).

#include <gtest/gtest.h>
#include <poll.h>
#include <zlib.h>

#include <cstdio>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

// Polls until `done` or the timeout; returns done().
template <typename F>
bool wait_until(F done, std::chrono::milliseconds timeout = 60s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

struct http_reply {
  int status = 0;
  std::string head;  // status line and headers
  std::string body;
  std::string raw;   // everything received
};

http_reply parse_reply(const std::string& raw) {
  http_reply r;
  r.raw = raw;
  if (raw.size() > 12) r.status = std::atoi(raw.c_str() + 9);
  auto end = raw.find("\r\n\r\n");
  r.head = raw.substr(0, end);
  if (end != std::string::npos) r.body = raw.substr(end + 4);
  return r;
}

// Reads from `fd` until `done(received)`, the peer closes, or the timeout.
std::string read_until(int fd, std::chrono::milliseconds timeout,
                       const std::function<bool(const std::string&)>& done = {}) {
  std::string raw;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[65536];
  while (std::chrono::steady_clock::now() < deadline && !(done && done(raw))) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  return raw;
}

void send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) throw std::runtime_error("send");
    off += static_cast<size_t>(n);
  }
}

// One request (Connection: close) on a fresh connection; reads the answer to its end.
http_reply post(uint16_t port, const std::string& body, const std::string& headers,
                const std::string& method = "POST") {
  int fd = connect_loopback(port);
  std::string req = method + " /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers +
                    "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  send_all(fd, req);
  auto reply = parse_reply(read_until(fd, 60s));
  ::close(fd);
  return reply;
}

bool has_header(const http_reply& r, const std::string& line) {
  return r.head.find("\r\n" + line + "\r\n") != std::string::npos ||
         r.head.ends_with("\r\n" + line);
}

// `text` compressed; window_bits picks the wrapper (31 gzip, 15 zlib).
std::string compress(const std::string& text, int window_bits) {
  z_stream zs{};
  deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, text.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  zs.avail_in = static_cast<uInt>(text.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) throw std::runtime_error("deflate");
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

class HttpProtocol : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
  }
  std::string config(uint16_t port, uint16_t metrics_port, const std::string& extra = "") {
    return "[pipeline]\nshards = 2\n"
           "[postgres]\ndsn = \"" + db.dsn() + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
           "[http]\nlisten = \"127.0.0.1:" + std::to_string(metrics_port) + "\"\n"
           "[[sources.http]]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\ntopic = \"tracker/events/http\"\n"
           "max_body_bytes = 65536\n" + extra;
  }
  // Starts evpipe on a fresh schema.
  std::unique_ptr<evpipe_process> start(uint16_t port, const std::string& config_text, const std::string& name) {
    auto evp = std::make_unique<evpipe_process>(config_text, name);
    EXPECT_EQ(evp->run_command("migrate"), 0) << evp->log("migrate.log");
    evp->start(port);
    return evp;
  }
  // Rows whose payload is exactly `event` (as JSON).
  long stored(const std::string& event) {
    std::string quoted;
    for (char c : event) quoted += c == '\'' ? std::string("''") : std::string(1, c);
    return db.count("SELECT count(*) FROM events_mirror WHERE payload = '" + quoted + "'::jsonb");
  }
  test_db db;
};

const std::string json_type = "Content-Type: application/json\r\n";
const std::string ndjson_type = "Content-Type: application/x-ndjson\r\n";

TEST_F(HttpProtocol, GzipAndDeflateBodiesAreStoredExactly) {
  uint16_t port = free_port(), metrics_port = free_port();
  auto evp = start(port, config(port, metrics_port), "http_coding");

  std::vector<std::string> events;
  std::string ndjson;
  for (int i = 0; i < 20; ++i) {
    events.push_back(valid_event("gz-" + std::to_string(i), "gzipped \\u00e9 " + std::to_string(i)));
    ndjson += events.back() + "\n";
  }
  auto gz = post(port, compress(ndjson, 31), ndjson_type + "Content-Encoding: gzip\r\n");
  EXPECT_EQ(gz.status, 200) << gz.raw;
  EXPECT_NE(gz.body.find("\"accepted\":20,\"ok\":20,\"duplicate\":0,\"dlq\":0"), std::string::npos) << gz.body;

  std::string array = "[" + valid_event("df-1") + "," + valid_event("df-2") + "]";
  auto df = post(port, compress(array, 15), json_type + "Content-Encoding: Deflate\r\n");
  EXPECT_EQ(df.status, 200) << df.raw;
  EXPECT_NE(df.body.find("\"accepted\":2,\"ok\":2"), std::string::npos) << df.body;

  for (const auto& e : events) EXPECT_EQ(stored(e), 1) << e;
  EXPECT_EQ(stored(valid_event("df-1")), 1);
  EXPECT_EQ(stored(valid_event("df-2")), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 22);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0) << "no garbage dead-lettered";
}

TEST_F(HttpProtocol, BombsBrokenStreamsAndUnknownCodingsAreRefused) {
  uint16_t port = free_port(), metrics_port = free_port();
  auto evp = start(port, config(port, metrics_port), "http_bomb");

  // 16 MiB of blank lines in about 16 KiB: under max_body_bytes on the wire,
  // far over it decoded.
  std::string bomb = compress(std::string(16 << 20, '\n'), 31);
  ASSERT_LT(bomb.size(), 65536u);
  auto big = post(port, bomb, ndjson_type + "Content-Encoding: gzip\r\n");
  EXPECT_EQ(big.status, 413) << big.raw;

  std::string gz = compress(valid_event("br-1") + "\n", 31);
  auto cut = post(port, gz.substr(0, gz.size() - 6), ndjson_type + "Content-Encoding: gzip\r\n");
  EXPECT_EQ(cut.status, 400) << cut.raw;

  auto br = post(port, "\x0b\x02\x80{}\x03", json_type + "Content-Encoding: br\r\n");
  EXPECT_EQ(br.status, 415) << br.raw;
  EXPECT_TRUE(has_header(br, "Accept-Encoding: gzip, deflate")) << br.head;
  EXPECT_EQ(post(port, gz, ndjson_type + "Content-Encoding: gzip, gzip\r\n").status, 415);

  // The connection that was refused is not the end of the listener.
  EXPECT_EQ(post(port, gz, ndjson_type + "Content-Encoding: x-gzip\r\n").status, 200);
  EXPECT_EQ(post(port, valid_event("id-1"), json_type + "Content-Encoding: identity\r\n").status, 200);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 2);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
}

// RFC 9110 section 10.1.1: the expectation token is case-insensitive.
TEST_F(HttpProtocol, ExpectContinueIsMatchedWhateverItsCase) {
  uint16_t port = free_port(), metrics_port = free_port();
  auto evp = start(port, config(port, metrics_port), "http_expect");
  std::string body = valid_event("ex-1");
  int fd = connect_loopback(port);
  send_all(fd, "POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + json_type +
                   "Expect: 100-Continue\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n");
  // A client waits for the interim answer before it sends the body (curl
  // gives up after 1 s and sends anyway): it must come without the body.
  std::string interim = read_until(fd, 30s, [](const std::string& r) { return r.find("\r\n\r\n") != std::string::npos; });
  EXPECT_TRUE(interim.starts_with("HTTP/1.1 100 Continue\r\n")) << interim;
  send_all(fd, body);
  auto rest = read_until(fd, 60s);
  ::close(fd);
  EXPECT_NE(rest.find("HTTP/1.1 200 OK\r\n"), std::string::npos) << rest;
  EXPECT_EQ(stored(body), 1);
}

// RFC 9110 section 15.2: no 1xx answer to an HTTP/1.0 client.
TEST_F(HttpProtocol, Http10ClientsGetNoInterimAnswer) {
  uint16_t port = free_port(), metrics_port = free_port();
  auto evp = start(port, config(port, metrics_port), "http_10");
  std::string body = valid_event("ten-1");
  int fd = connect_loopback(port);
  send_all(fd, "POST /v1/events HTTP/1.0\r\nHost: x\r\n" + json_type + "Expect: 100-continue\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body);
  auto reply = parse_reply(read_until(fd, 60s));
  ::close(fd);
  EXPECT_EQ(reply.status, 200) << reply.raw;
  EXPECT_EQ(reply.raw.find(" 100 "), std::string::npos) << reply.raw;
  EXPECT_TRUE(reply.raw.starts_with("HTTP/1.0 200")) << reply.raw;
  EXPECT_EQ(stored(body), 1);
}

// Python's urllib sends the whole body before it reads the answer. Refused
// early, it must still read its 413, not a reset: whether the size is known
// up front (Content-Length) or only once the chunks exceed the limit.
TEST_F(HttpProtocol, AClientStillSendingReadsTheErrorAnswer) {
  uint16_t port = free_port(), metrics_port = free_port();
  std::string token_file = env_or("TMPDIR", "/tmp") + "/http_linger_token_" + std::to_string(::getpid());
  std::ofstream(token_file) << "tok-linger\n";
  auto evp = start(port, config(port, metrics_port, "bearer_token_file = \"" + token_file + "\"\n"), "http_linger");
  std::string script = env_or("TMPDIR", "/tmp") + "/http_linger_" + std::to_string(::getpid()) + ".py";
  std::ofstream(script) << R"(import sys, urllib.request, urllib.error
port, mode = int(sys.argv[1]), sys.argv[2]
size = 24 << 20  # far more than the socket buffers hold
headers = {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + ('tok-linger' if mode != 'noauth' else 'x')}
if mode != 'length':
    data = (b' ' * 65536 for _ in range(size // 65536))  # no length: sent chunked
else:
    data = b' ' * size
req = urllib.request.Request('http://127.0.0.1:%d/v1/events' % port, data=data, headers=headers)
try:
    urllib.request.urlopen(req, timeout=60)
    print('status 200')
except urllib.error.HTTPError as e:
    print('status %d' % e.code)
except Exception as e:
    print('error %s: %s' % (type(e).__name__, e))
)";
  auto run = [&](const std::string& mode) {
    std::string cmd = "timeout 120 python3 '" + script + "' " + std::to_string(port) + " " + mode + " 2>&1";
    std::string out;
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
      char buf[512];
      while (std::fgets(buf, sizeof buf, p)) out += buf;
      ::pclose(p);
    }
    return out;
  };
  EXPECT_EQ(run("length"), "status 413\n");
  EXPECT_EQ(run("chunked"), "status 413\n");
  EXPECT_EQ(run("noauth"), "status 401\n");  // refused before its (chunked) body
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
}

TEST_F(HttpProtocol, BrowserOriginsThatAreListedGetCorsAnswers) {
  uint16_t port = free_port(), metrics_port = free_port();
  std::string token_file = env_or("TMPDIR", "/tmp") + "/http_cors_token_" + std::to_string(::getpid());
  std::ofstream(token_file) << "tok-cors\n";
  auto evp = start(port,
                   config(port, metrics_port,
                          "cors_allow_origins = [\"http://app.example:8000\", \"https://dash.example\"]\n"
                          "bearer_token_file = \"" + token_file + "\"\n"),
                   "http_cors");
  const std::string auth = "Authorization: Bearer tok-cors\r\n";

  // The preflight needs no token, and answers what the page may send.
  auto pre = post(port, "",
                  "Origin: http://app.example:8000\r\nAccess-Control-Request-Method: POST\r\n"
                  "Access-Control-Request-Headers: authorization,content-type,x-topic\r\n",
                  "OPTIONS");
  EXPECT_EQ(pre.status, 204) << pre.raw;
  EXPECT_TRUE(has_header(pre, "Access-Control-Allow-Origin: http://app.example:8000")) << pre.head;
  EXPECT_TRUE(has_header(pre, "Access-Control-Allow-Methods: POST")) << pre.head;
  EXPECT_TRUE(has_header(pre, "Access-Control-Allow-Headers: content-type, content-encoding, authorization, x-topic"))
      << pre.head;
  EXPECT_NE(pre.head.find("\r\nAccess-Control-Max-Age: "), std::string::npos) << pre.head;
  EXPECT_TRUE(has_header(pre, "Vary: Origin")) << pre.head;

  // Another origin: no CORS headers at all, so the browser refuses.
  auto other = post(port, "", "Origin: http://evil.example\r\nAccess-Control-Request-Method: POST\r\n", "OPTIONS");
  EXPECT_EQ(other.status, 204);
  EXPECT_EQ(other.head.find("Access-Control-"), std::string::npos) << other.head;

  // The actual request, and its errors, carry the origin.
  auto ok = post(port, valid_event("cors-1"), json_type + auth + "Origin: https://dash.example\r\n");
  EXPECT_EQ(ok.status, 200) << ok.raw;
  EXPECT_TRUE(has_header(ok, "Access-Control-Allow-Origin: https://dash.example")) << ok.head;
  EXPECT_TRUE(has_header(ok, "Vary: Origin")) << ok.head;
  auto denied = post(port, valid_event("cors-2"), json_type + "Origin: https://dash.example\r\n");
  EXPECT_EQ(denied.status, 401);
  EXPECT_TRUE(has_header(denied, "Access-Control-Allow-Origin: https://dash.example")) << denied.head;
  auto foreign = post(port, valid_event("cors-3"), json_type + auth + "Origin: http://evil.example\r\n");
  EXPECT_EQ(foreign.head.find("Access-Control-"), std::string::npos) << foreign.head;

  // text/plain (sendBeacon, fetch without a preflight): read as JSON or NDJSON,
  // from listed origins only.
  auto beacon = post(port, valid_event("cors-4"), "Content-Type: text/plain;charset=UTF-8\r\n" + auth +
                                                      "Origin: http://app.example:8000\r\n");
  EXPECT_EQ(beacon.status, 200) << beacon.raw;
  auto lines = post(port, valid_event("cors-5") + "\n" + valid_event("cors-6") + "\n",
                    "Content-Type: text/plain\r\n" + auth + "Origin: http://app.example:8000\r\n");
  EXPECT_NE(lines.body.find("\"accepted\":2,\"ok\":2"), std::string::npos) << lines.raw;
  auto forged = post(port, valid_event("cors-7"), "Content-Type: text/plain\r\n" + auth + "Origin: http://evil.example\r\n");
  EXPECT_EQ(forged.status, 403) << forged.raw;

  EXPECT_EQ(stored(valid_event("cors-1")), 1);
  EXPECT_EQ(stored(valid_event("cors-4")), 1);
  EXPECT_EQ(stored(valid_event("cors-7")), 0);
  EXPECT_EQ(db.count("SELECT count(*) FROM events_mirror"), 5);  // cors-1, -3, -4, -5, -6
}

TEST_F(HttpProtocol, WithoutCorsConfiguredNothingChangesForBrowsers) {
  uint16_t port = free_port(), metrics_port = free_port();
  auto evp = start(port, config(port, metrics_port), "http_nocors");
  auto pre = post(port, "", "Origin: http://app.example\r\nAccess-Control-Request-Method: POST\r\n", "OPTIONS");
  EXPECT_EQ(pre.status, 204);
  EXPECT_EQ(pre.head.find("Access-Control-"), std::string::npos) << pre.head;
  EXPECT_EQ(post(port, valid_event("t-1"), "Content-Type: text/plain\r\n").status, 415);
  auto star = post(port, valid_event("t-2"), json_type + "Origin: http://app.example\r\n");
  EXPECT_EQ(star.head.find("Access-Control-"), std::string::npos) << star.head;
}

TEST_F(HttpProtocol, AnyOriginWithAStar) {
  uint16_t port = free_port(), metrics_port = free_port();
  auto evp = start(port, config(port, metrics_port, "cors_allow_origins = [\"*\"]\n"), "http_star");
  auto ok = post(port, valid_event("s-1"), "Content-Type: text/plain\r\nOrigin: http://anything.example\r\n");
  EXPECT_EQ(ok.status, 200) << ok.raw;
  EXPECT_TRUE(has_header(ok, "Access-Control-Allow-Origin: *")) << ok.head;
  EXPECT_EQ(stored(valid_event("s-1")), 1);
}

// Keep-Alive: timeout=N tells clients when to stop reusing a connection; the
// idle close is counted like the TCP source's.
TEST_F(HttpProtocol, KeepAliveAnswersSayTheIdleTimeoutAndIdleClosesAreCounted) {
  uint16_t port = free_port(), metrics_port = free_port();
  auto evp = start(port, config(port, metrics_port, "idle_timeout_s = 2\n"), "http_keepalive");
  int fd = connect_loopback(port);
  std::string body = valid_event("ka-1");
  send_all(fd, "POST /v1/events HTTP/1.1\r\nHost: x\r\n" + json_type + "Content-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body);
  auto reply = parse_reply(read_until(fd, 60s, [](const std::string& r) {
    auto end = r.find("\r\n\r\n");
    return end != std::string::npos && r.find("]}\n", end) != std::string::npos;
  }));
  EXPECT_EQ(reply.status, 200) << reply.raw;
  EXPECT_TRUE(has_header(reply, "Keep-Alive: timeout=2")) << reply.head;
  // Then idle: the server closes it.
  std::string after = read_until(fd, 60s);
  EXPECT_TRUE(after.empty()) << after;
  ::close(fd);
  const std::string sample = "evpipe_connections_timed_out_total{source=\"http\"}";
  EXPECT_TRUE(wait_until([&] { return metric_value(http_get(metrics_port, "/metrics"), sample) >= 1; }, 30s))
      << http_get(metrics_port, "/metrics");
}

// RFC 8259 section 8.1: a parser may ignore a leading byte order mark.
TEST_F(HttpProtocol, ALeadingByteOrderMarkIsIgnored) {
  uint16_t port = free_port(), metrics_port = free_port();
  auto evp = start(port, config(port, metrics_port), "http_bom");
  const std::string bom = "\xEF\xBB\xBF";
  auto one = post(port, bom + valid_event("bom-1"), json_type);
  EXPECT_NE(one.body.find("\"accepted\":1,\"ok\":1"), std::string::npos) << one.raw;
  auto nd = post(port, bom + valid_event("bom-2") + "\n" + valid_event("bom-3") + "\n", ndjson_type);
  EXPECT_NE(nd.body.find("\"accepted\":2,\"ok\":2"), std::string::npos) << nd.raw;
  auto gz = post(port, compress(bom + "[" + valid_event("bom-4") + "]", 31), json_type + "Content-Encoding: gzip\r\n");
  EXPECT_NE(gz.body.find("\"accepted\":1,\"ok\":1"), std::string::npos) << gz.raw;
  for (const char* k : {"bom-1", "bom-2", "bom-3", "bom-4"}) EXPECT_EQ(stored(valid_event(k)), 1) << k;
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
}

// The same for a TCP producer's stream.
TEST_F(HttpProtocol, ALeadingByteOrderMarkOnATcpStreamIsIgnored) {
  uint16_t port = free_port(), tcp_port = free_port(), metrics_port = free_port();
  auto evp = start(port,
                   config(port, metrics_port) + "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) +
                       "\"\n",
                   "tcp_bom");
  // evpipe started waiting for the HTTP port: the TCP listener may come a moment later.
  ASSERT_TRUE(wait_until([&] {
    try {
      ::close(connect_loopback(tcp_port));
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }, 30s));
  ndjson_client c(tcp_port);
  c.send_all("\xEF\xBB\xBF" + valid_event("tbom-1") + "\n" + valid_event("tbom-2") + "\n");
  EXPECT_EQ(c.read_acks_until(2, 60s), 2u);
  EXPECT_EQ(stored(valid_event("tbom-1")), 1);
  EXPECT_EQ(stored(valid_event("tbom-2")), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events"), 0);
}

}  // namespace
}  // namespace evpipe::testing
