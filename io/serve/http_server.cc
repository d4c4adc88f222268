#include "io/serve/http_server.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include "stages/json_text.h"

namespace evpipe::io {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

http::response<http::string_body> route(const http::request<http::string_body>& req,
                                        const pipeline::metrics_registry& metrics, bool draining,
                                        const http_server_options& opts) {
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
    std::string body = metrics.render();
    if (opts.extra_metrics) body += opts.extra_metrics();
    return reply(http::status::ok, std::move(body), "text/plain; version=0.0.4; charset=utf-8");
  }
  if (target == "/health/live") return reply(http::status::ok, "{\"status\":\"live\"}\n", "application/json");
  if (target == "/health/ready") {
    // A load balancer must stop sending before the sources stop reading.
    if (draining) {
      return reply(http::status::service_unavailable, "{\"status\":\"not_ready\",\"reason\":\"draining\"}\n",
                   "application/json");
    }
    auto state = metrics.ready_state(opts.max_commit_stall);
    std::vector<http_server_options::source_note> notes;
    if (opts.source_notes) notes = opts.source_notes();
    if (notes.empty()) {
      return reply(state.ready ? http::status::ok : http::status::service_unavailable, std::move(state.body),
                   "application/json");
    }
    // The shards' verdict, with the sources' notes added to the object.
    bool ready = state.ready;
    std::string list;
    for (const auto& n : notes) {
      ready = ready && !n.not_ready;
      list += list.empty() ? "" : ",";
      list += "{\"not_ready\":" + std::string(n.not_ready ? "true" : "false") + ",\"what\":";
      stages::append_json_string(list, n.text);
      list += "}";
    }
    std::string body = state.body;
    while (!body.empty() && (body.back() == '\n' || body.back() == '}')) body.pop_back();
    if (!ready && state.ready) body = "{\"status\":\"not_ready\",\"reason\":\"sources\",\"source_health\":" + state.source_health;
    body += ",\"sources\":[" + list + "]}\n";
    return reply(ready ? http::status::ok : http::status::service_unavailable, std::move(body), "application/json");
  }
  return reply(http::status::not_found, "not found; try /metrics, /health/live, /health/ready\n");
}

}  // namespace

http_server::http_server(asio::io_context& ioc, http_server_options opts, const pipeline::metrics_registry& metrics)
    : ioc_(ioc),
      opts_(std::move(opts)),
      metrics_(metrics),
      acceptor_(ioc),
      accept_timer_(ioc),
      pacer_("metrics endpoint " + opts_.listen.str()) {}

void http_server::start() {
  port_ = open_listener(acceptor_, opts_.listen, "http");
  asio::co_spawn(ioc_, accept_loop(), asio::detached);
}

asio::awaitable<void> http_server::accept_loop() {
  bool refusing = false;
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (!acceptor_.is_open()) co_return;
      auto pause = pacer_.failed(ec);
      if (pause.count() > 0) {
        accept_timer_.expires_after(pause);
        co_await accept_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      continue;
    }
    pacer_.succeeded();
    if (*open_ >= opts_.max_connections) {
      // Closed at once: an idle client must not hold a descriptor the next
      // health probe needs.
      if (!refusing) {
        spdlog::warn("metrics endpoint {}: at its limit of {} connections; closing new ones until one ends",
                     opts_.listen.str(), opts_.max_connections);
        refusing = true;
      }
      boost::system::error_code ignore;
      socket.close(ignore);
      continue;
    }
    refusing = false;
    ++*open_;
    asio::co_spawn(ioc_, serve(std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> http_server::serve(tcp::socket socket) {
  struct release {
    std::shared_ptr<uint32_t> open;
    ~release() { --*open; }
  } guard{open_};
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(64 * 1024);
    // Headers, body and the next keep-alive request: each within the timeout.
    stream.expires_after(opts_.idle_timeout);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (ec) break;
    auto res = route(parser.get(), metrics_, draining_.load(), opts_);
    bool keep = res.keep_alive();
    stream.expires_after(opts_.idle_timeout);
    auto [wec, wn] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
    if (wec || !keep) break;
  }
  boost::system::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
}

void http_server::stop() {
  asio::post(ioc_, [this] {
    boost::system::error_code ec;
    accept_timer_.cancel();
    acceptor_.close(ec);
  });
}

}  // namespace evpipe::io
