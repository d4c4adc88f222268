// The stream's metrics (stream_probe) in Prometheus' text format, for
// /metrics (docs/read.md: the stream's metrics).
#include <cstdio>
#include <string>

#include "read/stream/stream_hub.h"

namespace evpipe::read {

std::string_view disconnect_reason_name(disconnect_reason r) noexcept {
  switch (r) {
    case disconnect_reason::client_closed: return "client_closed";
    case disconnect_reason::heartbeat_missed: return "heartbeat_missed";
    case disconnect_reason::stream_error: return "stream_error";
    case disconnect_reason::shutdown: return "shutdown";
    case disconnect_reason::count_: break;
  }
  return "unknown";
}

std::string render_stream_metrics(const stream_probe& p, const std::string& prefix) {
  std::string out;
  auto one = [&](const char* name, const char* type, const char* help, const std::string& value) {
    std::string full = prefix + "_stream_" + name;
    out += "# HELP " + full + " " + help + "\n# TYPE " + full + " " + type + "\n" + full + " " + value + "\n";
  };
  auto u = [](uint64_t v) { return std::to_string(v); };
  one("clients", "gauge", "Stream subscriptions (SSE clients and subscribed WebSocket clients).",
      std::to_string(p.clients.load(std::memory_order_relaxed)));
  one("events_delivered_total", "counter", "Events handed to stream clients.",
      u(p.events_delivered.load(std::memory_order_relaxed)));
  one("catch_ups_total", "counter", "Clients read from the table (a past since, or fallen behind).",
      u(p.catch_ups.load(std::memory_order_relaxed)));
  one("fell_behind_total", "counter", "Live clients moved back to catch-up: what their queue holds, or a read's rows would take it, over max_client_buffer_bytes.",
      u(p.fell_behind.load(std::memory_order_relaxed)));
  one("read_errors_total", "counter", "Failed reads of events_mirror by the stream.",
      u(p.read_errors.load(std::memory_order_relaxed)));
  one("writer_waits_total", "counter",
      "Times the tail was due but waited for a fan-out writer to take earlier reads (the writers were behind).",
      u(p.writer_waits.load(std::memory_order_relaxed)));
  char age[32];
  std::snprintf(age, sizeof age, "%.3f", p.horizon_age_s.load(std::memory_order_relaxed));
  one("horizon_age_seconds", "gauge",
      "Age of the oldest open transaction that has written: readers wait for it (sampled while clients listen).", age);
  std::string name = prefix + "_stream_disconnects_total";
  out += "# HELP " + name + " Stream client connections ended, by reason.\n# TYPE " + name + " counter\n";
  for (size_t i = 0; i < p.disconnects.size(); ++i) {
    out += name + "{reason=\"" + std::string(disconnect_reason_name(static_cast<disconnect_reason>(i))) + "\"} " +
           u(p.disconnects[i].load(std::memory_order_relaxed)) + "\n";
  }
  pipeline::render_histogram_family(
      out, prefix + "_stream_commit_to_send_seconds",
      "Live events: from the commit that made the row readable to its write to the client's socket.",
      p.commit_to_send.read());
  return out;
}

}  // namespace evpipe::read
