// The live stream over WebSocket (read/stream/ws_session) with Beast's
// client: subscribe with since = now delivers everything committed after
// caught_up; unsubscribe and subscribe again resume from the last event
// without a gap; bad messages are answered with an error and the connection
// stays usable; reconnecting with since = the last position repeats nothing.

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <optional>
#include <set>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/tcp_pipeline.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;

class ws_client {
 public:
  explicit ws_client(uint16_t port) : ws_(ioc_) {
    asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    ws_.next_layer().connect(ep);
    ws_.handshake("127.0.0.1", "/v1/stream");
  }
  void send(const std::string& text) { ws_.write(asio::buffer(text)); }
  // The next text message within `timeout`; nullopt otherwise.
  std::optional<std::string> next(std::chrono::milliseconds timeout = 30s) {
    std::optional<std::string> out;
    bool done = false;
    ws_.async_read(buf_, [&](beast::error_code ec, size_t) {
      done = true;
      if (!ec) out = beast::buffers_to_string(buf_.data());
      buf_.consume(buf_.size());
    });
    ioc_.restart();
    ioc_.run_for(timeout);
    if (!done) {
      beast::error_code ec;
      ws_.next_layer().cancel(ec);
      ioc_.restart();
      ioc_.run();
    }
    return out;
  }

 private:
  asio::io_context ioc_;
  websocket::stream<asio::ip::tcp::socket> ws_;
  beast::flat_buffer buf_;
};

std::string field(const std::string& json, const std::string& name) {
  std::string tag = "\"" + name + "\":\"";
  auto at = json.find(tag);
  if (at == std::string::npos) return "";
  at += tag.size();
  return json.substr(at, json.find('"', at) - at);
}
std::string key_in(const std::string& data) {
  const std::string tag = "\"idempotency_key\": \"";
  auto at = data.find(tag);
  if (at == std::string::npos) return "";
  at += tag.size();
  return data.substr(at, data.find('"', at) - at);
}

class StreamWs : public TcpPipeline {
 protected:
  void SetUp() override {
    TcpPipeline::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    tcp_port = free_port();
    stream_port = free_port();
    tuning t;
    t.linger_ms = 1;
    t.tcp_extra = "\n[stream]\nlisten = \"127.0.0.1:" + std::to_string(stream_port) + "\"\npoll_ms = 5\nmax_filters = 4\n";
    evpipe = std::make_unique<evpipe_process>(config_for(db, tcp_port, free_port(), t), "stream_ws");
    ASSERT_EQ(evpipe->run_command("migrate"), 0) << evpipe->log("migrate.log");
    evpipe->start(tcp_port);
    // The stream listens just after the sources.
    ASSERT_TRUE(eventually([&] {
      try {
        ::close(connect_loopback(stream_port));
        return true;
      } catch (const std::exception&) {
        return false;
      }
    }, 30s));
  }
  void produce(const std::string& prefix, int n, const std::string& kind_extra = "") {
    ndjson_client p(tcp_port);
    std::string data;
    for (int j = 0; j < n; ++j) data += valid_event(prefix + "-" + std::to_string(j), "x", kind_extra) + "\n";
    p.send_all(data);
    ASSERT_EQ(p.read_acks_until(static_cast<uint64_t>(n), 60s), static_cast<uint64_t>(n));
  }
  // Reads `n` events, checking the order; returns their keys.
  std::vector<std::string> events(ws_client& c, size_t n, std::string& last) {
    std::vector<std::string> keys;
    while (keys.size() < n) {
      auto m = c.next();
      if (!m) {
        ADD_FAILURE() << "no event after " << keys.size() << " of " << n;
        break;
      }
      if (field(*m, "type") != "event") continue;
      std::string pos = field(*m, "position");
      EXPECT_GT(pos, last) << *m;
      last = pos;
      keys.push_back(key_in(*m));
    }
    return keys;
  }
  uint16_t tcp_port = 0, stream_port = 0;
  std::unique_ptr<evpipe_process> evpipe;
};

TEST_F(StreamWs, SubscribeNowDeliversEverythingCommittedAfterCaughtUp) {
  produce("old", 20);
  ws_client c(stream_port);
  c.send(R"({"type":"subscribe","topics":["tracker/events/#"],"since":"now"})");
  auto caught = c.next();
  ASSERT_TRUE(caught);
  ASSERT_EQ(field(*caught, "type"), "caught_up") << *caught;
  std::string last = field(*caught, "position");
  std::string caught_pos = last;
  produce("new", 300);
  // Exactly the rows after caught_up's position, in position order. That
  // may include some "old" rows: "now" is the visible edge, and a writing
  // transaction elsewhere in the cluster can hold committed rows behind it.
  std::string tx = std::to_string(std::stoull(caught_pos.substr(2, 16), nullptr, 16));
  std::string id = std::to_string(std::stoll(caught_pos.substr(18, 16), nullptr, 16));
  auto expected = db.column("SELECT payload->>'idempotency_key' FROM events_mirror WHERE (tx, id) > ('" + tx +
                            "'::xid8, " + id + ") ORDER BY tx, id");
  ASSERT_GE(expected.size(), 300u);
  auto keys = events(c, expected.size(), last);
  EXPECT_EQ(keys, expected);
}

TEST_F(StreamWs, UnsubscribeThenSubscribeResumesWithoutAGap) {
  ws_client c(stream_port);
  c.send(R"({"type":"subscribe","kinds":["project_created"],"since":"1-00000000000000000000000000000000"})");
  produce("a", 50);
  std::string last;
  auto first = events(c, 50, last);
  c.send(R"({"type":"unsubscribe","kinds":["project_created"]})");
  produce("b", 50);  // while unsubscribed
  c.send(R"({"type":"ping"})");
  for (;;) {  // until the pong: a caught_up may come first, but no event of "b"
    auto m = c.next();
    ASSERT_TRUE(m);
    if (field(*m, "type") == "pong") break;
    ASSERT_EQ(field(*m, "type"), "caught_up") << *m;
  }
  c.send(R"({"type":"subscribe","kinds":["project_created"]})");  // no since: from the last event
  auto second = events(c, 50, last);
  std::set<std::string> all(first.begin(), first.end());
  all.insert(second.begin(), second.end());
  EXPECT_EQ(all.size(), 100u);
  for (const auto& k : second) EXPECT_EQ(k.rfind("b-", 0), 0u) << k;
}

TEST_F(StreamWs, BadMessagesGetAnErrorAndTheConnectionStays) {
  ws_client c(stream_port);
  for (const char* bad : {"not json", "[1,2]", R"({"kinds":[]})", R"({"type":"shout"})",
                          R"({"type":"subscribe","topics":["a/#/b"]})", R"({"type":"subscribe","kinds":"k"})",
                          R"({"type":"subscribe","since":"yesterday"})",
                          R"({"type":"subscribe","kinds":["a","b","c"],"topics":["x","y"]})"}) {
    c.send(bad);
    auto m = c.next();
    ASSERT_TRUE(m) << bad;
    EXPECT_EQ(field(*m, "type"), "error") << bad << " -> " << *m;
    EXPECT_FALSE(field(*m, "message").empty()) << *m;
  }
  c.send(R"({"type":"subscribe","since":"now"})");
  auto caught = c.next();
  ASSERT_TRUE(caught);
  EXPECT_EQ(field(*caught, "type"), "caught_up") << *caught;
  produce("after-errors", 5);
  std::string last = field(*caught, "position");
  EXPECT_EQ(events(c, 5, last).size(), 5u);
}

TEST_F(StreamWs, ReconnectingFromTheLastPositionRepeatsNothing) {
  std::thread writer([&] { produce("r", 2000); });
  std::vector<std::string> keys;
  std::string last = "1-00000000000000000000000000000000";
  for (int round = 0; round < 5; ++round) {
    ws_client c(stream_port);
    c.send(R"({"type":"subscribe","since":")" + last + "\"}");
    auto got = events(c, round == 4 ? 2000 - keys.size() : 150, last);
    keys.insert(keys.end(), got.begin(), got.end());
  }
  writer.join();
  std::set<std::string> unique(keys.begin(), keys.end());
  EXPECT_EQ(unique.size(), 2000u);
  EXPECT_EQ(keys.size(), 2000u);
}

}  // namespace
}  // namespace evpipe::testing
