#include "read/stream/ws_session.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <simdjson.h>

#include <mutex>
#include <utility>

#include "read/stream/subscriptions.h"
#include "read/stream/ws_frames.h"
#include "stages/json_text.h"
#include "stages/topic_filter.h"

namespace evpipe::read {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;

namespace {

class session;

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The hub's handle on a session: queues what the hub hands it on the
// connection's queue, writes it to the socket at once when the session's
// thread is not writing (frame_queue::write_now), and wakes that thread when
// the socket did not take it all. A new one is registered on every
// (re)subscribe, and the old one detached, so that nothing of an old
// subscription is queued after it.
class ws_client final : public stream_client {
 public:
  ws_client(session* s, asio::io_context& ioc, frame_queue& queue, pipeline::histogram& commit_to_send)
      : s_(s), ioc_(ioc), queue_(queue), commit_to_send_(commit_to_send) {}
  frame_format format() const override { return frame_format::websocket; }
  void on_events(const std::shared_ptr<const event_frames>& frames, size_t first, size_t last) override {
    std::lock_guard lock(mu_);
    if (s_ && queue_.push_events(frames, frame_format::websocket, first, last)) unwritten_ = true;
  }
  void flush() override {
    std::lock_guard lock(mu_);
    if (s_) write();
  }
  void on_caught_up(position pos) override {
    std::string f;
    append_ws_text_frame(f, "{\"type\":\"caught_up\",\"position\":\"" + encode(pos) + "\"}");
    std::lock_guard lock(mu_);
    if (!s_) return;
    if (queue_.push_message(std::move(f), pos)) unwritten_ = true;
    write();
  }
  void on_error(std::string_view message) override {
    std::string m = "{\"type\":\"error\",\"message\":";
    stages::append_json_string(m, message);
    m += '}';
    std::string f;
    append_ws_text_frame(f, m);
    std::lock_guard lock(mu_);
    if (!s_) return;
    if (queue_.push_message(std::move(f))) unwritten_ = true;
    write();
  }
  size_t queued_bytes() const override {
    std::lock_guard lock(mu_);
    return s_ ? queue_.bytes() : 0;
  }
  // Once this returns, nothing more of this subscription is queued.
  void detach() {
    std::lock_guard lock(mu_);
    s_ = nullptr;
  }

 private:
  // Under mu_, s_ set: when a push since the last write found the queue
  // empty, writes what is queued (or wakes the session to).
  void write();
  mutable std::mutex mu_;
  session* s_;
  // A push found the queue empty and nothing has written it since (under
  // mu_: set by the hub, taken by a fan-out writer's or the hub's flush).
  // Not set: the session holds the socket and looks again before it lets
  // go, or a flush has written already.
  bool unwritten_ = false;
  asio::io_context& ioc_;
  frame_queue& queue_;  // the session's (outlives every ws_client it is attached to: detach)
  pipeline::histogram& commit_to_send_;
};

class session {
 public:
  session(int fd, const config::stream_section& cfg, stream_hub& hub, const std::atomic<bool>& stopping,
          std::function<void()> ending)
      : cfg_(cfg), hub_(hub), stopping_(stopping), sock_(ioc_), ping_timer_(ioc_),
        ending_(std::move(ending)) {
    beast::error_code ec;
    sock_.assign(asio::ip::tcp::v6(), ::dup(fd), ec);  // the protocol only labels the descriptor
  }
  ~session() { unregister(); }

  // Every subscription of this session reads only this tenant's rows (docs/tenants.md).
  void bind_tenant(std::optional<std::string> tenant) { filter_.tenant = std::move(tenant); }

  void run(const beast::http::request<beast::http::empty_body>& req) {
    beast::error_code ec;
    {
      // Beast answers the upgrade (or refuses a bad one); after it, the
      // session frames the connection itself (ws_frames.h), so that the
      // frames queued for the client go out in one gather write.
      websocket::stream<asio::ip::tcp::socket&> handshake(sock_);
      handshake.accept(req, ec);
    }
    if (ec) return;
    int one = 1;
    ::setsockopt(sock_.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    queue_.attach(sock_.native_handle());
    // A read is always pending: sse_server::stop() shuts the socket down,
    // which ends it, so an idle session sleeps until its next ping.
    do_read();
    schedule_ping();
    ioc_.run();
  }

  // On the session's thread (posted by ws_client): the socket did not take
  // everything write_now offered it, and the rest is the session's to write.
  void woken() { pump(); }

 private:
  void do_read() {
    sock_.async_read_some(asio::buffer(read_buf_), [this](beast::error_code ec, size_t n) {
      if (ec) return close(stopping_.load() ? disconnect_reason::shutdown : disconnect_reason::client_closed);
      reader_.append(std::string_view(read_buf_.data(), n));
      for (;;) {
        auto f = reader_.next();
        using kind = ws_frame_reader::frame::kind;
        if (f.what == kind::none) break;
        if (f.what == kind::close) return on_close(f.code);
        if (f.what == kind::message) on_message(std::string(f.payload));
        if (f.what == kind::ping) on_ping(f.payload);
        if (f.what == kind::pong) on_pong();
        if (closed_) return;
      }
      do_read();
    });
  }

  // Everything queued, in one write: what the hub queued first (it may
  // begin with the rest of a frame the hub began), then the session's own
  // frames (pongs, errors, pings). The socket is the session's from the
  // take until a release that finds nothing more queued.
  void pump() {
    if (writing_active_ || closed_) return;
    for (;;) {
      queue_.take(writing_);
      writing_own_.swap(own_);
      if (!writing_.empty() || !writing_own_.empty()) break;
      if (queue_.release()) return;  // write_now writes again
    }
    buffers_.clear();
    for (const auto& it : writing_) buffers_.emplace_back(it.bytes.data(), it.bytes.size());
    for (const auto& f : writing_own_) buffers_.emplace_back(f.data(), f.size());
    writing_active_ = true;
    asio::async_write(sock_, buffers_, [this](beast::error_code ec, size_t) {
      writing_active_ = false;
      const int64_t now = steady_ns();
      size_t charged = 0;
      for (const auto& it : writing_) {
        charged += it.charge;
        if (!ec && it.commit_ns != 0) hub_.probe().commit_to_send.observe_ns(now - it.commit_ns, it.events);
      }
      queue_.sent(charged);
      writing_.clear();
      writing_own_.clear();
      if (ec) return close(stopping_.load() ? disconnect_reason::shutdown : disconnect_reason::client_closed);
      pump();
    });
  }
  void say(std::string_view json) {
    std::string f;
    append_ws_text_frame(f, json);
    own_.push_back(std::move(f));
    pump();
  }
  void error(const std::string& message) {
    std::string m = "{\"type\":\"error\",\"message\":";
    stages::append_json_string(m, message);
    say(m + "}");
  }
  void schedule_ping() {
    ping_timer_.expires_after(std::chrono::seconds(cfg_.heartbeat_s));
    ping_timer_.async_wait([this](beast::error_code ec) {
      if (ec || closed_) return;
      if (ping_sent_ && !pong_seen_) return close(disconnect_reason::heartbeat_missed);
      ping_sent_ = true;
      pong_seen_ = false;
      // Queued behind what the socket already holds: a client that leaves
      // more than heartbeat_s of the stream unread misses it too.
      own_.push_back(ws_control_frame(ws_opcode::ping, {}));
      pump();
      schedule_ping();
    });
  }
  void close(disconnect_reason why) {
    if (closed_) return;
    closed_ = true;
    if (ending_) std::exchange(ending_, {})();
    hub_.probe().disconnected(why);
    unregister();
    queue_.detach();  // no write_now is under way, and none follows
    beast::error_code ec;
    sock_.close(ec);
    ping_timer_.cancel();
    ioc_.stop();
  }
  // A close frame, sent without waiting (a client that reads nothing gets
  // none, nor does one whose socket is in the middle of a frame), then the
  // connection ends.
  void close_with(uint16_t code, disconnect_reason why) {
    if (ending_) std::exchange(ending_, {})();
    queue_.detach();
    if (!writing_active_ && !queue_.mid_frame()) {
      std::string f = ws_close_frame(code);
      (void)::send(sock_.native_handle(), f.data(), f.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    close(why);
  }
  void unregister() {
    if (current_) {
      current_->detach();
      hub_.remove(hub_id_);
      current_.reset();
    }
  }

  // A subscription changed: register afresh from where the client is (the
  // last event or caught_up handed to the socket); what the old one queued
  // and the socket has not begun is dropped.
  void resubscribe(std::optional<stream_since> since) {
    unregister();  // from here the hub neither queues nor writes anything of the old subscription
    queue_.drop_unbegun();
    stream_since from;
    if (since) {
      from = *since;
    } else if (auto last = queue_.last_handed()) {
      from.what = stream_since::kind::after_position;
      from.pos = *last;
    }  // else "now"
    if (filter_.any_of.empty()) return;
    current_ = std::make_shared<ws_client>(this, ioc_, queue_, hub_.probe().commit_to_send);
    hub_id_ = hub_.add(current_, filter_, from);
  }

  static bool strings(simdjson::dom::element e, std::vector<std::string>& out, std::string& problem, const char* key) {
    if (e.is_null()) return true;
    simdjson::dom::array a;
    if (e.get_array().get(a)) {
      problem = std::string(key) + " must be an array of strings";
      return false;
    }
    for (auto item : a) {
      std::string_view v;
      if (item.get_string().get(v)) {
        problem = std::string(key) + " must be an array of strings";
        return false;
      }
      out.emplace_back(v);
    }
    return true;
  }

 public:
  // ws_frame_reader's callbacks (on the session's thread).
  void on_message(const std::string& text) {
    simdjson::dom::element doc;
    if (parser_.parse(text).get(doc) || !doc.is_object()) return error("not a JSON object");
    std::string_view type;
    if (doc["type"].get_string().get(type)) return error("a message needs \"type\": subscribe, unsubscribe or ping");
    if (type == "ping") return say("{\"type\":\"pong\"}");
    if (type != "subscribe" && type != "unsubscribe") return error("unknown type \"" + std::string(type) + "\"");
    std::vector<std::string> kinds, topics;
    std::string problem;
    simdjson::dom::element e;
    if (!doc["kinds"].get(e) && !strings(e, kinds, problem, "kinds")) return error(problem);
    if (!doc["topics"].get(e) && !strings(e, topics, problem, "topics")) return error(problem);
    for (const auto& t : topics) {
      if (auto p = stages::topic_filter_problem(t); !p.empty()) return error("topics: " + t + ": " + p);
    }
    if (type == "unsubscribe") {
      remove_subscription(filter_.any_of, topics, kinds);  // the tenant stays (docs/tenants.md)
      return resubscribe(std::nullopt);
    }
    std::optional<stream_since> since;
    std::string_view since_text;
    if (!doc["since"].get_string().get(since_text)) {
      stream_since s;
      if (since_text == "now") {
        s.what = stream_since::kind::now;
      } else if (auto p = decode(since_text)) {
        s.what = stream_since::kind::after_position;
        s.pos = *p;
      } else if (since_text.size() >= 10 && since_text[4] == '-') {
        s.what = stream_since::kind::from_time;
        s.time = std::string(since_text);
      } else {
        return error("since: \"" + std::string(since_text) + "\" is neither a position, \"now\" nor an ISO 8601 time");
      }
      since = s;
    }
    // Each subscribe adds a subscription: events of its kinds on its topics,
    // besides those of the ones before (subscriptions.h).
    stream_filter next = filter_;
    add_subscription(next.any_of, row_clause{std::move(topics), std::move(kinds)});
    if (filter_count(next.any_of) > cfg_.max_filters) {
      return error("more than max_filters (" + std::to_string(cfg_.max_filters) + ") topics and kinds");
    }
    filter_ = std::move(next);
    resubscribe(since);
  }
  void on_ping(std::string_view payload) {
    own_.push_back(ws_control_frame(ws_opcode::pong, payload));
    pump();
  }
  void on_pong() { pong_seen_ = true; }
  // The client closed (its close frame is answered) or broke the protocol.
  void on_close(uint16_t code) { close_with(code, disconnect_reason::client_closed); }

 private:
  const config::stream_section& cfg_;
  stream_hub& hub_;
  const std::atomic<bool>& stopping_;
  asio::io_context ioc_{1};
  asio::ip::tcp::socket sock_;
  asio::steady_timer ping_timer_;
  std::array<char, 16384> read_buf_{};
  ws_frame_reader reader_{64 * 1024};
  simdjson::dom::parser parser_;
  // What the hub hands the connection (every subscription's, in turn), the
  // session's own frames, and what the write under way holds (its buffers
  // point into the items' shared blocks and writing_own_).
  frame_queue queue_;
  std::vector<std::string> own_, writing_own_;
  std::vector<frame_queue::item> writing_;
  std::vector<asio::const_buffer> buffers_;
  bool writing_active_ = false, closed_ = false, ping_sent_ = false, pong_seen_ = false;
  std::function<void()> ending_;  // serve_websocket's `ending`, called once by close or close_with
  stream_filter filter_;
  std::shared_ptr<ws_client> current_;
  uint64_t hub_id_ = 0;
};

void ws_client::write() {
  if (std::exchange(unwritten_, false) && queue_.write_now(commit_to_send_)) {
    asio::post(ioc_, [s = s_] { s->woken(); });
  }
}

}  // namespace

void serve_websocket(int fd, const beast::http::request<beast::http::empty_body>& req,
                     const config::stream_section& cfg, stream_hub& hub, const std::atomic<bool>& stopping,
                     std::function<void()> ending, std::optional<std::string> tenant) {
  session s(fd, cfg, hub, stopping, std::move(ending));
  s.bind_tenant(std::move(tenant));
  s.run(req);
}

}  // namespace evpipe::read
