#include "read/stream/sse_server.h"

#include <algorithm>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <boost/asio/ip/address.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "read/stream/page_html.h"
#include "read/stream/ws_session.h"
#include "stages/topic_filter.h"
#include "stages/json_text.h"

namespace evpipe::read {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// One SSE client's send queue: filled by the hub thread, and written to the
// socket by a fan-out writer or the hub while the client's thread is idle
// (frame_queue::write_now); the client's thread writes what the socket did
// not take at once, in one gather write, and its heartbeats.
class sse_client final : public stream_client {
 public:
  explicit sse_client(stream_probe& probe) : probe_(probe) {}
  frame_format format() const override { return frame_format::sse; }
  void on_events(const std::shared_ptr<const event_frames>& frames, size_t first, size_t last) override {
    if (queue_.push_events(frames, frame_format::sse, first, last)) unwritten_.store(true);
  }
  void flush() override { write(); }
  void on_caught_up(position pos) override {
    std::string p = encode(pos);
    std::string f;
    append_sse_frame(f, p, "caught_up", "{\"type\":\"caught_up\",\"position\":\"" + p + "\"}");
    if (queue_.push_message(std::move(f), pos)) unwritten_.store(true);
    write();
  }
  void on_error(std::string_view message) override {
    std::string m = "{\"type\":\"error\",\"message\":";
    stages::append_json_string(m, message);
    m += '}';
    std::string f;
    append_sse_frame(f, "", "error", m);
    // Queued before the stream is marked closing: a thread that sees
    // closing_ then takes the error with it.
    queue_.push_message(std::move(f));
    {
      std::lock_guard lock(mu_);
      closing_ = true;
    }
    wake();  // the client's thread ends the stream
  }
  size_t queued_bytes() const override { return queue_.bytes(); }

  // The socket, for write_now (a fan-out writer's or the hub's); detach()
  // before it is closed.
  void attach(int fd) { queue_.attach(fd); }
  void detach() { queue_.detach(); }

  // Hands the socket back to the hub unless something is queued, waits up
  // to `wait` for frames the hub could not write, then takes the socket
  // and moves what is queued to `out` (empty on timeout) and says whether
  // the stream ends after them. An idle client's thread sleeps for the
  // whole `wait`: frames the socket did not take, an error and stop()
  // (through wake(), after `stopping` is set) end the wait early.
  void take(std::chrono::nanoseconds wait, bool& last, const std::atomic<bool>& stopping,
            std::vector<frame_queue::item>& out) {
    out.clear();
    if (queue_.release()) {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, wait, [&] { return !queue_.empty() || closing_ || stopping.load(); });
    }
    {
      std::lock_guard lock(mu_);
      last = closing_;
    }
    queue_.take(out);
  }
  // Taking mu_ to notify: the waiter checks the queue (which has its own
  // lock) and `stopping` under mu_, so a push or a stop lands either before
  // that check or while it waits, never in between.
  void wake() {
    std::lock_guard lock(mu_);
    cv_.notify_one();
  }
  // `items` were written to the socket (`ok`), or not.
  void sent(const std::vector<frame_queue::item>& items, bool ok) {
    const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now().time_since_epoch()).count();
    size_t n = 0;
    for (const auto& it : items) {
      n += it.charge;
      if (ok && it.commit_ns != 0) probe_.commit_to_send.observe_ns(now - it.commit_ns, it.events);
    }
    queue_.sent(n);
  }
  // Steady-clock time of write_now's last write to the socket.
  [[nodiscard]] int64_t last_hub_write_ns() const { return queue_.last_hub_write_ns(); }

 private:
  // When a push since the last write found the queue empty, writes what is
  // queued (or wakes the client's thread to). Not set: the client's thread
  // holds the socket and looks again before it lets go.
  void write() {
    if (unwritten_.exchange(false) && queue_.write_now(probe_.commit_to_send)) wake();
  }
  std::atomic<bool> unwritten_{false};  // set by the hub, taken by whoever flushes
  std::mutex mu_;
  std::condition_variable cv_;
  stream_probe& probe_;
  frame_queue queue_;
  bool closing_ = false;
};

// Writes every item's bytes, in order, with as few writev() as the kernel
// allows (blocking).
bool send_items(int fd, const std::vector<frame_queue::item>& items) {
  std::vector<iovec> iov;
  iov.reserve(items.size());
  size_t total = 0;
  for (const auto& it : items) {
    if (!it.bytes.empty()) iov.push_back({const_cast<char*>(it.bytes.data()), it.bytes.size()});
    total += it.bytes.size();
  }
  bool failed = false;
  return send_spans(fd, iov, 0, failed) == total && !failed;
}

std::string url_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Comma-separated values of a query parameter, appended.
void split_into(std::string_view v, std::vector<std::string>& out) {
  size_t start = 0;
  while (start <= v.size()) {
    size_t comma = v.find(',', start);
    auto item = v.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
}

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

void respond(int fd, http::status status, const std::string& message) {
  http::response<http::string_body> res{status, 11};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::connection, "close");
  std::string body = "{\"type\":\"error\",\"message\":";
  stages::append_json_string(body, message);
  res.body() = body + "}\n";
  res.prepare_payload();
  std::ostringstream os;
  os << res;
  (void)send_all(fd, os.str());
}

// A 200 with a body, then the connection closes.
void respond_ok(int fd, std::string_view content_type, std::string_view body, bool page = false) {
  http::response<http::string_body> res{http::status::ok, 11};
  res.set(http::field::content_type, content_type);
  res.set(http::field::cache_control, "no-cache");
  res.set(http::field::connection, "close");
  if (page) {
    // The page loads nothing but itself and this listener's endpoints.
    res.set("Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'");
  }
  res.body() = std::string(body);
  res.prepare_payload();
  std::ostringstream os;
  os << res;
  (void)send_all(fd, os.str());
}

// The value of `access_token` in a query string ("" when absent).
std::string query_token(std::string_view query) {
  for (size_t start = 0; start < query.size();) {
    size_t amp = query.find('&', start);
    auto pair = query.substr(start, amp == std::string_view::npos ? std::string_view::npos : amp - start);
    start = amp == std::string_view::npos ? query.size() : amp + 1;
    if (pair.rfind("access_token=", 0) == 0) return url_decode(pair.substr(13));
  }
  return "";
}

}  // namespace

namespace {
std::vector<std::pair<std::string, std::string>> bearer_token_only(const std::string& token) {
  if (token.empty()) return {};
  return {{token, ""}};
}
}  // namespace

sse_server::sse_server(const config::stream_section& cfg, stream_hub& hub)
    : cfg_(cfg), tenant_tokens_(cfg.tokens), bearer_token_(bearer_token_only(cfg.bearer_token)), hub_(hub) {
  config::endpoint ep = config::parse_listen(cfg.listen, "[stream] listen");
  auto addr = asio::ip::make_address(ep.host);
  sockaddr_storage ss{};
  socklen_t len;
  if (addr.is_v4()) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(ep.port);
    auto b = addr.to_v4().to_bytes();
    std::memcpy(&a->sin_addr, b.data(), 4);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(ep.port);
    auto b = addr.to_v6().to_bytes();
    std::memcpy(&a->sin6_addr, b.data(), 16);
    len = sizeof *a;
  }
  listen_fd_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(listen_fd_, 128) != 0) {
    std::string why = std::strerror(errno);
    ::close(listen_fd_);
    listen_fd_ = -1;
    throw std::runtime_error("[stream] cannot listen on " + cfg.listen + ": " + why);
  }
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &blen);
  port_ = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                           : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
}

sse_server::~sse_server() { stop(); }

void sse_server::start() { acceptor_ = std::thread([this] { accept_loop(); }); }

void sse_server::stop() {
  if (stopping_.exchange(true)) return;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);  // wakes accept()
  if (acceptor_.joinable()) acceptor_.join();
  std::map<uint64_t, std::thread> sessions;
  {
    // A WebSocket session always has a read pending, which the shutdown
    // ends; an SSE client's thread waits for frames, so it is woken.
    std::lock_guard lock(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    for (auto& [id, wake] : sse_wakes_) wake();
    sessions.swap(sessions_);
  }
  for (auto& [id, t] : sessions) t.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

void sse_server::accept_loop() {
  while (!stopping_.load()) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    std::vector<std::thread> done;
    {
      std::lock_guard lock(mu_);
      for (uint64_t id : finished_) {
        auto it = sessions_.find(id);
        if (it != sessions_.end()) {
          done.push_back(std::move(it->second));
          sessions_.erase(it);
        }
      }
      finished_.clear();
    }
    for (auto& t : done) t.join();
    if (fd < 0) {
      if (stopping_.load()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // EMFILE and the like
      continue;
    }
    std::lock_guard lock(mu_);
    if (stopping_.load()) {
      ::close(fd);
      return;
    }
    uint64_t id = next_session_++;
    fds_.insert(fd);
    sessions_.emplace(id, std::thread([this, fd, id] { serve(fd, id); }));
  }
}

void sse_server::serve(int fd, uint64_t session) {
  struct done_guard {
    sse_server* s;
    int fd;
    uint64_t id;
    ~done_guard() {
      std::lock_guard lock(s->mu_);
      s->fds_.erase(fd);
      ::close(fd);
      s->finished_.push_back(id);
    }
  } guard{this, fd, session};
  lower_stream_thread_priority();
  timeval tv{10, 0};  // the request must come within 10 s
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  // The request head, read with the receive timeout above (a client that
  // sends nothing is dropped after 10 s), then parsed by Beast.
  std::string head;
  while (head.find("\r\n\r\n") == std::string::npos) {
    char tmp[4096];
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return;
    head.append(tmp, static_cast<size_t>(n));
    if (head.size() > 16384) return respond(fd, http::status::request_header_fields_too_large, "request head over 16 KiB");
  }
  beast::error_code ec;
  http::request_parser<http::empty_body> parser;
  parser.header_limit(16384);
  parser.eager(false);
  parser.put(asio::buffer(head), ec);
  if (ec || !parser.is_header_done()) return respond(fd, http::status::bad_request, "malformed HTTP request");
  const auto& req = parser.get();
  std::string_view target = req.target();
  std::string_view path = target.substr(0, target.find('?'));
  std::string_view query = target.size() > path.size() ? target.substr(path.size() + 1) : std::string_view();
  if (path == "/" || path == "/v1/metrics") {
    if (req.method() != http::verb::get) return respond(fd, http::status::method_not_allowed, "only GET");
    // The page itself is public (it holds no data); what it reads is not.
    if (path == "/") return respond_ok(fd, "text/html; charset=utf-8", stream_page_html, true);
    if (!cfg_.bearer_token.empty()) {
      std::string token = query_token(query);
      std::string_view auth = req[http::field::authorization];
      if (auth.size() > 7 && beast::iequals(auth.substr(0, 7), "Bearer ")) token = std::string(auth.substr(7));
      if (!bearer_token_.find(token)) return respond(fd, http::status::unauthorized, "a valid bearer token is required");
    }
    std::string text = metrics_text_ ? metrics_text_() : render_stream_metrics(hub_.probe(), "evpipe");
    return respond_ok(fd, "text/plain; version=0.0.4", text);
  }
  if (path != "/v1/stream") {
    return respond(fd, http::status::not_found, "not found: the stream is GET /v1/stream, its page GET /");
  }
  if (req.method() != http::verb::get) return respond(fd, http::status::method_not_allowed, "only GET");

  stream_filter filter;
  row_clause& sub = filter.any_of.emplace_back();  // one subscription: the query's
  std::string since = "now", token;
  for (size_t start = 0; start < query.size();) {
    size_t amp = query.find('&', start);
    auto pair = query.substr(start, amp == std::string_view::npos ? std::string_view::npos : amp - start);
    start = amp == std::string_view::npos ? query.size() : amp + 1;
    auto eq = pair.find('=');
    std::string key = url_decode(pair.substr(0, eq));
    std::string value = eq == std::string_view::npos ? "" : url_decode(pair.substr(eq + 1));
    if (key == "topics" || key == "topic") {
      split_into(value, sub.topic_filters);
    } else if (key == "kinds" || key == "kind") {
      split_into(value, sub.kinds);
    } else if (key == "since") {
      since = value;
    } else if (key == "access_token") {
      token = value;  // EventSource cannot set headers
    } else if (key == "tenant") {
      filter.tenant = value;  // docs/tenants.md
    } else {
      return respond(fd, http::status::bad_request, "unknown query parameter \"" + key + "\" (topics, kinds, since, tenant)");
    }
  }
  if (!cfg_.bearer_token.empty() || !cfg_.tokens.empty()) {
    std::string_view auth = req[http::field::authorization];
    if (auth.size() > 7 && beast::iequals(auth.substr(0, 7), "Bearer ")) token = std::string(auth.substr(7));
    // A tenant's token (tokens_file) binds the client to its tenant, whatever
    // it asked for (docs/tenants.md); bearer_token sees every tenant.
    if (const std::string* tenant = tenant_tokens_.find(token)) {
      filter.tenant = *tenant;
    } else if (!bearer_token_.find(token)) {
      return respond(fd, http::status::unauthorized, "a valid bearer token is required");
    }
  }
  if (beast::websocket::is_upgrade(req)) {
    // Filters come in messages; the query may carry only the token.
    if (active_.fetch_add(1) >= cfg_.max_clients) {
      active_.fetch_sub(1);
      return respond(fd, http::status::service_unavailable,
                     "too many stream clients (max_clients = " + std::to_string(cfg_.max_clients) + ")");
    }
    timeval none{0, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    int nodelay = 1;  // each event goes out when written, not after the client's delayed ACK
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay);
    bool released = false;
    auto release = [&] {
      if (!std::exchange(released, true)) active_.fetch_sub(1);
    };
    serve_websocket(fd, req, cfg_, hub_, stopping_, release, filter.tenant);
    release();
    return;
  }
  if (req[http::field::accept].find("text/event-stream") == std::string_view::npos) {
    return respond(fd, http::status::bad_request,
                   "GET /v1/stream is a stream: send Accept: text/event-stream (Server-Sent Events)");
  }
  for (const auto& t : sub.topic_filters) {
    if (auto p = stages::topic_filter_problem(t); !p.empty()) return respond(fd, http::status::bad_request, "topics: " + t + ": " + p);
  }
  if (sub.topic_filters.size() + sub.kinds.size() > cfg_.max_filters) {
    return respond(fd, http::status::bad_request,
                   "more than max_filters (" + std::to_string(cfg_.max_filters) + ") topics and kinds");
  }
  stream_since from;
  std::string_view last_id = req["Last-Event-ID"];
  if (!last_id.empty()) since = std::string(last_id);
  if (since == "now" || since.empty()) {
    from.what = stream_since::kind::now;
  } else if (auto p = decode(since)) {
    from.what = stream_since::kind::after_position;
    from.pos = *p;
  } else if (since.size() >= 10 && std::isdigit(static_cast<unsigned char>(since[0])) && since[4] == '-') {
    from.what = stream_since::kind::from_time;
    from.time = since;
  } else {
    return respond(fd, http::status::bad_request,
                   "since: \"" + since + "\" is neither a position, \"now\" nor an ISO 8601 time");
  }
  if (active_.fetch_add(1) >= cfg_.max_clients) {
    active_.fetch_sub(1);
    return respond(fd, http::status::service_unavailable,
                   "too many stream clients (max_clients = " + std::to_string(cfg_.max_clients) + ")");
  }
  struct active_guard {
    std::atomic<uint32_t>& n;
    bool held = true;
    void release() {
      if (std::exchange(held, false)) n.fetch_sub(1);
    }
    ~active_guard() { release(); }
  } active{active_};

  timeval none{0, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (!send_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                    "Connection: close\r\nX-Accel-Buffering: no\r\n\r\n: evpipe stream\n\n")) {
    return;
  }
  auto client = std::make_shared<sse_client>(hub_.probe());
  client->attach(fd);
  struct wake_registration {
    sse_server* s;
    uint64_t session;
    sse_client& client;
    ~wake_registration() {
      client.detach();  // before the descriptor is closed (done_guard)
      std::lock_guard lock(s->mu_);
      s->sse_wakes_.erase(session);
    }
  } registered{this, session, *client};
  {
    std::lock_guard lock(mu_);
    sse_wakes_.emplace(session, [client] { client->wake(); });
  }
  uint64_t id = hub_.add(client, std::move(filter), std::move(from));
  std::vector<frame_queue::item> items;
  disconnect_reason why = disconnect_reason::shutdown;
  using clock = std::chrono::steady_clock;
  const auto heartbeat = std::chrono::nanoseconds(std::chrono::seconds(cfg_.heartbeat_s));
  auto last_own_write = clock::now();
  auto last_write = [&] {  // this thread's or write_now's
    return std::max(last_own_write, clock::time_point(std::chrono::nanoseconds(client->last_hub_write_ns())));
  };
  for (;;) {
    bool last = false;
    client->take(std::max(heartbeat - (clock::now() - last_write()), std::chrono::nanoseconds(0)), last, stopping_,
                 items);
    if (stopping_.load()) break;
    // A stream the server ends frees its slot before the last frame goes out: a client that reads the
    // error event and reconnects at once must not find its own old connection still counted.
    if (last) active.release();
    if (items.empty() && !last && clock::now() - last_write() < heartbeat) continue;  // write_now wrote meanwhile
    // Idle for heartbeat_s: a comment line, which also finds out a client that went away.
    bool ok = items.empty() ? last || send_all(fd, ": ping\n\n") : send_items(fd, items);
    last_own_write = clock::now();
    client->sent(items, ok);
    if (!ok || last) {
      why = ok ? disconnect_reason::stream_error : disconnect_reason::client_closed;
      break;
    }
  }
  hub_.probe().disconnected(why);
  hub_.remove(id);
}

}  // namespace evpipe::read
