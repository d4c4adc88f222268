#include "read/replay/replay_output.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>

#include "stages/json_text.h"

namespace evpipe::read {

namespace {

constexpr size_t flush_bytes = 256 * 1024;

class stdout_output final : public replay_output {
 public:
  bool write(const event_row& r) override {
    append_ndjson_line(buf_, r);
    pending_ = r.pos;
    return buf_.size() < flush_bytes || flush();
  }
  bool finish() override { return flush() && std::fflush(stdout) == 0; }
  std::optional<position> done_position() const override { return done_; }

  bool flush() override {
    if (buf_.empty()) return true;
    if (std::fwrite(buf_.data(), 1, buf_.size(), stdout) != buf_.size() || std::fflush(stdout) != 0) {
      error_ = std::string("cannot write to stdout: ") + std::strerror(errno);
      return false;
    }
    buf_.clear();
    done_ = pending_;
    return true;
  }

 private:
  std::string buf_;
  std::optional<position> pending_, done_;
};

// An evpipe source reached through load::wire (the framing evpipe-load
// uses): NDJSON over TCP ({"ack":N}), MQTT PUBLISH at QoS 1 through a broker
// (its PUBACKs), or HTTP POSTs of NDJSON (answered after commit). Every one
// acknowledges in send order, so the acked count says which positions
// have arrived.
class wire_output final : public replay_output {
 public:
  wire_output(const wire_target& to, size_t window) : to_(to) {
    load::wire_options wo;
    wo.client_id = "evpipe-replay-" + std::to_string(::getpid());
    wo.bearer_token = to_.bearer_token;
    try {
      if (to_.target.kind == load::target_kind::mqtt) {
        uint8_t level = 0;
        fd_ = connect_mqtt_broker(to_.target, wo.client_id, to_.mqtt_login ? &*to_.mqtt_login : nullptr, level);
        auto w = std::make_unique<mqtt_replay_wire>(level);
        mqtt_ = w.get();
        wire_ = std::move(w);
      } else {
        fd_ = load::open_connection(to_.target, 0, wo);
        wire_ = load::make_wire(to_.target, wo, http_events_per_request);
      }
    } catch (const std::exception& e) {
      error_ = e.what();
      return;
    }
    window_ = std::min<uint64_t>(window, wire_->max_in_flight());
    int flags = ::fcntl(fd_, F_GETFL);
    ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
  }
  ~wire_output() override {
    if (fd_ >= 0) ::close(fd_);
  }

  bool write(const event_row& r) override {
    const position pos = r.pos;
    const std::string_view topic = r.topic, payload = r.payload;
    const bool has_topic = r.payload_has_topic;
    if (mqtt_) {
      // The PUBLISH topic carries the event's topic (the MQTT source stores
      // that one), under the URL's prefix if it has one.
      if (topic.empty() || topic.find_first_of("+#") != std::string_view::npos) {
        error_ = "the event at " + encode(pos) + " has the topic \"" + std::string(topic) +
                 "\", which MQTT cannot publish to";
        return false;
      }
      publish_topic_.assign(to_.topic_prefix);
      if (!publish_topic_.empty()) publish_topic_ += '/';
      publish_topic_.append(topic);
      mqtt_->add_event(sent_, publish_topic_, payload, r.headers, out_);
    } else if (!has_topic && payload.size() >= 2 && payload[0] == '{') {
      // The row's topic goes along, so the replayed event lands in the same
      // topic whichever source first took it.
      event_.assign("{\"topic\":");
      stages::append_json_string(event_, topic);
      if (payload.size() > 2) event_ += ',';
      event_.append(payload.substr(1));
      wire_->add(sent_, event_, out_);
    } else {
      wire_->add(sent_, payload, out_);
    }
    unacked_.push_back(pos);
    ++sent_;
    if (++in_group_ >= wire_->max_group() && !close_group()) return false;
    if (out_.size() >= flush_bytes && !send_buffer()) return false;
    // Stay within the endpoint's window: wait for acks past it.
    while (unacked_.size() > window_) {
      if (!send_buffer() || !read_acks(1000)) return false;
    }
    return true;
  }

  bool finish() override {
    if (!flush()) return false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!unacked_.empty()) {
      if (std::chrono::steady_clock::now() > deadline) {
        error_ = std::to_string(unacked_.size()) + " events not acknowledged within 60 s";
        return false;
      }
      if (!read_acks(100)) return false;
    }
    return true;
  }
  std::optional<position> done_position() const override { return done_; }
  bool flush() override { return close_group() && send_buffer(); }
  std::string caveat() const override {
    if (!mqtt_ || mqtt_->headers_dropped() == 0) return "";
    return std::to_string(mqtt_->headers_dropped()) +
           " events had transport headers, which the broker (MQTT 3.1.1) cannot carry: they were published without them";
  }

 private:
  // HTTP: the events added so far become one request. A connection's
  // requests are answered in turn, so the next goes only once the one before
  // is answered (what falls due meanwhile joins it).
  bool close_group() {
    if (in_group_ == 0) return true;
    if (wire_->one_group_at_a_time()) {
      while (unacked_.size() > in_group_) {
        if (!send_buffer() || !read_acks(1000)) return false;
      }
    }
    wire_->finish(out_);
    in_group_ = 0;
    return true;
  }
  bool send_buffer() {
    size_t off = 0;
    while (off < out_.size()) {
      ssize_t n = ::send(fd_, out_.data() + off, out_.size() - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        // The source pauses reading under backpressure; keep reading its
        // acks meanwhile, or both sides wait on each other.
        if (!read_acks(100)) return false;
        continue;
      }
      error_ = std::string("cannot send: ") + std::strerror(errno);
      return false;
    }
    out_.clear();
    return true;
  }
  // Reads what acks have arrived within `timeout_ms`; false when the
  // connection closed or failed, or the endpoint refused events.
  bool read_acks(int timeout_ms) {
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r <= 0) return r == 0;
    char tmp[16384];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (n <= 0) {
      error_ = n == 0 ? "the endpoint closed the connection" : std::string("cannot read acks: ") + std::strerror(errno);
      return false;
    }
    in_.append(tmp, static_cast<size_t>(n));
    uint64_t acked = acked_;
    try {
      acked = wire_->on_bytes(in_, acked_, reply_);
    } catch (const std::exception& e) {
      error_ = e.what();
      return false;
    }
    if (!reply_.empty()) {
      out_.insert(0, reply_);  // PINGRESP first
      reply_.clear();
    }
    while (acked_ < acked && !unacked_.empty()) {
      done_ = unacked_.front();
      unacked_.pop_front();
      ++acked_;
    }
    return true;
  }

  // HTTP: events per request.
  static constexpr uint64_t http_events_per_request = 1000;

  wire_target to_;
  int fd_ = -1;
  std::unique_ptr<load::wire> wire_;
  mqtt_replay_wire* mqtt_ = nullptr;  // wire_, for an mqtt:// target
  uint64_t window_ = 0;
  std::string out_, in_, reply_, event_, publish_topic_;
  std::deque<position> unacked_;
  uint64_t sent_ = 0, acked_ = 0, in_group_ = 0;
  std::optional<position> done_;
};

}  // namespace

void append_ndjson_line(std::string& out, const event_row& r) {
  out += "{\"position\":\"";
  out += encode(r.pos);
  out += "\",\"topic\":";
  stages::append_json_string(out, r.topic);
  out += ",\"event\":";
  out.append(r.payload);
  if (!r.headers.empty()) {
    out += ",\"headers\":";
    out.append(r.headers);
  }
  out += "}\n";
}

std::unique_ptr<replay_output> make_stdout_output() { return std::make_unique<stdout_output>(); }

std::string parse_wire_target(const std::string& url, wire_target& out) {
  std::string rest = url;
  if (url.rfind("mqtt://", 0) == 0) {
    // mqtt://host:port[/prefix]: the prefix goes before each event's topic.
    auto slash = url.find('/', 7);
    if (slash != std::string::npos) {
      out.topic_prefix = url.substr(slash + 1);
      while (!out.topic_prefix.empty() && out.topic_prefix.back() == '/') out.topic_prefix.pop_back();
      if (out.topic_prefix.find_first_of("+#") != std::string::npos) {
        return "--to " + url + ": the topic prefix cannot hold MQTT wildcards";
      }
      rest = url.substr(0, slash);
    }
  } else if (url.rfind("tcp://", 0) != 0 && url.rfind("http://", 0) != 0) {
    return "--to " + url + ": expected stdout, tcp://host:port, mqtt://host:port[/topic-prefix] or http://host:port/path";
  }
  try {
    out.target = load::parse_target(rest);
  } catch (const std::exception& e) {
    return "--to " + url + ": " + e.what();
  }
  return "";
}

std::unique_ptr<replay_output> make_wire_output(const wire_target& to, size_t window) {
  return std::make_unique<wire_output>(to, window);
}

}  // namespace evpipe::read
