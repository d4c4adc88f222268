#pragma once
// Notices when the I/O threads stall (issue 19): one timer per I/O thread,
// each re-armed every `period` on the sources' io_context; a timer that fires
// later than [pipeline] slow_batch_ms after its due time means no I/O thread
// could run it that long (a long handler, a blocked call, page faults, the
// CPU taken by others), which is a pause in reading and in writing acks. Each
// such firing is counted (evpipe_io_stalls_total, _io_stall_seconds_total)
// and logged, rate limited, with the faults and context switches since the
// previous trace (pipeline/batch_trace.h).
//
// The threads share one io_context, so a timer runs on whichever thread is
// free: the watch sees the threads stalled together, not one of them alone
// (a handler that blocks one thread holds up only its own connection's
// strand, which the slow-batch traces show as ack_write time).
//
// Lifecycle: built and start()ed by app/daemon.cc before the threads run the
// context; ioc.stop() at shutdown ends it. Owned by the daemon; the timers run
// on the I/O threads.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <memory>
#include <vector>

namespace evpipe::app {

class io_stall_watch {
 public:
  io_stall_watch(boost::asio::io_context& ioc, size_t timers, std::chrono::milliseconds threshold);
  void start();
  // How often each timer fires: half the threshold, within 5 to 100 ms, so
  // that a stall longer than the threshold plus that meets a due timer.
  [[nodiscard]] static std::chrono::milliseconds period_for(std::chrono::milliseconds threshold) noexcept;

 private:
  void arm(size_t i);

  std::chrono::milliseconds period_;
  std::vector<std::unique_ptr<boost::asio::steady_timer>> timers_;
};

}  // namespace evpipe::app
