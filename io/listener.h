#pragma once
// Opens a listening socket for a configured endpoint: every listener of evpipe
// (the TCP and HTTP sources, the metrics endpoint) starts the same way.

#include <boost/asio/ip/tcp.hpp>

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

}  // namespace evpipe::io
