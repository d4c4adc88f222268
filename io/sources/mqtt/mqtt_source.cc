#include "io/sources/mqtt/mqtt_source.h"

#include "stages/tenant/binding.h"

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
using clock_type = std::chrono::steady_clock;

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
      // A session that ends (a reload removed or changed its source) takes
      // its unconfirmed shared_group out of the gauge.
      if (self->state_.shared_silent.exchange(false)) {
        self->sh_.probe.shared_unconfirmed.fetch_sub(1, std::memory_order_relaxed);
      }
    });
  }
  [[nodiscard]] bool open() const noexcept { return open_.load(); }
  [[nodiscard]] bool shared_silent() const noexcept { return state_.shared_silent.load(); }
  [[nodiscard]] bool connected() const noexcept { return connected_.load(); }
  // Connections keep failing or ending soon after CONNACK.
  [[nodiscard]] bool flapping() const noexcept {
    return flapping_.load() && (!connected_.load() || clock_type::now().time_since_epoch().count() < unstable_until_.load());
  }

 private:
  asio::awaitable<void> run(std::shared_ptr<mqtt_session> self) {
    std::mt19937_64 rng(std::random_device{}() ^ std::hash<std::string>{}(client_id_));
    // A connection counts as stable, and resets the backoff, only once it
    // outlived twice the longest backoff delay: a session that the broker
    // closes soon after CONNACK (another client took the client id, or the
    // broker keeps redelivering a message it then objects to) is a failure,
    // or two such clients would take the session from each other at full
    // speed forever.
    const auto stable_after = std::max<clock_type::duration>(
        10s, std::chrono::milliseconds(uint64_t{2} * sh_.cfg.max_ms * (100 + sh_.cfg.jitter_pct) / 100));
    while (!stopping_) {
      auto on_connected = [this, stable_after](bool session_present) {
        unstable_until_ = (clock_type::now() + stable_after).time_since_epoch().count();
        connected_ = true;
        if (ever_connected_) pipeline::bump(sh_.probe.reconnects);
        std::string filters;
        for (const auto& f : sh_.cfg.topics) filters += (filters.empty() ? "" : ", ") + f;
        // While the session flaps, each reconnect only at debug level.
        auto level =
            ever_connected_ && failures_ > 0 && failed_attempts_ == 0 ? spdlog::level::debug : spdlog::level::info;
        spdlog::log(level, "mqtt {} ({}): {}{}; subscribing to {}{} at QoS {}", sh_.cfg.url, client_id_,
                    ever_connected_ ? "reconnected" : "connected",
                    failed_attempts_ > 0 ? " after " + std::to_string(failed_attempts_) + " failed attempts" : std::string(),
                    filters, sh_.cfg.shared_group.empty() ? "" : " in shared group " + sh_.cfg.shared_group,
                    sh_.cfg.qos);
        if (!session_present && ever_connected_) {
          // We connected with clean session off before: the broker lost the
          // session (restarted without persistence, or expired it), and with
          // it every message it had queued for us.
          pipeline::bump(sh_.probe.session_lost);
          spdlog::warn("mqtt {} ({}): the broker no longer had this client's persistent session: messages it queued "
                       "for evpipe while disconnected are lost; subscribing again",
                       sh_.cfg.url, client_id_);
        } else if (!session_present) {
          spdlog::info("mqtt {} ({}): the broker had no session for this client id: a new one starts now",
                       sh_.cfg.url, client_id_);
        }
        if (maybe_takeover_) {
          maybe_takeover_ = false;
          pipeline::bump(sh_.probe.session_takeovers);
          if (!warned_takeover_) {
            warned_takeover_ = true;
            spdlog::warn("mqtt {} ({}): connection lost: the broker closed the session soon after accepting it, and "
                         "accepted the next connection at once; most likely another client connects with the same "
                         "client id \"{}\" (give each process its own client_id); backing off up to {} ms, further "
                         "takeovers are logged at debug level",
                         sh_.cfg.url, client_id_, client_id_, sh_.cfg.max_ms);
          } else {
            spdlog::debug("mqtt {} ({}): the session was taken over again", sh_.cfg.url, client_id_);
          }
        }
        ever_connected_ = true;
        failed_attempts_ = 0;
      };
      link_ = std::make_shared<mqtt_link>(strand_, sh_, client_id_, state_, on_connected);
      open_ = true;
      std::string why;
      link_end end = co_await link_->run(why);
      connected_ = false;
      if (end == link_end::stopped) {
        watch_close(link_);  // the link closes itself once its last PUBACK is written
        co_return;
      }
      open_ = false;
      if (stopping_) break;
      bool short_lived = clock_type::now() - link_->connected_at() < stable_after;
      if (end == link_end::violation) {
        // Never a reason to reset the backoff: the broker will likely send the
        // same packet again on the next connection.
        pipeline::bump(sh_.probe.protocol_errors);
        maybe_takeover_ = false;
        log_problem(why + "; reconnecting with backoff");
        ++failures_;
      } else if ((end == link_end::lost || end == link_end::closed_by_broker) && short_lived) {
        if (end == link_end::closed_by_broker) {
          // A takeover, or the broker going down: the next attempt tells
          // (a takeover's broker accepts it at once).
          maybe_takeover_ = true;
          spdlog::debug("mqtt {} ({}): {} soon after CONNACK", sh_.cfg.url, client_id_, why);
        } else {
          log_problem("connection lost soon after CONNACK: " + why + "; reconnecting with backoff");
        }
        ++failures_;
      } else if (end == link_end::lost || end == link_end::closed_by_broker) {
        spdlog::warn("mqtt {} ({}): connection lost: {}; reconnecting", sh_.cfg.url, client_id_, why);
        failures_ = 1;
        last_problem_.clear();
      } else {
        if (maybe_takeover_) {
          maybe_takeover_ = false;
          spdlog::warn("mqtt {} ({}): connection lost: the broker closed the connection; reconnecting", sh_.cfg.url,
                       client_id_);
        }
        log_problem(why + "; retrying with backoff up to " + std::to_string(sh_.cfg.max_ms) + " ms");
        ++failures_;
        ++failed_attempts_;
      }
      flapping_ = failures_ > 1;
      // Exponential backoff from base_ms to max_ms, with jitter so that many
      // clients do not come back in step.
      double delay = sh_.cfg.base_ms;
      for (uint32_t i = 1; i < failures_ && delay < sh_.cfg.max_ms; ++i) delay *= 2;
      delay = std::min<double>(delay, sh_.cfg.max_ms);
      double j = sh_.cfg.jitter_pct / 100.0;
      delay *= std::uniform_real_distribution<double>(1.0 - j, 1.0 + j)(rng);
      backoff_timer_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(delay)));
      co_await backoff_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    link_.reset();
  }

  // Each new problem once at warning level; the same one again only at debug.
  void log_problem(const std::string& what) {
    if (what != last_problem_) {
      spdlog::warn("mqtt {} ({}): {}", sh_.cfg.url, client_id_, what);
      last_problem_ = what;
    } else {
      spdlog::debug("mqtt {} ({}): {} (failure {} in a row)", sh_.cfg.url, client_id_, what, failures_ + 1);
    }
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
  mqtt_session_state state_;
  // Reconnect state, on the strand.
  uint32_t failures_ = 0;         // backoff exponent: failures since the last stable connection
  uint32_t failed_attempts_ = 0;  // attempts without CONNACK since the last CONNACK
  bool ever_connected_ = false;
  bool warned_takeover_ = false;
  bool maybe_takeover_ = false;   // the broker closed a young connection: a takeover if it lets us back at once
  std::string last_problem_;      // logged at warning level; the same again only at debug
  std::atomic<bool> open_{false};
  std::atomic<bool> connected_{false};
  std::atomic<bool> flapping_{false};
  std::atomic<int64_t> unstable_until_{0};  // steady clock ticks: a connection after failures is stable from then
  bool stopping_ = false;
};

std::vector<std::string> mqtt_config_warnings(const config::mqtt_source& cfg) {
  std::vector<std::string> out;
  if (!cfg.dlq_publish) return out;
  for (const auto& f : cfg.topics) {
    if (!mqtt::filter_can_match_prefix(f, cfg.dlq_prefix)) continue;
    out.push_back("mqtt " + cfg.url + ": topic filter \"" + f + "\" also matches dlq_prefix \"" + cfg.dlq_prefix +
                  "\": evpipe receives its own dead-letter republishes back, acknowledges them and drops them "
                  "(counted in mqtt_dlq_echoes_ignored_total); narrow the filter or move dlq_prefix to avoid the "
                  "round trip");
  }
  return out;
}

mqtt_source::mqtt_source(asio::io_context& ioc, config::mqtt_source cfg, pipeline::router& router,
                         pipeline::source_probe& probe, stages::envelope_limits limits,
                         mqtt_subscription_memory* memory)
    : ioc_(ioc), cfg_(std::move(cfg)), router_(router), probe_(probe), limits_(limits), memory_(memory) {}

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
  for (const auto& w : mqtt_config_warnings(cfg_)) spdlog::warn("{}", w);
  shared_ = std::make_unique<mqtt_shared>(mqtt_shared{cfg_, router_, probe_, limits_, reading_, tls_.get(), memory_,
                                                      stages::tenant::make_binding(cfg_.tenancy)});
  for (auto& id : mqtt_client_ids(cfg_)) sessions_.push_back(std::make_shared<mqtt_session>(ioc_, *shared_, std::move(id)));
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

mqtt_source::readiness mqtt_source::ready_state() const {
  readiness r;
  r.sessions = sessions_.size();
  r.filters = sessions_.size() * cfg_.topics.size();
  for (const auto& s : sessions_) {
    r.connected += s->connected() ? 1 : 0;
    r.flapping += s->flapping() ? 1 : 0;
    r.shared_silent += s->shared_silent() ? 1 : 0;
  }
  r.degraded_filters = probe_.subscriptions_degraded.load(std::memory_order_relaxed);
  return r;
}

std::string mqtt_source::describe() const {
  std::string filters;
  for (const auto& f : cfg_.topics) filters += (filters.empty() ? "" : ", ") + f;
  return "MQTT " + cfg_.protocol + " from " + cfg_.url + " as " + cfg_.client_id + (cfg_.connections > 1 ? "-1.." + std::to_string(cfg_.connections) : "") +
         ", topics " + filters + " (QoS " + std::to_string(cfg_.qos) + ", up to " + std::to_string(cfg_.max_inflight) +
         " unacknowledged per connection)";
}

}  // namespace evpipe::io
