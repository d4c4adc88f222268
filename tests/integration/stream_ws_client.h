#pragma once
// A WebSocket client for the stream tests (Beast's, synchronous, one
// io_context per client; tests/integration/stream_*). For tests only.

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "tests/integration/stream_clients.h"

namespace evpipe::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;

class ws_client {
 public:
  // `rcvbuf`: the socket's receive buffer (0: the kernel's default).
  explicit ws_client(uint16_t port, int rcvbuf = 0) : ws_(ioc_) {
    asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    if (rcvbuf > 0) {
      ws_.next_layer().open(asio::ip::tcp::v4());
      ws_.next_layer().set_option(asio::socket_base::receive_buffer_size(rcvbuf));
    }
    ws_.next_layer().connect(ep);
    ws_.handshake("127.0.0.1", "/v1/stream");
  }
  void send(const std::string& text) { ws_.write(asio::buffer(text)); }
  // The closing handshake: returns once the server's close frame has come back.
  void close() { ws_.close(websocket::close_code::normal); }
  // A WebSocket ping with `payload`; the pongs that come back (seen while
  // reading) are appended to `pongs`.
  void ping(const std::string& payload, std::vector<std::string>& pongs) {
    ws_.control_callback([&pongs](websocket::frame_type kind, beast::string_view p) {
      if (kind == websocket::frame_type::pong) pongs.emplace_back(p);
    });
    ws_.ping(websocket::ping_data(payload.c_str()));
  }
  // Whether the server has closed the connection: reads (and so answers
  // pings) until the read fails, for at most `timeout`; messages are
  // skipped. After a timeout the connection is no longer usable.
  bool closed_within(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      bool failed = false, done = false;
      ws_.async_read(buf_, [&](beast::error_code ec, size_t) {
        done = true;
        failed = static_cast<bool>(ec);
        buf_.consume(buf_.size());
      });
      ioc_.restart();
      ioc_.run_until(deadline);
      if (failed) return true;
      if (!done) {
        beast::error_code ec;
        ws_.next_layer().cancel(ec);
        ioc_.restart();
        ioc_.run();
        return false;
      }
    }
    return false;
  }
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

}  // namespace evpipe::testing
