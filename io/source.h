#pragma once
// What the daemon needs from every source (TCP, MQTT, HTTP): where events
// enter. A source reads events, hands them to the router through an intake,
// and acknowledges each one to its producer only after the shards report the
// event's outcome as committed (stages::event_origin).
//
// Lifecycle, driven by app/daemon.cc: start() once (throws std::runtime_error
// with one clear line when it cannot listen or is misconfigured); on shutdown
// stop_reading() (no new events; those read still complete and are acked),
// then, once the shards have drained, close(). The functions are thread-safe.

#include <cstddef>
#include <string>

namespace evpipe::io {

class source {
 public:
  virtual ~source() = default;

  virtual void start() = 0;
  virtual void stop_reading() = 0;
  virtual void close() = 0;

  // Connections still reading events (shutdown waits for 0 before draining).
  [[nodiscard]] virtual int reading_connections() const noexcept = 0;
  // Connections still open, e.g. writing their last acks.
  [[nodiscard]] virtual size_t open_connections() = 0;
  // One line for the startup log: what it listens on or subscribes to.
  [[nodiscard]] virtual std::string describe() const = 0;
};

}  // namespace evpipe::io
