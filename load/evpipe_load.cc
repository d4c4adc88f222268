// evpipe-load: sends events to an evpipe source over TCP, MQTT or HTTP (or to
// anything that speaks those protocols; load/wire.h) and reports throughput
// and latency.
//
// Latency of an event = time its ack arrived - time it was meant to be sent.
// With --rate the send times follow a fixed schedule (open loop), so a server
// stall shows up in the percentiles instead of slowing the sender down.

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "load/event_generator.h"
#include "load/cpu_time.h"
#include "load/input_lines.h"
#include "load/latency_histogram.h"
#include "load/latency_timeline.h"
#include "load/rate_pacer.h"
#include "load/verify.h"
#include "load/wire.h"

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch()).count();
}

struct options {
  std::string target;
  std::string rate = "max";
  double duration_s = 10;
  uint64_t count = 0;
  int connections = 1;
  size_t payload_bytes = 400;
  double invalid_frac = 0, dup_frac = 0;
  uint64_t seed = 1;
  std::string run_id;
  std::string emit, emit_csv, input, json, hdr, verify, timeline, latency_timeline;
  double warmup_s = 0;
  uint64_t window = 0;
  uint32_t tick_us = 0;
  uint64_t http_batch = 1000;
  size_t too_large_bytes = 0;
  std::string bearer_token_file;
  evpipe::load::wire_options wire;
  bool quiet = false;
};

// Per-event intended send times, appended by the sender and read by the
// receiver for events the server has acked (always already sent).
class send_times {
 public:
  static constexpr size_t block = 1 << 16;
  send_times() : blocks_(1 << 14) {}
  void set(uint64_t i, int64_t t) {
    auto& b = blocks_.at(i / block);
    if (!b) b = std::make_unique<int64_t[]>(block);
    b[i % block] = t;
  }
  int64_t get(uint64_t i) const { return blocks_[i / block][i % block]; }
  // Marks an event's latency as recorded (a selective ack came before the
  // cumulative count passed it). Receiver only; the event was sent.
  static constexpr int64_t recorded = INT64_MIN;

 private:
  std::vector<std::unique_ptr<int64_t[]>> blocks_;
};

struct connection_state {
  int fd = -1;
  std::unique_ptr<evpipe::load::wire> wire;
  std::mutex send_mu;                // sender and receiver (PINGRESP) both write
  send_times times;
  std::atomic<uint64_t> sent{0};   // events whose bytes were handed to the socket
  std::atomic<uint64_t> stamped{0};  // events whose intended time is set (a send may be part-way)
  std::atomic<uint64_t> acked{0};
  std::atomic<bool> send_done{false};
  evpipe::load::latency_histogram latencies;  // receiver-owned
  std::unique_ptr<evpipe::load::latency_timeline> per_second;  // receiver-owned; set with --latency-timeline
  uint64_t valid = 0, invalid = 0, dups = 0;
  bool error = false;
};

bool send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += n;
  }
  return true;
}

void receiver(connection_state& c, int64_t warmup_until, std::chrono::seconds drain_timeout) {
  std::string pending, reply;
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  char buf[65536];
  int64_t give_up = 0;
  for (;;) {
    if (c.send_done.load() && c.acked.load() >= c.sent.load()) break;
    if (c.send_done.load() && give_up == 0) give_up = now_ns() + drain_timeout.count() * 1'000'000'000LL;
    if (give_up && now_ns() > give_up) break;
    pollfd p{c.fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    int64_t now = now_ns();
    pending.append(buf, n);
    uint64_t before = c.acked.load(), ack = before;
    try {
      ack = c.wire->on_bytes(pending, before, reply);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "evpipe-load: %s\n", e.what());
      c.error = true;
      break;
    }
    if (!reply.empty()) {
      std::lock_guard lock(c.send_mu);
      (void)send_all(c.fd, reply);
      reply.clear();
    }
    // An event's latency ends at the first ack that names it: the count, or a
    // selective run beyond it (TCP's "sack").
    auto record = [&](uint64_t i) {
      int64_t t = c.times.get(i);
      if (t == send_times::recorded) return;
      if (t >= warmup_until) {
        c.latencies.record(now - t);
        if (c.per_second) c.per_second->record(t, now - t);
      }
    };
    for (uint64_t i = before; i < ack; ++i) record(i);
    runs.clear();
    c.wire->take_selective(runs);
    const uint64_t stamped = c.stamped.load();
    for (const auto& [first, last] : runs) {
      for (uint64_t i = std::max(first, ack); i <= last && i < stamped; ++i) {
        record(i);
        c.times.set(i, send_times::recorded);
      }
    }
    c.acked.store(ack);
  }
}

evpipe::load::generator_options generator_for(const options& o, int stream) {
  evpipe::load::generator_options g;
  g.run_id = o.run_id;
  g.seed = o.seed;
  g.payload_bytes = o.payload_bytes;
  g.invalid_frac = o.invalid_frac;
  g.dup_frac = o.dup_frac;
  g.stream = static_cast<uint32_t>(stream);
  g.too_large_bytes = o.too_large_bytes;
  return g;
}

// Sends this connection's share: generated events or lines of --input.
void sender(connection_state& c, const options& o, int stream, uint64_t quota, double rate_per_conn,
            int64_t start, int64_t stop, const std::vector<std::string_view>* lines, size_t first_line) {
  evpipe::load::event_generator gen(generator_for(o, stream));
  std::string buf, event;
  uint64_t i = 0;
  evpipe::load::rate_pacer pacer(start, rate_per_conn > 0 ? rate_per_conn : 1.0);
  // With --tick-us the last tick may end past --duration with events of the
  // schedule still to send (a send holds at most 1,000): those go too.
  const bool ticked = rate_per_conn > 0 && o.tick_us > 0;
  auto more = [&] {
    return (quota == 0 || i < quota) &&
           (stop == 0 || now_ns() < stop || (ticked && i < pacer.due(stop - 1)));
  };
  // Nothing is sent before the schedule starts (threads start a little early).
  std::this_thread::sleep_for(std::chrono::nanoseconds(std::max<int64_t>(0, start - now_ns())));
  int64_t next_tick = 0;
  while (more()) {
    buf.clear();
    int64_t now = now_ns();
    if (ticked && now < next_tick) {
      // --tick-us: at most one send per tick; what fell due meanwhile goes
      // together (the last tick's too, though the sleep may end past --duration).
      std::this_thread::sleep_for(std::chrono::nanoseconds(next_tick - now));
      now = now_ns();
    }
    if (ticked && stop > 0) now = std::min(now, stop - 1);  // the schedule ends with --duration
    uint64_t due;
    if (rate_per_conn > 0) {
      // Open loop: every event whose intended time has come.
      // Wakes at most every 250 us (sending what fell due meanwhile) so the
      // generator does not spend the CPU it is measuring; each event's
      // latency still counts from its own intended time.
      uint64_t should = pacer.due(now);
      if (should <= i) {
        std::this_thread::sleep_for(std::chrono::nanoseconds(std::max<int64_t>(250'000, pacer.intended(i) - now_ns())));
        continue;
      }
      due = std::min<uint64_t>(should - i, 1000);
    } else if (o.window == 0) {
      // Closed loop: send as fast as the server reads; TCP flow control
      // blocks send() when it does not, so this thread never spins.
      due = 256;
    } else {
      // Closed loop with at most `window` events unacked.
      uint64_t in_flight = i - c.acked.load();
      if (in_flight >= o.window) {
        std::this_thread::sleep_for(1ms);
        continue;
      }
      due = std::min<uint64_t>(o.window - in_flight, 256);
    }
    if (quota) due = std::min(due, quota - i);
    // The protocol's own bounds: unacknowledged MQTT packet ids, events per
    // HTTP request.
    uint64_t in_flight = i - c.acked.load();
    if (in_flight >= c.wire->max_in_flight() || (in_flight > 0 && c.wire->one_group_at_a_time())) {
      std::this_thread::sleep_for(200us);
      continue;
    }
    due = std::min({due, c.wire->max_in_flight() - in_flight, c.wire->max_group()});
    for (uint64_t k = 0; k < due; ++k) {
      uint64_t idx = i + k;
      int64_t intended = rate_per_conn > 0 ? pacer.intended(idx) : now;
      c.times.set(idx, intended);
      if (lines) {
        c.wire->add(idx, (*lines)[first_line + idx], buf);
        continue;
      }
      event.clear();
      switch (gen.next(event)) {
        case evpipe::load::event_class::valid: ++c.valid; break;
        case evpipe::load::event_class::invalid: ++c.invalid; break;
        case evpipe::load::event_class::duplicate: ++c.dups; break;
      }
      c.wire->add(idx, event, buf);
    }
    c.wire->finish(buf);
    // Before the send: a selective ack can name the first of these events
    // while the rest still wait for room in the socket.
    c.stamped.store(i + due);
    bool sent_ok;
    {
      std::lock_guard lock(c.send_mu);
      sent_ok = send_all(c.fd, buf);
    }
    if (!sent_ok) {
      c.error = true;
      break;
    }
    i += due;
    c.sent.store(i);
    // The next tick only once caught up: a send holds at most 1,000 events (or
    // one HTTP group), and a backlog goes on at once, as without a tick.
    // The last tick ends just before --duration does, so that what falls due
    // by then is still sent.
    if (ticked && i >= pacer.due(now)) {
      next_tick = now + int64_t{o.tick_us} * 1000;
      if (stop > 0) next_tick = std::min(next_tick, stop - 1);
    }
  }
  c.send_done.store(true);
}

int emit(const options& o) {
  if (o.count == 0) {
    std::cerr << "evpipe-load: --emit and --emit-csv need --count\n";
    return 2;
  }
  evpipe::load::event_generator gen(generator_for(o, 0));
  std::ofstream nd, csv;
  if (!o.emit.empty()) nd.open(o.emit);
  if (!o.emit_csv.empty()) csv.open(o.emit_csv);
  std::string line, quoted;
  for (uint64_t i = 0; i < o.count; ++i) {
    line.clear();
    auto what = gen.next(line);
    if (nd.is_open()) nd << line << '\n';
    // The CSV is for psql \copy straight into events_mirror: only the rows
    // evpipe would mirror (valid, first copy of each key).
    if (csv.is_open() && what == evpipe::load::event_class::valid) {
      // topic,payload for `\copy events_mirror (topic, payload) FROM f WITH (FORMAT csv)`
      auto p = line.find("\"topic\":\"");
      std::string topic = p == std::string::npos ? "evpipe/load" : line.substr(p + 9, line.find('"', p + 9) - p - 9);
      quoted.clear();
      for (char ch : line) {
        if (ch == '"') quoted += '"';
        quoted += ch;
      }
      csv << topic << ",\"" << quoted << "\"\n";
    }
  }
  std::cerr << "evpipe-load: wrote " << o.count << " events (" << gen.valid_sent() << " valid, "
            << gen.invalid_sent() << " invalid, " << gen.duplicates_sent() << " resends)\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  CLI::App cli{"evpipe-load: send events to evpipe over TCP, MQTT or HTTP and measure acknowledged throughput and latency"};
  cli.add_option("--target", o.target,
                 "tcp://host:port (NDJSON, acked by {\"ack\":N} and its \"sack\" runs); mqtt://host:port (QoS 1 through a broker, acked by "
                 "the broker's PUBACK); mqtt-serve://host:port (play the broker for evpipe's MQTT source: acked by "
                 "evpipe's PUBACK after commit); http://host:port/v1/events (NDJSON batches, acked by the response); "
                 "nats://host:port (into a JetStream stream, acked by the stream's publish ack)");
  cli.add_option("--topic", o.wire.topic, "MQTT topic to publish on (nats://: the subject, '/' read as '.')")->default_val("tracker/events/load");
  cli.add_option("--http-batch", o.http_batch,
                 "events per HTTP request at most; a connection sends its next request once the last is answered, "
                 "with every event that fell due meanwhile")->default_val(1000)
      ->check(CLI::Range(1, 1'000'000));
  cli.add_option("--bearer-token-file", o.bearer_token_file, "http: file whose first line is the bearer token");
  cli.add_option("--accept-timeout", o.wire.accept_timeout_s, "mqtt-serve: seconds to wait for evpipe to connect")
      ->default_val(30);
  cli.add_option("--rate", o.rate, "events/s across all connections (open loop), or \"max\" (closed loop)")
      ->default_val("max");
  cli.add_option("--duration", o.duration_s, "seconds to send (ignored with --count)")->default_val(10);
  cli.add_option("--count", o.count, "events to send in all (0: use --duration)");
  cli.add_option("--connections", o.connections, "parallel connections")->default_val(1)->check(CLI::Range(1, 1024));
  cli.add_option("--payload-bytes", o.payload_bytes, "approximate size of each event")->default_val(400);
  cli.add_option("--invalid-frac", o.invalid_frac, "fraction of events that must be dead-lettered")->check(CLI::Range(0.0, 1.0));
  cli.add_option("--dup-frac", o.dup_frac, "fraction of events that resend an earlier key")->check(CLI::Range(0.0, 1.0));
  cli.add_option("--too-large-bytes", o.too_large_bytes,
                 "evpipe's [events] max_event_bytes: invalid events then include events one byte over it "
                 "(too_large); off by default, as evpipe's default limit makes them 1 MiB");
  cli.add_option("--seed", o.seed, "seed of the event stream")->default_val(1);
  cli.add_option("--run-id", o.run_id, "prefix of every idempotency key (default: derived from the clock)");
  cli.add_option("--warmup", o.warmup_s, "seconds at the start left out of the latency figures")->default_val(0);
  cli.add_option("--tick-us", o.tick_us,
                 "with --rate R: send at most once per this many us per connection, everything due "
                 "by then together (0: as soon as an event is due, sleeping at least 250 us when none is)")
      ->default_val(0);
  cli.add_option("--window", o.window, "with --rate max: most unacked events per connection (0: no limit but TCP's)")
      ->default_val(0);
  cli.add_option("--emit", o.emit, "write the stream as NDJSON to FILE instead of sending (needs --count)");
  cli.add_option("--emit-csv", o.emit_csv,
                 "write the rows evpipe would mirror (valid, first copy of each key) as (topic,payload) CSV for "
                 "psql \\copy to FILE (needs --count)");
  cli.add_option("--input", o.input, "send the lines of this NDJSON file instead of generated events");
  cli.add_option("--json", o.json, "also write the figures as JSON to FILE");
  cli.add_option("--timeline", o.timeline, "also write acked events per second as CSV (seconds,acked_per_s) to FILE");
  cli.add_option("--latency-timeline", o.latency_timeline,
                 "also write latency per second of intended send time as CSV "
                 "(second,events,p50_ms,p99_ms,p99_9_ms,max_ms) to FILE; perf/floor_client writes the same");
  cli.add_option("--hdr", o.hdr, "also write the full latency percentile distribution (HdrHistogram text) to FILE");
  cli.add_option("--verify", o.verify,
                 "after the run, check in PostgreSQL (this DSN) that every valid unique key is in events_mirror "
                 "once, every invalid event is in dlq_events, and nothing else of the run is there");
  cli.add_flag("--quiet", o.quiet, "no progress line");
  CLI11_PARSE(cli, argc, argv);

  if (o.run_id.empty()) o.run_id = "r" + std::to_string(std::chrono::system_clock::now().time_since_epoch().count() / 1000000);
  if (!o.emit.empty() || !o.emit_csv.empty()) return emit(o);
  if (o.target.empty()) {
    std::cerr << "evpipe-load: --target is required (tcp://, mqtt://, mqtt-serve://, http:// or nats://; or --emit FILE)\n";
    return 2;
  }
  evpipe::load::target target;
  try {
    target = evpipe::load::parse_target(o.target);
  } catch (const std::exception& e) {
    std::cerr << "evpipe-load: " << e.what() << "\n";
    return 2;
  }
  if (!o.bearer_token_file.empty()) {
    std::ifstream in(o.bearer_token_file);
    if (!in || !std::getline(in, o.wire.bearer_token)) {
      std::cerr << "evpipe-load: cannot read " << o.bearer_token_file << "\n";
      return 2;
    }
  }
  o.wire.client_id = "evpipe-load-" + o.run_id;
  double rate = 0;
  if (o.rate != "max") {
    try {
      rate = std::stod(o.rate);
    } catch (...) {
      std::cerr << "evpipe-load: --rate takes a number of events/s or \"max\"\n";
      return 2;
    }
    if (rate <= 0) {
      std::cerr << "evpipe-load: --rate must be positive\n";
      return 2;
    }
  } else if (o.tick_us > 0) {
    std::cerr << "evpipe-load: --tick-us paces --rate R; with --rate max the server's acks pace the sends\n";
    return 2;
  }

  if (!o.verify.empty() && !o.input.empty()) {
    std::cerr << "evpipe-load: --verify checks generated events; it cannot be used with --input\n";
    return 2;
  }
  evpipe::load::input_lines input;
  const std::vector<std::string_view>& lines = input.lines();
  if (!o.input.empty()) {
    if (!input.open(o.input)) {
      std::cerr << "evpipe-load: cannot read " << o.input << ": " << std::strerror(errno) << "\n";
      return 2;
    }
    if (lines.empty()) {
      std::cerr << "evpipe-load: " << o.input << " has no lines to send\n";
      return 2;
    }
    o.count = lines.size();
  }

  std::vector<std::unique_ptr<connection_state>> conns;
  try {
    for (int i = 0; i < o.connections; ++i) {
      conns.push_back(std::make_unique<connection_state>());
      conns.back()->fd = evpipe::load::open_connection(target, i, o.wire);
      conns.back()->wire = evpipe::load::make_wire(target, o.wire, o.http_batch);
    }
  } catch (const std::exception& e) {
    std::cerr << "evpipe-load: " << e.what() << "\n";
    return 1;
  }

  int64_t start = now_ns() + 10'000'000;  // 10 ms for the threads to start
  int64_t stop = o.count ? 0 : start + static_cast<int64_t>(o.duration_s * 1e9);
  int64_t warmup_until = start + static_cast<int64_t>(o.warmup_s * 1e9);
  // The run's share, apart from reading --input and from the report itself.
  const double cpu_at_start = evpipe::load::process_cpu_seconds();
  std::vector<std::thread> threads;
  size_t next_line = 0;
  for (int i = 0; i < o.connections; ++i) {
    uint64_t quota = o.count ? o.count / o.connections + (static_cast<uint64_t>(i) < o.count % o.connections) : 0;
    auto& c = *conns[i];
    if (!o.latency_timeline.empty()) c.per_second = std::make_unique<evpipe::load::latency_timeline>(start);
    threads.emplace_back(receiver, std::ref(c), warmup_until, std::chrono::seconds(60));
    threads.emplace_back(sender, std::ref(c), std::cref(o), i, quota, rate / o.connections, start, stop,
                         lines.empty() ? nullptr : &lines, next_line);
    next_line += quota;
  }

  // Progress once a second, on stderr.
  std::atomic<bool> finished{false};
  std::ofstream timeline;
  if (!o.timeline.empty()) {
    timeline.open(o.timeline);
    timeline << "seconds,acked_per_s\n";
  }
  std::thread progress([&] {
    int64_t last_t = start;
    uint64_t last_acked = 0;
    while (!finished.load()) {
      std::this_thread::sleep_for(200ms);
      if (now_ns() - last_t < 1'000'000'000) continue;
      uint64_t sent = 0, acked = 0;
      for (auto& c : conns) {
        sent += c->sent.load();
        acked += c->acked.load();
      }
      int64_t t = now_ns();
      double per_s = (acked - last_acked) * 1e9 / (t - last_t);
      if (!o.quiet) {
        std::fprintf(stderr, "  %6.1f s  sent %10llu  acked %10llu  %9.0f acked/s\n", (t - start) / 1e9,
                     static_cast<unsigned long long>(sent), static_cast<unsigned long long>(acked), per_s);
      }
      if (timeline.is_open()) timeline << (t - start) / 1e9 << "," << per_s << "\n";
      last_t = t;
      last_acked = acked;
    }
  });
  for (auto& t : threads) t.join();
  int64_t end = now_ns();
  finished.store(true);
  progress.join();
  const double cpu = evpipe::load::process_cpu_seconds() - cpu_at_start;

  uint64_t sent = 0, acked = 0, valid = 0, invalid = 0, dups = 0;
  bool error = false;
  evpipe::load::latency_histogram lat;
  evpipe::load::latency_timeline per_second(start);
  int64_t last_ack_time = end;
  for (auto& c : conns) {
    sent += c->sent.load();
    acked += c->acked.load();
    valid += c->valid;
    invalid += c->invalid;
    dups += c->dups;
    error |= c->error;
    lat.merge(c->latencies);
    if (c->per_second) per_second.merge(*c->per_second);
    ::close(c->fd);
  }
  double secs = (last_ack_time - start) / 1e9;
  double p50 = lat.percentile(50) / 1e6, p90 = lat.percentile(90) / 1e6, p99 = lat.percentile(99) / 1e6,
         p999 = lat.percentile(99.9) / 1e6, pmax = lat.max() / 1e6;
  std::printf("evpipe-load  %s  connections %d  rate %s  run %s\n", o.target.c_str(), o.connections, o.rate.c_str(),
              o.run_id.c_str());
  std::printf("  sent                %12llu\n", static_cast<unsigned long long>(sent));
  std::printf("  acked               %12llu\n", static_cast<unsigned long long>(acked));
  if (lines.empty()) {
    std::printf("  expected mirrored   %12llu\n", static_cast<unsigned long long>(valid));
    std::printf("  expected DLQ        %12llu\n", static_cast<unsigned long long>(invalid));
    std::printf("  duplicates sent     %12llu\n", static_cast<unsigned long long>(dups));
  }
  std::printf("  throughput          %12.0f events/s (acked, over %.2f s)\n", acked / secs, secs);
  std::printf("  latency ms  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n", p50, p90, p99, p999, pmax);
  std::printf("  own cpu             %12.3f s (user + system while sending, %.2f us an event)\n", cpu,
              sent ? cpu * 1e6 / sent : 0.0);
  if (!o.json.empty()) {
    std::ofstream j(o.json);
    j << "{\"sent\":" << sent << ",\"acked\":" << acked << ",\"expected_mirrored\":" << valid
      << ",\"expected_dlq\":" << invalid << ",\"duplicates_sent\":" << dups << ",\"seconds\":" << secs
      << ",\"throughput\":" << acked / secs << ",\"cpu_seconds\":" << cpu << ",\"latency_ms\":{\"p50\":" << p50 << ",\"p90\":" << p90
      << ",\"p99\":" << p99 << ",\"p99_9\":" << p999 << ",\"max\":" << pmax << "}}\n";
  }
  if (!o.hdr.empty()) std::ofstream(o.hdr) << lat.distribution();
  if (!o.latency_timeline.empty() && !per_second.write(o.latency_timeline)) {
    std::fprintf(stderr, "evpipe-load: cannot write %s\n", o.latency_timeline.c_str());
    return 1;
  }
  if (error || acked != sent) {
    std::fprintf(stderr, "evpipe-load: %llu of %llu events were not acked\n",
                 static_cast<unsigned long long>(sent - acked), static_cast<unsigned long long>(sent));
    return 1;
  }
  if (!o.verify.empty()) {
    std::vector<uint64_t> valid_per_stream;
    for (auto& c : conns) valid_per_stream.push_back(c->valid);
    try {
      auto keys = evpipe::load::generated_keys(o.run_id, valid_per_stream);
      auto report = evpipe::load::verify_run(o.verify, o.run_id, keys, invalid);
      // Through a broker (or a JetStream stream), the acks came from it: give
      // evpipe time to commit what it has yet to receive.
      const bool via_broker =
          target.kind == evpipe::load::target_kind::mqtt || target.kind == evpipe::load::target_kind::nats;
      for (int waited = 0; via_broker && !report.ok() && waited < 600; ++waited) {
        std::this_thread::sleep_for(100ms);
        report = evpipe::load::verify_run(o.verify, o.run_id, keys, invalid);
      }
      std::printf("  verify              %s: %s\n", report.ok() ? "OK" : "FAILED", report.summary().c_str());
      for (const auto& e : report.examples) std::printf("    %s\n", e.c_str());
      if (!report.ok()) return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "evpipe-load: %s\n", e.what());
      return 1;
    }
  }
  return 0;
}
