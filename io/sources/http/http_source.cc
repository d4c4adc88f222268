#include "io/sources/http/http_source.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "io/listener.h"
#include "io/sources/http/content_coding.h"
#include "io/sources/http/http_tenancy.h"
#include "io/sources/http/request_body.h"
#include "pipeline/intake.h"

namespace evpipe::io {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

// Constant-time comparison, so the token cannot be guessed byte by byte.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
  return diff == 0 && !b.empty();
}

// How long and how much a connection keeps reading after an error answer to a
// request whose body it did not read (a lingering close, as nginx and Apache
// do). A client that sends its whole body before reading (Python's urllib,
// without Expect) otherwise meets a reset while sending and never sees the
// status; these bounds cap what such a client can cost.
struct linger_traits {
  static constexpr auto max_time = std::chrono::seconds(30);  // nginx's lingering_time
  static constexpr auto max_quiet = std::chrono::seconds(5);  // nginx's lingering_timeout
  static constexpr size_t max_bytes = size_t{128} << 20;      // a 64 MiB upload and then some
};

}  // namespace

// The events of one request, waiting for their outcomes. on_outcomes comes
// from shard threads; the last one wakes the connection's coroutine.
class http_request final : public stages::event_origin, public std::enable_shared_from_this<http_request> {
 public:
  http_request(asio::strand<asio::io_context::executor_type> strand, size_t n)
      : results_(n), remaining_(n), strand_(strand), timer_(strand) {}

  void on_outcomes(std::span<const stages::outcome> outcomes) override {
    for (const auto& o : outcomes) results_[o.seq - 1] = o;  // distinct slots: no lock
    if (remaining_.fetch_sub(outcomes.size(), std::memory_order_acq_rel) == outcomes.size()) {
      asio::post(strand_, [self = shared_from_this()] {
        self->done_ = true;
        self->timer_.cancel();
      });
    }
  }

  // On the strand: until every event has its outcome.
  asio::awaitable<void> wait() {
    while (!done_) {
      timer_.expires_after(1h);
      co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  [[nodiscard]] const std::vector<stages::outcome>& results() const { return results_; }

 private:
  std::vector<stages::outcome> results_;  // by event position
  std::atomic<size_t> remaining_;
  asio::strand<asio::io_context::executor_type> strand_;
  asio::steady_timer timer_;
  bool done_ = false;  // strand only
};

// One keep-alive connection. Owned by its coroutine (and the source's weak
// list); runs on its strand.
class http_connection : public std::enable_shared_from_this<http_connection> {
 public:
  // `socket` was accepted on `strand`.
  http_connection(tcp::socket socket, asio::strand<asio::io_context::executor_type> strand,
                  const config::http_source& cfg, pipeline::router& router, pipeline::source_probe& probe,
                  stages::envelope_limits limits, std::atomic<int>& reading, std::atomic<bool>& stopping,
                  std::shared_ptr<const stages::tenant::binding_slot> tenancy)
      : stream_(std::move(socket)),
        strand_(strand),
        cfg_(cfg),
        router_(router),
        probe_(probe),
        limits_(limits),
        intake_(router.shard_count(), limits),
        reading_(reading),
        stopping_(stopping), tenancy_(std::move(tenancy)) {
    intake_.set_tenancy(tenancy_.binding());
    if (cfg_.route_by == "connection") intake_.pin(router.lease_shard());  // a request waits for one shard
  }

  void start() {
    probe_.connections_active.fetch_add(1);
    pipeline::bump(probe_.connections_total);
    asio::co_spawn(strand_, serve(shared_from_this()), asio::detached);
  }

  // Ends an idle wait for the next request; a request in progress completes.
  void stop_reading() {
    asio::post(strand_, [self = shared_from_this()] {
      if (self->idle_) self->shut();
    });
  }
  void close() {
    asio::post(strand_, [self = shared_from_this()] { self->shut(); });
  }

 private:
  using request_parser = http::request_parser<http::string_body>;
  using response = http::response<http::string_body>;

  asio::awaitable<void> serve(std::shared_ptr<http_connection> self) {
    beast::flat_buffer buffer;
    for (;;) {
      request_parser parser;
      parser.header_limit(cfg_.max_header_bytes);
      parser.body_limit(cfg_.max_body_bytes);
      stream_.expires_after(std::chrono::seconds(cfg_.idle_timeout_s));
      idle_ = true;
      cors_origin_.clear();
      if (stopping_.load()) break;
      auto [hec, hn] = co_await http::async_read_header(stream_, buffer, parser, asio::as_tuple(asio::use_awaitable));
      idle_ = false;
      if (hec) {
        // End of stream, idle timeout or shutdown: just close. Broken HTTP
        // gets one answer first.
        if (hec == beast::error::timeout) {
          pipeline::bump(probe_.connections_timed_out);  // idle, or trickling its headers
        } else if (hec == http::error::header_limit) {
          co_await reply_and_close(431, error_body("request headers are over max_header_bytes"), true);
        } else if (hec == http::error::body_limit) {  // Content-Length over the limit
          co_await reply_and_close(413, over_limit_body(), true);
        } else if (hec != http::error::end_of_stream && hec.category() == http::make_error_code(http::error::bad_method).category()) {
          co_await reply_and_close(400, error_body("malformed HTTP request"), true);
        }
        break;
      }
      auto& req = parser.get();
      cors_origin_ = allowed_origin(req[http::field::origin]);
      // Answer what needs no body before reading it.
      if (auto early = check_request(req, parser)) {
        co_await reply_and_close(early->first, early->second, !parser.is_done());
        break;
      }
      // RFC 9110 section 10.1.1: the expectation is case-insensitive, and an
      // HTTP/1.0 client must not get a 1xx answer.
      if (req.version() >= 11 && beast::iequals(req[http::field::expect], "100-continue")) {
        response cont{http::status::continue_, req.version()};
        co_await http::async_write(stream_, cont, asio::as_tuple(asio::use_awaitable));
      }
      stream_.expires_after(30s);  // the body must arrive in reasonable time
      auto [bec, bn] = co_await http::async_read(stream_, buffer, parser, asio::as_tuple(asio::use_awaitable));
      if (bec) {
        if (bec == http::error::body_limit) {
          co_await reply_and_close(413, over_limit_body(), true);
        }
        break;
      }
      stream_.expires_never();
      // Not a conditional expression: GCC 12 miscompiles co_await inside ?:.
      response res;
      if (req.method() == http::verb::options) {
        res = preflight(req);
      } else {
        res = co_await ingest(parser.get());
      }
      decorate(res);
      res.keep_alive(parser.get().keep_alive() && !stopping_.load());
      // Clients that know when the server gives up on an idle connection stop
      // reusing it in time, instead of meeting a reset (Node, python-requests).
      if (res.keep_alive()) res.set(http::field::keep_alive, "timeout=" + std::to_string(cfg_.idle_timeout_s));
      res.prepare_payload();
      auto [wec, wn] = co_await http::async_write(stream_, res, asio::as_tuple(asio::use_awaitable));
      if (wec || !res.keep_alive()) break;
    }
    shut();
  }

  // A status and body for requests refused before their body is read.
  std::optional<std::pair<int, std::string>> check_request(const http::request<http::string_body>& req,
                                                           const request_parser& parser) {
    std::string_view target = req.target();
    if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
    if (target != "/v1/events") return std::pair{404, error_body("not found; events go to POST /v1/events")};
    if (req.method() == http::verb::options) return std::nullopt;  // a CORS preflight carries no credentials
    if (req.method() != http::verb::post) return std::pair{405, error_body("use POST")};
    if (!cfg_.bearer_token.empty()) {
      std::string_view auth = req[http::field::authorization];
      constexpr std::string_view scheme = "Bearer ";
      if (auth.size() < scheme.size() || !same_secret(auth.substr(scheme.size()), cfg_.bearer_token) ||
          !beast::iequals(auth.substr(0, scheme.size()), scheme)) {
        return std::pair{401, error_body("a valid bearer token is required")};
      }
    }
    auto refused = tenancy_.admit(req[http::field::authorization], pipeline::steady_now_ns());  // docs/tenants.md
    // The events of this request resolve against the binding admit() took,
    // even if a reload swaps the source's binding meanwhile.
    intake_.set_tenancy(tenancy_.binding());
    if (refused) {
      if (refused->first == 429) probe_.note_tenant_throttled(tenancy_.refused_tenant());
      return std::pair{refused->first, error_body(refused->second)};
    }
    if (auto len = parser.content_length(); len && *len > cfg_.max_body_bytes) {
      return std::pair{413, over_limit_body()};
    }
    auto form = form_of(req[http::field::content_type]);
    if (form == body_form::unsupported || (form == body_form::text && cfg_.cors_allow_origins.empty())) {
      return std::pair{415, error_body("Content-Type must be application/json or application/x-ndjson")};
    }
    // A text/plain POST is a "simple" request that a browser sends without
    // asking first: a page whose origin is not allowed must not write events.
    if (form == body_form::text && !req[http::field::origin].empty() && cors_origin_.empty()) {
      return std::pair{403, error_body("this origin is not in cors_allow_origins")};
    }
    if (coding_of(req[http::field::content_encoding]) == content_coding::unsupported) {
      return std::pair{415, error_body("Content-Encoding must be gzip, deflate or identity")};
    }
    if (stopping_.load()) return std::pair{503, error_body("shutting down")};
    if (!router_.has_room(intake_.pinned_shard())) return std::pair{503, error_body("queues are full; retry shortly")};
    return std::nullopt;
  }

  // Validates and routes the request's events, waits for their outcomes and
  // builds the 200 response (or a 400 for an unreadable body).
  asio::awaitable<response> ingest(const http::request<http::string_body>& req) {
    response res{http::status::ok, req.version()};
    res.set(http::field::content_type, "application/json");
    std::string_view topic_header = req["X-Topic"];
    if (req.find("X-Topic") != req.end() && (topic_header.empty() || !stages::fits_varchar(topic_header, limits_.max_topic_chars) ||
                                             !simdjson::validate_utf8(topic_header.data(), topic_header.size()))) {
      fill_error(res, 400, "X-Topic must be 1 to " + std::to_string(limits_.max_topic_chars) + " characters of UTF-8");
      co_return res;
    }
    std::string_view raw = req.body();
    std::string decoded;  // per request: a connection does not keep max_body_bytes between requests
    auto coding = coding_of(req[http::field::content_encoding]);
    if (coding != content_coding::identity) {
      switch (decode_body(coding, raw, cfg_.max_body_bytes, decoded)) {
        case decode_status::ok: break;
        case decode_status::too_large:
          fill_error(res, 413, "the decoded body is over max_body_bytes = " + std::to_string(cfg_.max_body_bytes));
          co_return res;
        case decode_status::corrupt:
          fill_error(res, 400, coding == content_coding::gzip ? "the body is not valid gzip"
                                                              : "the body is not valid deflate");
          co_return res;
      }
      raw = decoded;
    }
    simdjson::padded_string body(without_bom(raw));
    std::vector<std::string_view> events;
    std::string error;
    auto form = form_of(req[http::field::content_type]);
    if (form == body_form::text) {
      // What a page sends as text/plain is one JSON document (an event or an
      // array) or NDJSON: whichever the whole body parses as.
      form = split_events(body, body_form::json, events, error) ? body_form::json : body_form::ndjson;
      events.clear();
    }
    if (!split_events(body, form, events, error)) {
      fill_error(res, 400, error);
      co_return res;
    }
    auto pending = std::make_shared<http_request>(strand_, events.size());
    if (!events.empty()) {
      reading_.fetch_add(1);
      int64_t received = pipeline::steady_now_ns();
      if (limits_follower_.changed(limits_)) intake_.set_limits(limits_);  // a reload changed [events]
      auto& validator = pipeline::thread_validator(limits_);
      intake_.set_credential(tenancy_.credential());
      intake_.set_refuse_over_quota(tenancy_.binding() != nullptr);
      const bool fixed_topic = req.find("X-Topic") != req.end();
      std::string_view topic = fixed_topic ? topic_header : std::string_view(cfg_.topic);
      for (size_t i = 0; i < events.size(); ++i) {
        std::string_view ev = events[i];
        size_t readable = static_cast<size_t>(body.data() + body.size() + simdjson::SIMDJSON_PADDING - ev.data());
        intake_.add(ev, readable, i + 1, received, topic, validator,
                    fixed_topic ? pipeline::topic_rule::source_only : pipeline::topic_rule::event_first);
      }
      if (int64_t over = intake_.settle_request(); over > 0) {
        // A tenant named by the events' claims was over its quota before
        // this request: 429 for all of it, nothing handed to the shards.
        reading_.fetch_sub(1);
        probe_.note_tenant_throttled(intake_.throttled_tenant());
        tenancy_.refused_for(over);
        fill_error(res, 429, "tenant " + std::string(intake_.throttled_tenant()) + " is over its quota; retry after " +
                                 std::to_string(tenancy_.retry_after_s()) + " s");
        res.set(http::field::retry_after, std::to_string(tenancy_.retry_after_s()));
        co_return res;
      }
      (void)intake_.hand_over(pending);
      probe_.note_received(events.size());
      probe_.unacked.fetch_add(static_cast<int64_t>(events.size()));
      router_.submit(intake_.batches());
      reading_.fetch_sub(1);
      co_await pending->wait();
      probe_.unacked.fetch_sub(static_cast<int64_t>(events.size()));
    }
    // {"accepted":N,"ok":a,"duplicate":b,"dlq":c,"results":[...]} in request order.
    size_t ok = 0, dup = 0, dlq = 0;
    std::string results;
    results.reserve(events.size() * 20);
    for (const auto& o : pending->results()) {
      if (!results.empty()) results += ',';
      switch (o.kind) {
        case stages::outcome_kind::mirrored: ++ok; results += "{\"outcome\":\"ok\"}"; break;
        case stages::outcome_kind::duplicate: ++dup; results += "{\"outcome\":\"duplicate\"}"; break;
        default:
          ++dlq;
          results += "{\"outcome\":\"dlq\",\"reason\":\"";
          results += stages::reason_code(o.why);
          results += "\"}";
      }
    }
    res.body() = "{\"accepted\":" + std::to_string(events.size()) + ",\"ok\":" + std::to_string(ok) +
                 ",\"duplicate\":" + std::to_string(dup) + ",\"dlq\":" + std::to_string(dlq) + ",\"results\":[" +
                 results + "]}\n";
    pipeline::bump(probe_.http_ok);
    co_return res;
  }

  [[nodiscard]] std::string over_limit_body() const {
    return error_body("the body is over max_body_bytes = " + std::to_string(cfg_.max_body_bytes));
  }

  static std::string error_body(const std::string& message) {
    std::string out = "{\"error\":\"";
    for (char c : message) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    return out + "\"}\n";
  }

  void fill_error(response& res, int status, const std::string& message) {
    res.result(static_cast<http::status>(status));
    res.set(http::field::content_type, "application/json");
    res.body() = error_body(message);
    count_status(status);
  }

  void count_status(int status) {
    if (status == 503) {
      pipeline::bump(probe_.http_busy);
    } else if (status >= 400) {
      pipeline::bump(probe_.http_client_errors);
    }
  }

  // The allowed origin to echo for a request's Origin header ("*" when any
  // is allowed), or "" when CORS is off, there is no Origin, or it is not listed.
  [[nodiscard]] std::string allowed_origin(std::string_view origin) const {
    if (origin.empty()) return {};
    for (const auto& o : cfg_.cors_allow_origins) {
      if (o == "*") return o;
      if (beast::iequals(o, origin)) return std::string(origin);
    }
    return {};
  }

  // The answer to OPTIONS /v1/events: a CORS preflight when the origin is
  // allowed, else just the methods (decorate adds nothing for other origins,
  // so the browser refuses the actual request).
  response preflight(const http::request<http::string_body>& req) {
    response res{http::status::no_content, req.version()};
    res.set(http::field::allow, "POST, OPTIONS");
    if (!cors_origin_.empty()) {
      res.set(http::field::access_control_allow_methods, "POST");
      res.set(http::field::access_control_allow_headers, "content-type, content-encoding, authorization, x-topic");
      res.set(http::field::access_control_max_age, "600");  // preflights cached for 10 minutes
    }
    return res;
  }

  // Headers every response carries: the server, and with CORS configured the
  // allowed origin (answers differ by Origin, hence Vary for caches).
  void decorate(response& res) const {
    res.set(http::field::server, "evpipe");
    if (cfg_.cors_allow_origins.empty()) return;
    res.set(http::field::vary, "Origin");
    if (cors_origin_.empty()) return;
    res.set(http::field::access_control_allow_origin, cors_origin_);
    res.set(http::field::access_control_expose_headers, "Retry-After");
  }

  // Writes an error response and ends the connection. `linger` when the
  // client may still be sending a body that was not read.
  asio::awaitable<void> reply_and_close(int status, std::string body, bool linger) {
    response res{static_cast<http::status>(status), 11};
    decorate(res);
    res.set(http::field::content_type, "application/json");
    if (status == 503 || status == 429) res.set(http::field::retry_after, status == 503 ? "1" : std::to_string(tenancy_.retry_after_s()));
    if (status == 401) res.set(http::field::www_authenticate, "Bearer");
    if (status == 405) res.set(http::field::allow, "POST, OPTIONS");
    if (status == 415) res.set(http::field::accept_encoding, "gzip, deflate");  // RFC 9110 section 12.5.3
    res.keep_alive(false);
    res.body() = std::move(body);
    res.prepare_payload();
    count_status(status);
    stream_.expires_after(5s);
    auto [ec, n] = co_await http::async_write(stream_, res, asio::as_tuple(asio::use_awaitable));
    if (!ec && linger) co_await drain_and_drop();
  }

  // A lingering close: stop sending (the client sees the end of the answer),
  // then read and drop what it still sends, within linger_traits' bounds, so
  // that closing does not reset the connection under it before it has read
  // the answer.
  asio::awaitable<void> drain_and_drop() {
    boost::system::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    idle_ = true;  // nothing left to answer: stop_reading may end it
    if (stopping_.load()) co_return;
    const auto deadline = std::chrono::steady_clock::now() + linger_traits::max_time;
    std::vector<char> scratch(64 * 1024);
    size_t dropped = 0;
    while (!closed_ && dropped < linger_traits::max_bytes) {
      auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) break;
      stream_.expires_after(std::min<std::chrono::steady_clock::duration>(left, linger_traits::max_quiet));
      auto [rec, n] = co_await stream_.async_read_some(asio::buffer(scratch), asio::as_tuple(asio::use_awaitable));
      if (rec) break;  // the client closed (it read the answer), or a bound ran out
      dropped += n;
    }
  }

  void shut() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
    probe_.connections_active.fetch_sub(1);
    intake_.release_lease();
  }

  beast::tcp_stream stream_;
  asio::strand<asio::io_context::executor_type> strand_;
  const config::http_source& cfg_;
  pipeline::router& router_;
  pipeline::source_probe& probe_;
  stages::envelope_limits limits_;
  pipeline::limits_follower limits_follower_;
  pipeline::intake intake_;
  std::atomic<int>& reading_;
  std::atomic<bool>& stopping_;
  http_tenancy tenancy_;  // tokens_file and quotas (docs/tenants.md)
  std::string cors_origin_;  // allowed_origin() of the current request
  bool idle_ = false;
  bool closed_ = false;
};

http_source::http_source(asio::io_context& ioc, config::http_source cfg, pipeline::router& router,
                         pipeline::source_probe& probe, stages::envelope_limits limits)
    : ioc_(ioc), cfg_(std::move(cfg)), router_(router), probe_(probe), limits_(limits), acceptor_(ioc),
      accept_timer_(ioc), pacer_("http source " + cfg_.listen.str()),
      tenancy_(std::make_shared<stages::tenant::binding_slot>(stages::tenant::make_binding(cfg_.tenancy))) {}

http_source::~http_source() = default;

void http_source::start() {
  port_ = open_listener(acceptor_, cfg_.listen, "http source");
  accept();
}

void http_source::accept() {
  auto strand = asio::make_strand(ioc_);
  acceptor_.async_accept(strand, [this, strand](boost::system::error_code ec, tcp::socket socket) {
    if (ec) {
      if (!io::accept_again_now(ec, acceptor_, pacer_, accept_timer_, [this] { accept(); })) return;
    } else if (open_connections() >= cfg_.max_connections || in_descriptor_reserve(socket.native_handle())) {
      pacer_.succeeded();
      pipeline::bump(probe_.connections_refused);
      socket.close(ec);
    } else {
      pacer_.succeeded();
      socket.set_option(tcp::no_delay(true), ec);
      auto conn = std::make_shared<http_connection>(std::move(socket), strand, cfg_, router_, probe_, limits_,
                                                    reading_, stopping_, tenancy_);
      conns_.add(conn);
      conn->start();
    }
    accept();
  });
}

void http_source::set_tenancy(const config::source_tenancy& next) {
  tenancy_->store(stages::tenant::make_binding(next));
}

void http_source::stop_reading() {
  stopping_ = true;
  asio::post(ioc_, [this] {
    boost::system::error_code ec;
    accept_timer_.cancel();
    acceptor_.close(ec);
  });
  conns_.for_each([](auto& c) { c.stop_reading(); });
}

void http_source::close() {
  conns_.for_each([](auto& c) { c.close(); });
}

size_t http_source::open_connections() {
  return conns_.size();
}

std::string http_source::describe() const {
  return "HTTP POST /v1/events on " + cfg_.listen.host + ":" + std::to_string(port_) + ", default topic \"" +
         cfg_.topic + "\"" + (cfg_.bearer_token.empty() ? "" : ", bearer token required");
}

}  // namespace evpipe::io
