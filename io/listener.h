#pragma once
// Opens a listening socket for a configured endpoint: every listener of evpipe
// (the TCP and HTTP sources, the metrics endpoint) starts the same way.

#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>

#include "config/config.h"

namespace evpipe::io {

// Binds and listens; returns the bound port (the real one when 0 was asked).
// Throws std::runtime_error naming `what` and the address.
inline uint16_t open_listener(boost::asio::ip::tcp::acceptor& acceptor, const config::endpoint& at,
                              const std::string& what) {
  namespace asio = boost::asio;
  using asio::ip::tcp;
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(at.host, ec);
  if (ec) throw std::runtime_error(what + ": \"" + at.host + "\" is not an IP address");
  tcp::endpoint ep(addr, at.port);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error(what + ": cannot listen on " + at.str() + ": " + ec.message());
  return acceptor.local_endpoint().port();
}

// Descriptors kept back from the sources' listeners: a source whose clients
// use up the rest still leaves the metrics/health endpoint and the database
// reconnects enough to work. Set once at start (app/daemon.cc) from the open
// file limit; 0 disables the check.
inline std::atomic<int> descriptor_ceiling{0};
inline constexpr int descriptor_reserve = 64;

// A source's newly accepted socket that falls into the reserve (descriptors
// are handed out lowest first, so its number is how many are open).
inline bool in_descriptor_reserve(int fd) {
  int ceiling = descriptor_ceiling.load(std::memory_order_relaxed);
  return ceiling > 0 && fd >= ceiling;
}

// What an accept loop does after accept() fails. Running out of descriptors
// (EMFILE, ENFILE) or kernel memory (ENOBUFS, ENOMEM) is an episode, not a
// storm: the first failure logs one warning, the listener then pauses `pause`
// before each further try, and the first success logs one line with the count.
// Anything else (a peer that gave up while queued) is retried at once, and
// logged at debug. Owned by one accept loop; not thread-safe.
class accept_pacer {
 public:
  explicit accept_pacer(std::string what, std::chrono::milliseconds pause = std::chrono::milliseconds(100))
      : what_(std::move(what)), pause_(pause) {}

  // After a failed accept: how long to wait before the next one (0: now).
  std::chrono::milliseconds failed(const boost::system::error_code& ec) {
    namespace errc = boost::system::errc;
    bool exhausted = ec == errc::too_many_files_open || ec == errc::too_many_files_open_in_system ||
                     ec == errc::no_buffer_space || ec == errc::not_enough_memory;
    if (!exhausted) {
      spdlog::debug("{}: accept: {}", what_, ec.message());
      return std::chrono::milliseconds(0);
    }
    if (failures_++ == 0) {
      since_ = std::chrono::steady_clock::now();
      spdlog::warn("{}: accept: {}; pausing this listener {} ms at a time until descriptors are free", what_,
                   ec.message(), pause_.count());
    }
    return pause_;
  }

  // After a successful accept: ends an episode.
  void succeeded() {
    if (failures_ == 0) return;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - since_);
    spdlog::warn("{}: accepting again after {} failed accepts over {} ms", what_, failures_, ms.count());
    failures_ = 0;
  }

 private:
  std::string what_;
  std::chrono::milliseconds pause_;
  uint64_t failures_ = 0;
  std::chrono::steady_clock::time_point since_{};
};

// The failed branch of a source's accept loop: false when the loop ends here
// (the listener was closed, or it pauses on `timer` and `again` runs after the
// pause), true when it should accept again at once.
template <class Again>
bool accept_again_now(const boost::system::error_code& ec, const boost::asio::ip::tcp::acceptor& acceptor,
                      accept_pacer& pacer, boost::asio::steady_timer& timer, Again again) {
  if (!acceptor.is_open() || ec == boost::asio::error::operation_aborted) return false;
  const auto pause = pacer.failed(ec);
  if (pause.count() == 0) return true;
  timer.expires_after(pause);
  timer.async_wait([again = std::move(again)](boost::system::error_code) { again(); });
  return false;
}

}  // namespace evpipe::io
