#include "io/serve/http_server.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "io/listener.h"

namespace evpipe::io {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

http::response<http::string_body> route(const http::request<http::string_body>& req,
                                        const pipeline::metrics_registry& metrics) {
  http::response<http::string_body> res;
  res.version(req.version());
  res.keep_alive(req.keep_alive());
  res.set(http::field::server, "evpipe");
  auto reply = [&](http::status st, std::string body, const char* type = "text/plain; charset=utf-8") {
    res.result(st);
    res.set(http::field::content_type, type);
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
  };
  std::string_view target = req.target();
  if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    res.set(http::field::allow, "GET, HEAD");
    return reply(http::status::method_not_allowed, "only GET\n");
  }
  if (target == "/metrics") {
    return reply(http::status::ok, metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
  }
  if (target == "/health/live") return reply(http::status::ok, "{\"status\":\"live\"}\n", "application/json");
  if (target == "/health/ready") {
    if (metrics.all_shards_ready()) return reply(http::status::ok, "{\"status\":\"ready\"}\n", "application/json");
    return reply(http::status::service_unavailable, "{\"status\":\"not_ready\",\"reason\":\"database unreachable\"}\n",
                 "application/json");
  }
  return reply(http::status::not_found, "not found; try /metrics, /health/live, /health/ready\n");
}

asio::awaitable<void> serve(tcp::socket socket, const pipeline::metrics_registry& metrics) {
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(64 * 1024);
    auto [ec, n] = co_await http::async_read(socket, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (ec) break;
    auto res = route(parser.get(), metrics);
    bool keep = res.keep_alive();
    auto [wec, wn] = co_await http::async_write(socket, res, asio::as_tuple(asio::use_awaitable));
    if (wec || !keep) break;
  }
  boost::system::error_code ec;
  socket.shutdown(tcp::socket::shutdown_both, ec);
}

}  // namespace

http_server::http_server(asio::io_context& ioc, config::endpoint listen, const pipeline::metrics_registry& metrics)
    : ioc_(ioc), listen_(std::move(listen)), metrics_(metrics), acceptor_(ioc) {}

void http_server::start() {
  port_ = open_listener(acceptor_, listen_, "http");
  asio::co_spawn(ioc_, [this]() -> asio::awaitable<void> {
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) {
        if (!acceptor_.is_open()) co_return;
        continue;
      }
      asio::co_spawn(ioc_, serve(std::move(socket), metrics_), asio::detached);
    }
  }, asio::detached);
}

void http_server::stop() {
  asio::post(ioc_, [this] {
    boost::system::error_code ec;
    acceptor_.close(ec);
  });
}

}  // namespace evpipe::io
