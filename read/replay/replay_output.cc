#include "read/replay/replay_output.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "stages/json_text.h"

namespace evpipe::read {

namespace {

constexpr size_t flush_bytes = 256 * 1024;

class stdout_output final : public replay_output {
 public:
  bool write(position pos, std::string_view topic, std::string_view payload, bool) override {
    append_ndjson_line(buf_, pos, topic, payload);
    pending_ = pos;
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

class tcp_output final : public replay_output {
 public:
  tcp_output(const std::string& host, uint16_t port, size_t window) : window_(window) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
      error_ = "cannot resolve " + host + ": " + gai_strerror(rc);
      return;
    }
    for (auto* a = res; a; a = a->ai_next) {
      fd_ = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
      if (fd_ >= 0 && ::connect(fd_, a->ai_addr, a->ai_addrlen) == 0) break;
      if (fd_ >= 0) ::close(fd_);
      fd_ = -1;
    }
    ::freeaddrinfo(res);
    if (fd_ < 0) error_ = "cannot connect to " + host + ":" + std::to_string(port) + ": " + std::strerror(errno);
  }
  ~tcp_output() override {
    if (fd_ >= 0) ::close(fd_);
  }
  [[nodiscard]] bool ok() const { return fd_ >= 0; }

  bool write(position pos, std::string_view topic, std::string_view payload, bool has_topic) override {
    if (!has_topic && payload.size() >= 2 && payload[0] == '{') {
      // The row's topic goes along, so the replayed event lands in the same
      // topic whichever source first took it.
      buf_ += "{\"topic\":";
      stages::append_json_string(buf_, topic);
      if (payload.size() > 2) buf_ += ',';
      buf_.append(payload.substr(1));
    } else {
      buf_.append(payload);
    }
    buf_ += '\n';
    unacked_.push_back(pos);
    ++sent_;
    if (buf_.size() >= flush_bytes && !send_buffer()) return false;
    // Stay within the source's max_unacked: wait for acks past the window.
    while (unacked_.size() > window_) {
      if (!send_buffer() || !read_acks(1000)) return false;
    }
    return true;
  }

  bool finish() override {
    if (!send_buffer()) return false;
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
  bool flush() override { return send_buffer(); }

 private:
  bool send_buffer() {
    size_t off = 0;
    while (off < buf_.size()) {
      ssize_t n = ::send(fd_, buf_.data() + off, buf_.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
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
    buf_.clear();
    return true;
  }
  // Reads what acks have arrived within `timeout_ms`; false when the
  // connection closed or failed.
  bool read_acks(int timeout_ms) {
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r <= 0) return r == 0;
    char tmp[4096];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) {
      error_ = n == 0 ? "the source closed the connection" : std::string("cannot read acks: ") + std::strerror(errno);
      return false;
    }
    in_.append(tmp, static_cast<size_t>(n));
    for (size_t nl; (nl = in_.find('\n')) != std::string::npos; in_.erase(0, nl + 1)) {
      // {"ack":N}: the first N events of this connection have a committed outcome.
      auto colon = in_.find(':');
      if (colon == std::string::npos || colon > nl) continue;
      uint64_t acked = std::strtoull(in_.c_str() + colon + 1, nullptr, 10);
      while (acked_ < acked && !unacked_.empty()) {
        done_ = unacked_.front();
        unacked_.pop_front();
        ++acked_;
      }
    }
    return true;
  }
  int fd_ = -1;
  size_t window_;
  std::string buf_, in_;
  std::deque<position> unacked_;
  uint64_t sent_ = 0, acked_ = 0;
  std::optional<position> done_;
};

}  // namespace

void append_ndjson_line(std::string& out, position pos, std::string_view topic, std::string_view payload) {
  out += "{\"position\":\"";
  out += encode(pos);
  out += "\",\"topic\":";
  stages::append_json_string(out, topic);
  out += ",\"event\":";
  out.append(payload);
  out += "}\n";
}

std::unique_ptr<replay_output> make_stdout_output() { return std::make_unique<stdout_output>(); }

std::unique_ptr<replay_output> make_tcp_output(const std::string& host, uint16_t port, size_t window) {
  auto out = std::make_unique<tcp_output>(host, port, window);
  return out;
}

}  // namespace evpipe::read
