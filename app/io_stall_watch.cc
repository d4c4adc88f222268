#include "app/io_stall_watch.h"

#include <pthread.h>

#include <algorithm>
#include <string>

#include "pipeline/batch_trace.h"

namespace evpipe::app {

io_stall_watch::io_stall_watch(boost::asio::io_context& ioc, size_t timers, std::chrono::milliseconds threshold)
    : period_(period_for(threshold)) {
  for (size_t i = 0; i < timers; ++i) timers_.push_back(std::make_unique<boost::asio::steady_timer>(ioc));
}

std::chrono::milliseconds io_stall_watch::period_for(std::chrono::milliseconds threshold) noexcept {
  return std::clamp(threshold / 2, std::chrono::milliseconds(5), std::chrono::milliseconds(100));
}

void io_stall_watch::start() {
  for (size_t i = 0; i < timers_.size(); ++i) {
    // Staggered, so that the timers sample the threads across the period.
    timers_[i]->expires_after(period_ * (i + 1) / timers_.size());
    arm(i);
  }
}

void io_stall_watch::arm(size_t i) {
  timers_[i]->async_wait([this, i](const boost::system::error_code& ec) {
    if (ec) return;  // cancelled: shutting down
    auto& t = *timers_[i];
    const auto due = t.expiry();
    const auto now = std::chrono::steady_clock::now();
    const int64_t late = std::chrono::duration_cast<std::chrono::nanoseconds>(now - due).count();
    if (late > pipeline::slow_batch_threshold_ns()) {
      char name[16] = {};
      pthread_getname_np(pthread_self(), name, sizeof name);
      pipeline::note_io_lateness(late, name);
    }
    // The next due time from now, not from `due`: a stall is one late firing.
    t.expires_at(now + period_);
    arm(i);
  });
}

}  // namespace evpipe::app
