#pragma once
// A closed-loop NDJSON producer for tests that change evpipe while it loads
// (reload_integration_test, routes_reload_integration_test): keys
// `<run>-0`, `<run>-1`, ... in chunks, each chunk sent and its acks awaited.

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {

// A producer that streams keys `<run>-0`, `<run>-1`, ... in chunks, each
// chunk sent and then awaited (closed loop, so the load is bounded). When
// evpipe closes its connection (a source restarted by a reload), it connects
// again and resends from the first key not acked, as a real producer does.
class producer {
 public:
  // `event(key)`: one event's line (no line break); default valid_event.
  producer(uint16_t port, std::string run, long max_events,
           std::function<std::string(const std::string&)> event = nullptr)
      : port_(port), run_(std::move(run)), max_(max_events), event_(std::move(event)) {
    thread_ = std::thread([this] { loop(); });
  }
  ~producer() { finish(); }
  void finish() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] long acked() const { return acked_.load(); }
  [[nodiscard]] int reconnects() const { return reconnects_.load(); }
  [[nodiscard]] bool failed() const { return failed_.load(); }
  [[nodiscard]] const std::string& run() const { return run_; }

 private:
  void loop() {
    const long chunk = 100;
    std::unique_ptr<ndjson_client> c;
    long base = 0;  // the key of the connection's first line
    while (!stop_.load() && acked_.load() < max_) {
      if (!c) {
        auto give_up = std::chrono::steady_clock::now() + 30s;
        while (!c && std::chrono::steady_clock::now() < give_up) {
          try {
            c = std::make_unique<ndjson_client>(port_);
          } catch (const std::exception&) {
            std::this_thread::sleep_for(20ms);
          }
        }
        if (!c) {
          failed_.store(true);
          return;
        }
        base = acked_.load();
        sent_ = 0;
      }
      std::string data;
      long from = base + sent_;
      long n = std::min(chunk, max_ - from);
      for (long i = from; i < from + n; ++i) {
        const std::string key = run_ + "-" + std::to_string(i);
        data += (event_ ? event_(key) : valid_event(key)) + "\n";
      }
      try {
        c->send_all(data);
      } catch (const std::exception&) {
        // closed by evpipe: what it read is acked below, the rest resent
      }
      sent_ += n;
      c->read_acks_until(static_cast<uint64_t>(sent_), 30s);
      acked_.store(base + static_cast<long>(c->last_ack()));
      if (c->closed() || static_cast<long>(c->last_ack()) < sent_) {
        c.reset();
        if (!stop_.load()) reconnects_.fetch_add(1);
      }
    }
  }

  uint16_t port_;
  std::string run_;
  long max_;
  std::function<std::string(const std::string&)> event_;
  long sent_ = 0;
  std::atomic<bool> stop_{false}, failed_{false};
  std::atomic<long> acked_{0};
  std::atomic<int> reconnects_{0};
  std::thread thread_;
};

}  // namespace evpipe::testing
