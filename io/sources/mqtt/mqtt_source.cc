#include "io/sources/mqtt/mqtt_source.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <functional>
#include <random>

#include "io/sources/mqtt/mqtt_link.h"

namespace evpipe::io {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using namespace std::chrono_literals;

// One MQTT session (one client id): keeps a link to the broker, reconnecting
// forever with exponential backoff and jitter until stopped. Owned by the
// source; runs on its own strand.
class mqtt_session : public std::enable_shared_from_this<mqtt_session> {
 public:
  mqtt_session(asio::io_context& ioc, const mqtt_shared& shared, std::string client_id)
      : strand_(asio::make_strand(ioc)), sh_(shared), client_id_(std::move(client_id)), backoff_timer_(strand_) {}

  void start() { asio::co_spawn(strand_, run(shared_from_this()), asio::detached); }

  void stop_reading() {
    asio::post(strand_, [self = shared_from_this()] {
      self->stopping_ = true;
      self->backoff_timer_.cancel();
      if (self->link_) self->link_->stop_reading();
    });
  }
  void close() {
    asio::post(strand_, [self = shared_from_this()] {
      self->stopping_ = true;
      self->backoff_timer_.cancel();
      if (self->link_) self->link_->close();
    });
  }
  [[nodiscard]] bool open() const noexcept { return open_.load(); }

 private:
  asio::awaitable<void> run(std::shared_ptr<mqtt_session> self) {
    std::mt19937_64 rng(std::random_device{}() ^ std::hash<std::string>{}(client_id_));
    uint32_t failures = 0;       // attempts since the last successful connection
    bool ever_connected = false;
    std::string last_problem;
    while (!stopping_) {
      auto on_connected = [this, &failures, &ever_connected, &last_problem](bool session_present) {
        if (ever_connected) pipeline::bump(sh_.probe.reconnects);
        std::string filters;
        for (const auto& f : sh_.cfg.topics) filters += (filters.empty() ? "" : ", ") + f;
        spdlog::info("mqtt {} ({}): {}{}; subscribing to {}{} at QoS {}", sh_.cfg.url, client_id_,
                     ever_connected ? "reconnected" : "connected",
                     failures > 0 ? " after " + std::to_string(failures + 1) + " attempts" : std::string(),
                     filters, sh_.cfg.shared_group.empty() ? "" : " in shared group " + sh_.cfg.shared_group,
                     sh_.cfg.qos);
        if (!session_present) {
          spdlog::info("mqtt {} ({}): the broker had no session for this client id: a new one starts now",
                       sh_.cfg.url, client_id_);
        }
        ever_connected = true;
        failures = 0;
        last_problem.clear();
      };
      link_ = std::make_shared<mqtt_link>(strand_, sh_, client_id_, on_connected);
      open_ = true;
      std::string why;
      link_end end = co_await link_->run(why);
      if (end == link_end::stopped) {
        watch_close(link_);  // the link closes itself once its last PUBACK is written
        co_return;
      }
      open_ = false;
      if (stopping_) break;
      if (end == link_end::lost) {
        spdlog::warn("mqtt {} ({}): connection lost: {}; reconnecting", sh_.cfg.url, client_id_, why);
      } else if (why != last_problem) {
        // Each new problem once; the same one again only at debug level.
        spdlog::warn("mqtt {} ({}): {}; retrying with backoff up to {} ms", sh_.cfg.url, client_id_, why,
                     sh_.cfg.max_ms);
        last_problem = why;
      } else {
        spdlog::debug("mqtt {} ({}): {} (attempt {})", sh_.cfg.url, client_id_, why, failures + 1);
      }
      ++failures;
      // Exponential backoff from base_ms to max_ms, with jitter so that many
      // clients do not come back in step.
      double delay = sh_.cfg.base_ms;
      for (uint32_t i = 1; i < failures && delay < sh_.cfg.max_ms; ++i) delay *= 2;
      delay = std::min<double>(delay, sh_.cfg.max_ms);
      double j = sh_.cfg.jitter_pct / 100.0;
      delay *= std::uniform_real_distribution<double>(1.0 - j, 1.0 + j)(rng);
      backoff_timer_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(delay)));
      co_await backoff_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    link_.reset();
  }

  // After stop_reading, `open` stays true until the link has closed.
  void watch_close(std::shared_ptr<mqtt_link> link) {
    if (link->closed()) {
      open_ = false;
      return;
    }
    auto t = std::make_shared<asio::steady_timer>(strand_, 5ms);
    t->async_wait([self = shared_from_this(), link, t](boost::system::error_code) { self->watch_close(link); });
  }

  asio::strand<asio::io_context::executor_type> strand_;
  const mqtt_shared& sh_;
  const std::string client_id_;
  asio::steady_timer backoff_timer_;
  std::shared_ptr<mqtt_link> link_;
  std::atomic<bool> open_{false};
  bool stopping_ = false;
};

mqtt_source::mqtt_source(asio::io_context& ioc, config::mqtt_source cfg, pipeline::router& router,
                         pipeline::source_probe& probe, stages::envelope_limits limits)
    : ioc_(ioc), cfg_(std::move(cfg)), router_(router), probe_(probe), limits_(limits) {}

mqtt_source::~mqtt_source() = default;

void mqtt_source::start() {
  if (cfg_.tls) {
    tls_ = std::make_unique<ssl::context>(ssl::context::tls_client);
    boost::system::error_code ec;
    tls_->set_verify_mode(ssl::verify_peer);
    if (cfg_.ca_file.empty()) {
      tls_->set_default_verify_paths(ec);
    } else {
      tls_->load_verify_file(cfg_.ca_file, ec);
    }
    if (ec) throw std::runtime_error("mqtt " + cfg_.url + ": cannot load CA file \"" + cfg_.ca_file + "\": " + ec.message());
    if (!cfg_.cert_file.empty()) {
      tls_->use_certificate_chain_file(cfg_.cert_file, ec);
      if (ec) throw std::runtime_error("mqtt " + cfg_.url + ": cannot load cert_file \"" + cfg_.cert_file + "\": " + ec.message());
      tls_->use_private_key_file(cfg_.key_file, ssl::context::pem, ec);
      if (ec) throw std::runtime_error("mqtt " + cfg_.url + ": cannot load key_file \"" + cfg_.key_file + "\": " + ec.message());
    }
  }
  shared_ = std::make_unique<mqtt_shared>(mqtt_shared{cfg_, router_, probe_, limits_, reading_, tls_.get()});
  for (uint32_t i = 0; i < cfg_.connections; ++i) {
    std::string id = cfg_.connections == 1 ? cfg_.client_id : cfg_.client_id + "-" + std::to_string(i + 1);
    sessions_.push_back(std::make_shared<mqtt_session>(ioc_, *shared_, std::move(id)));
  }
  for (auto& s : sessions_) s->start();
}

void mqtt_source::stop_reading() {
  for (auto& s : sessions_) s->stop_reading();
}

void mqtt_source::close() {
  for (auto& s : sessions_) s->close();
}

size_t mqtt_source::open_connections() {
  size_t n = 0;
  for (auto& s : sessions_) n += s->open() ? 1 : 0;
  return n;
}

std::string mqtt_source::describe() const {
  std::string filters;
  for (const auto& f : cfg_.topics) filters += (filters.empty() ? "" : ", ") + f;
  return "MQTT from " + cfg_.url + " as " + cfg_.client_id + (cfg_.connections > 1 ? "-1.." + std::to_string(cfg_.connections) : "") +
         ", topics " + filters + " (QoS " + std::to_string(cfg_.qos) + ", up to " + std::to_string(cfg_.max_inflight) +
         " unacknowledged per connection)";
}

}  // namespace evpipe::io
