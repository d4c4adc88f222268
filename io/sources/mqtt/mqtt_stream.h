#pragma once
// The byte stream to an MQTT broker: plain TCP (mqtt://) or TLS over it
// (mqtts://), behind one read and one write call. Owned by one mqtt_link and
// used on its strand only.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <optional>
#include <tuple>

namespace evpipe::io {

namespace asio = boost::asio;

class mqtt_stream {
 public:
  mqtt_stream(const asio::any_io_executor& ex, asio::ssl::context* tls) {
    if (tls) {
      tls_.emplace(ex, *tls);
    } else {
      plain_.emplace(ex);
    }
  }
  asio::ip::tcp::socket& socket() { return tls_ ? tls_->next_layer() : *plain_; }
  [[nodiscard]] bool is_tls() const { return tls_.has_value(); }
  asio::ssl::stream<asio::ip::tcp::socket>& tls() { return *tls_; }

  asio::awaitable<std::tuple<boost::system::error_code, size_t>> read_some(asio::mutable_buffer b) {
    if (tls_) co_return co_await tls_->async_read_some(b, asio::as_tuple(asio::use_awaitable));
    co_return co_await plain_->async_read_some(b, asio::as_tuple(asio::use_awaitable));
  }
  template <typename Handler>
  void write(asio::const_buffer b, Handler&& h) {
    if (tls_) {
      asio::async_write(*tls_, b, std::forward<Handler>(h));
    } else {
      asio::async_write(*plain_, b, std::forward<Handler>(h));
    }
  }

 private:
  std::optional<asio::ip::tcp::socket> plain_;
  std::optional<asio::ssl::stream<asio::ip::tcp::socket>> tls_;
};

}  // namespace evpipe::io
