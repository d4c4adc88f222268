#pragma once
// A loopback TCP proxy that a test can cut, to play an unreachable database:
// cut() resets every open connection and refuses new ones; restore() accepts
// again on the same port. One thread per direction per connection; for tests.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace evpipe::testing {

class tcp_proxy {
 public:
  explicit tcp_proxy(uint16_t target_port) : target_(target_port) { listen_on(0); }
  ~tcp_proxy() {
    cut();
    std::lock_guard lock(mu_);
    for (auto& t : pumps_) t.join();
    for (int fd : open_) ::close(fd);
  }
  [[nodiscard]] uint16_t port() const { return port_; }

  void cut() {
    int fd = listen_fd_.exchange(-1);
    if (fd >= 0) {
      ::shutdown(fd, SHUT_RDWR);
      ::close(fd);
    }
    if (acceptor_.joinable()) acceptor_.join();
    std::lock_guard lock(mu_);
    for (int c : open_) ::shutdown(c, SHUT_RDWR);
  }
  void restore() { listen_on(port_); }

 private:
  static sockaddr_in loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
  }

  void listen_on(uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    auto a = loopback(port);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 64) != 0) {
      ::close(fd);
      throw std::runtime_error("tcp_proxy: cannot listen");
    }
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    listen_fd_ = fd;
    acceptor_ = std::thread([this, fd] {
      for (;;) {
        int client = ::accept(fd, nullptr, nullptr);
        if (client < 0) return;  // cut
        int upstream = ::socket(AF_INET, SOCK_STREAM, 0);
        auto t = loopback(target_);
        if (::connect(upstream, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) {
          ::close(client);
          ::close(upstream);
          continue;
        }
        std::lock_guard lock(mu_);
        open_.push_back(client);
        open_.push_back(upstream);
        pumps_.emplace_back([client, upstream] { pump(client, upstream); });
        pumps_.emplace_back([client, upstream] { pump(upstream, client); });
      }
    });
  }

  static void pump(int from, int to) {
    char buf[16384];
    for (;;) {
      ssize_t n = ::recv(from, buf, sizeof buf, 0);
      if (n <= 0) break;
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::send(to, buf + off, n - off, MSG_NOSIGNAL);
        if (w <= 0) {
          n = -1;
          break;
        }
        off += w;
      }
      if (n < 0) break;
    }
    ::shutdown(from, SHUT_RDWR);
    ::shutdown(to, SHUT_RDWR);
  }

  uint16_t target_;
  uint16_t port_ = 0;
  std::atomic<int> listen_fd_{-1};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> open_;
  std::vector<std::thread> pumps_;
};

}  // namespace evpipe::testing
