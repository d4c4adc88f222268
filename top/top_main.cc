#include "top/top_main.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <optional>
#include <thread>

#include "top/metrics_text.h"
#include "top/top_view.h"

namespace evpipe::top {

namespace {

struct http_url {
  std::string host, port, path;
};

std::optional<http_url> parse_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return std::nullopt;
  std::string rest = url.substr(scheme.size());
  size_t slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  http_url u;
  u.path = slash == std::string::npos ? "/metrics" : rest.substr(slash);
  size_t colon = hostport.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  u.host = hostport.substr(0, colon);
  u.port = hostport.substr(colon + 1);
  if (u.host.size() > 2 && u.host.front() == '[' && u.host.back() == ']') u.host = u.host.substr(1, u.host.size() - 2);
  if (u.host.empty() || u.port.empty()) return std::nullopt;
  return u;
}

// GET with a one-second budget; returns the status code (0: no answer) and the body.
int http_get(const http_url& u, const std::string& path, std::string& body, std::string& error) {
  body.clear();
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (int rc = getaddrinfo(u.host.c_str(), u.port.c_str(), &hints, &res); rc != 0) {
    error = gai_strerror(rc);
    return 0;
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  bool connected = fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0;
  freeaddrinfo(res);
  if (!connected) {
    error = "cannot connect to " + u.host + ":" + u.port;
    if (fd >= 0) close(fd);
    return 0;
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: " + u.host + "\r\nConnection: close\r\n\r\n";
  (void)send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string reply;
  char buf[65536];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) reply.append(buf, static_cast<size_t>(n));
  close(fd);
  size_t head_end = reply.find("\r\n\r\n");
  if (reply.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos) {
    error = "no HTTP answer from " + u.host + ":" + u.port;
    return 0;
  }
  body = reply.substr(head_end + 4);
  error.clear();
  return std::atoi(reply.c_str() + 9);
}

// What /health/ready says, in a few words.
std::string readiness(const http_url& u) {
  std::string body, error;
  int code = http_get(u, "/health/ready", body, error);
  if (code == 200) return "ready";
  if (code == 0) return "unknown (" + error + ")";
  std::string out = "not ready";
  for (const char* key : {"\"reason\":\"", "\"state\":\""}) {
    size_t at = body.find(key);
    if (at == std::string::npos) continue;
    at += std::string(key).size();
    out += ": " + body.substr(at, body.find('"', at) - at);
  }
  return out;
}

volatile std::sig_atomic_t quit_signal = 0;
void on_signal(int) { quit_signal = 1; }

// The terminal in raw mode on the alternate screen while top runs.
class terminal {
 public:
  terminal() {
    if (tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      tcsetattr(STDIN_FILENO, TCSANOW, &raw);
      restore_ = true;
    }
    std::fputs("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J", stdout);
    std::fflush(stdout);
  }
  ~terminal() {
    std::fputs("\x1b[?25h\x1b[?1049l", stdout);
    std::fflush(stdout);
    if (restore_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  static void size(int& w, int& h) {
    winsize ws{};
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
      w = ws.ws_col;
      h = ws.ws_row;
    } else {
      w = 80;
      h = 24;
    }
  }
  static void draw(const std::vector<std::string>& lines) {
    std::string frame = "\x1b[H";
    for (const auto& l : lines) frame += l + "\x1b[K\r\n";
    frame += "\x1b[J";
    if (!frame.empty()) frame.erase(frame.size() - 5, 2);  // no newline after the last line (keeps 24 lines on 24 rows)
    std::fwrite(frame.data(), 1, frame.size(), stdout);
    std::fflush(stdout);
  }

 private:
  termios saved_{};
  bool restore_ = false;
};

std::string clock_text() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

}  // namespace

int run_top(const top_options& o) {
  auto url = parse_url(o.url);
  if (!url) {
    std::cerr << "evpipe top: --url must be http://host:port[/path], not " << o.url << "\n";
    return 2;
  }
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);

  terminal term;
  scrape before, now;
  bool have_before = false;
  auto t_before = std::chrono::steady_clock::now();
  std::string error;
  while (!quit_signal) {
    std::string body;
    auto t_now = std::chrono::steady_clock::now();
    int code = http_get(*url, url->path, body, error);
    if (code == 200) {
      before = std::move(now);
      now = parse_metrics(body);
    } else if (code != 0) {
      error = "HTTP " + std::to_string(code) + " from " + o.url;
    }
    view_input in;
    in.url = o.url;
    in.prefix = o.prefix;
    in.now = &now;
    in.before = have_before && code == 200 ? &before : nullptr;
    in.interval_s = std::chrono::duration<double>(t_now - t_before).count();
    in.clock = clock_text();
    in.ready = readiness(*url);
    in.error = error;
    int w, h;
    terminal::size(w, h);
    terminal::draw(render_view(in, w, h));
    if (code == 200) {
      have_before = true;
      t_before = t_now;
    }
    // Wait for the next refresh, or a key.
    auto next = t_now + std::chrono::milliseconds(o.interval_ms);
    while (!quit_signal) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{STDIN_FILENO, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) > 0) {
        char c = 0;
        if (read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q' || c == 3)) return 0;
        if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
  return 0;
}

}  // namespace evpipe::top
