#include "read/stream/ws_session.h"

#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <simdjson.h>

#include <deque>
#include <mutex>

#include "stages/topic_filter.h"
#include "stages/json_text.h"

namespace evpipe::read {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;

namespace {

class session;

// The hub's handle on a session: forwards messages to the session's thread
// while attached. A new one is registered on every (re)subscribe, and the
// old one detached, so that nothing of an old subscription arrives after it.
class ws_client final : public stream_client {
 public:
  ws_client(session* s, asio::io_context& ioc, uint64_t generation) : s_(s), ioc_(ioc), generation_(generation) {}
  void on_event(position pos, std::string_view topic, std::string_view payload, int64_t commit_ns) override;
  void on_caught_up(position pos) override;
  void on_error(std::string_view message) override;
  size_t queued_bytes() const override { return bytes_.load(std::memory_order_relaxed); }
  void detach() {
    std::lock_guard lock(mu_);
    s_ = nullptr;
  }
  void sent(size_t n) { bytes_.fetch_sub(n, std::memory_order_relaxed); }

 private:
  void post(std::string msg, std::optional<position> pos, int64_t commit_ns = 0);
  std::mutex mu_;
  session* s_;
  asio::io_context& ioc_;
  uint64_t generation_;  // which subscription of the session this is
  std::atomic<size_t> bytes_{0};
};

class session {
 public:
  session(int fd, const config::stream_section& cfg, stream_hub& hub, const std::atomic<bool>& stopping)
      : cfg_(cfg), hub_(hub), stopping_(stopping), ws_(asio::ip::tcp::socket(ioc_)), ping_timer_(ioc_),
        stop_timer_(ioc_) {
    beast::error_code ec;
    ws_.next_layer().assign(asio::ip::tcp::v6(), ::dup(fd), ec);  // the protocol only labels the descriptor
  }
  ~session() { unregister(); }

  // Every subscription of this session reads only this tenant's rows (docs/tenants.md).
  void bind_tenant(std::optional<std::string> tenant) { filter_.tenant = std::move(tenant); }

  void run(const beast::http::request<beast::http::empty_body>& req) {
    beast::error_code ec;
    ws_.read_message_max(64 * 1024);
    ws_.control_callback([this](websocket::frame_type kind, beast::string_view) {
      if (kind == websocket::frame_type::pong) pong_seen_ = true;
    });
    ws_.accept(req, ec);
    if (ec) return;
    do_read();
    schedule_ping();
    watch_stop();
    ioc_.run();
  }

  // On the session's thread (posted by ws_client).
  void deliver(uint64_t generation, std::string msg, std::optional<position> pos, int64_t commit_ns) {
    if (!current_ || generation != generation_) return;  // an old subscription's message
    if (pos) last_ = pos;
    size_t n = msg.size();
    out_.push_back({std::move(msg), n, current_, commit_ns});
    do_write();
  }

 private:
  struct outgoing {
    std::string text;
    size_t bytes;
    std::shared_ptr<ws_client> from;  // whose queued_bytes it counts in
    int64_t commit_ns = 0;            // a live event's commit (stream_client::on_event)
  };

  void do_read() {
    ws_.async_read(in_, [this](beast::error_code ec, size_t) {
      if (ec) return close(stopping_.load() ? disconnect_reason::shutdown : disconnect_reason::client_closed);
      std::string text = beast::buffers_to_string(in_.data());
      in_.consume(in_.size());
      handle(text);
      do_read();
    });
  }
  void do_write() {
    if (writing_ || out_.empty() || closed_) return;
    writing_ = true;
    ws_.text(true);
    ws_.async_write(asio::buffer(out_.front().text), [this](beast::error_code ec, size_t) {
      writing_ = false;
      if (out_.front().from) out_.front().from->sent(out_.front().bytes);
      if (!ec && out_.front().commit_ns != 0) {
        hub_.probe().commit_to_send.observe_ns(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
                .count() -
            out_.front().commit_ns);
      }
      out_.pop_front();
      if (ec) return close(stopping_.load() ? disconnect_reason::shutdown : disconnect_reason::client_closed);
      do_write();
    });
  }
  void say(std::string msg) {
    out_.push_back({std::move(msg), 0, nullptr, 0});
    do_write();
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
      ws_.async_ping({}, [](beast::error_code) {});
      schedule_ping();
    });
  }
  void watch_stop() {
    stop_timer_.expires_after(std::chrono::milliseconds(100));
    stop_timer_.async_wait([this](beast::error_code ec) {
      if (ec) return;
      if (stopping_.load()) return close(disconnect_reason::shutdown);
      watch_stop();
    });
  }
  void close(disconnect_reason why) {
    if (closed_) return;
    closed_ = true;
    hub_.probe().disconnected(why);
    unregister();
    beast::error_code ec;
    ws_.next_layer().close(ec);
    ping_timer_.cancel();
    stop_timer_.cancel();
    ioc_.stop();
  }
  void unregister() {
    if (current_) {
      current_->detach();
      hub_.remove(hub_id_);
      current_.reset();
    }
  }

  // A subscription changed: register afresh from where the client is.
  void resubscribe(std::optional<stream_since> since) {
    stream_since from;
    if (since) {
      from = *since;
    } else if (last_) {
      from.what = stream_since::kind::after_position;
      from.pos = *last_;
    }  // else "now"
    unregister();
    if (filter_.topics.empty() && filter_.kinds.empty() && !subscribed_all_) return;
    current_ = std::make_shared<ws_client>(this, ioc_, ++generation_);
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

  void handle(const std::string& text) {
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
      if (kinds.empty() && topics.empty()) {
        filter_.topics.clear();  // the tenant stays (docs/tenants.md)
        filter_.kinds.clear();
        subscribed_all_ = false;
      }
      for (const auto& k : kinds) std::erase(filter_.kinds, k);
      for (const auto& t : topics) std::erase(filter_.topics, t);
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
    stream_filter next = filter_;
    for (auto& k : kinds) {
      if (std::find(next.kinds.begin(), next.kinds.end(), k) == next.kinds.end()) next.kinds.push_back(k);
    }
    for (auto& t : topics) {
      if (std::find(next.topics.begin(), next.topics.end(), t) == next.topics.end()) next.topics.push_back(t);
    }
    if (next.kinds.size() + next.topics.size() > cfg_.max_filters) {
      return error("more than max_filters (" + std::to_string(cfg_.max_filters) + ") topics and kinds");
    }
    filter_ = std::move(next);
    if (kinds.empty() && topics.empty()) subscribed_all_ = true;
    resubscribe(since);
  }

  const config::stream_section& cfg_;
  stream_hub& hub_;
  const std::atomic<bool>& stopping_;
  asio::io_context ioc_{1};
  websocket::stream<asio::ip::tcp::socket> ws_;
  asio::steady_timer ping_timer_, stop_timer_;
  beast::flat_buffer in_;
  simdjson::dom::parser parser_;
  std::deque<outgoing> out_;
  bool writing_ = false, closed_ = false, ping_sent_ = false, pong_seen_ = false;
  bool subscribed_all_ = false;  // subscribed with no kinds and no topics: everything
  stream_filter filter_;
  std::shared_ptr<ws_client> current_;
  uint64_t hub_id_ = 0;
  uint64_t generation_ = 0;
  std::optional<position> last_;  // the last event or caught_up handed to the client
};

void ws_client::post(std::string msg, std::optional<position> pos, int64_t commit_ns) {
  std::lock_guard lock(mu_);
  if (!s_) return;
  bytes_.fetch_add(msg.size(), std::memory_order_relaxed);
  asio::post(ioc_, [s = s_, g = generation_, m = std::move(msg), pos, commit_ns]() mutable {
    s->deliver(g, std::move(m), pos, commit_ns);
  });
}

void ws_client::on_event(position pos, std::string_view topic, std::string_view payload, int64_t commit_ns) {
  std::string m;
  m.reserve(payload.size() + topic.size() + 96);
  m += "{\"type\":\"event\",\"position\":\"" + encode(pos) + "\",\"topic\":";
  stages::append_json_string(m, topic);
  m += ",\"event\":";
  m.append(payload);
  m += "}";
  post(std::move(m), pos, commit_ns);
}

void ws_client::on_caught_up(position pos) {
  post("{\"type\":\"caught_up\",\"position\":\"" + encode(pos) + "\"}", pos);
}

void ws_client::on_error(std::string_view message) {
  std::string m = "{\"type\":\"error\",\"message\":";
  stages::append_json_string(m, message);
  post(m + "}", std::nullopt);
}

}  // namespace

void serve_websocket(int fd, const beast::http::request<beast::http::empty_body>& req,
                     const config::stream_section& cfg, stream_hub& hub, const std::atomic<bool>& stopping,
                     std::optional<std::string> tenant) {
  session s(fd, cfg, hub, stopping);
  s.bind_tenant(std::move(tenant));
  s.run(req);
}

}  // namespace evpipe::read
