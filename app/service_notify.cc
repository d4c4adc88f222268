#include "app/service_notify.h"

#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <chrono>
#include <memory>

namespace evpipe::app::service_notify {

namespace {

void ping_every(const std::shared_ptr<boost::asio::steady_timer>& timer, std::chrono::microseconds period) {
  timer->expires_after(period);
  timer->async_wait([timer, period](const boost::system::error_code& ec) {
    if (ec) return;
    sd_notify(0, "WATCHDOG=1");
    ping_every(timer, period);
  });
}

}  // namespace

void ready(boost::asio::io_context& ioc) {
  // sd_notify returns 0 without NOTIFY_SOCKET: nothing to do outside systemd.
  int rc = sd_notify(0, "READY=1\nSTATUS=ingesting");
  if (rc < 0) spdlog::warn("cannot notify the service manager (NOTIFY_SOCKET): error {}", -rc);
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    // Half the interval, as sd_watchdog_enabled(3) advises: one late ping is not a restart.
    auto period = std::chrono::microseconds(usec / 2);
    sd_notify(0, "WATCHDOG=1");
    ping_every(std::make_shared<boost::asio::steady_timer>(ioc), period);
    spdlog::info("systemd watchdog: pinging every {} ms", period.count() / 1000);
  }
}

void waiting_for_database(const std::string& why) {
  sd_notifyf(0, "STATUS=waiting for PostgreSQL: %s", why.c_str());
}

void stopping() { sd_notify(0, "STOPPING=1\nSTATUS=draining"); }

}  // namespace evpipe::app::service_notify
