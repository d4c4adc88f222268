// floor-client: the floor and ceiling evpipe is measured against. It is what
// a user would write instead of evpipe: K libpq connections, each COPYing
// rows straight into events_mirror (the same columns and binary format evpipe
// writes) and committing, with no parsing, validation, dedup or acks.
//
// Open loop (--rate R): events fall due on a fixed schedule (load/rate_pacer.h,
// the same as evpipe-load's); each connection COPYs everything due, commits,
// and counts each row's latency from its intended send time to the commit,
// so a stall counts against every row scheduled during it. This is the
// latency floor for evpipe at the same rate.
// Closed loop (--rate max --count N): N rows, generated before the clock
// starts, split over K streams and COPYed as fast as PostgreSQL takes them:
// the K-stream copy ceiling for evpipe's bulk rate.
//
// The event mix is evpipe-load's (load/event_generator.h), so rows are the
// same size and shape as the ones evpipe stores in a run.

#include <libpq-fe.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "load/event_generator.h"
#include "load/cpu_time.h"
#include "load/latency_histogram.h"
#include "load/latency_timeline.h"
#include "load/rate_pacer.h"
#include "perf/copy_rows.h"
#include "stages/batch.h"

namespace {

using namespace std::chrono_literals;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct options {
  std::string dsn;
  std::string table = "events_mirror";
  int connections = 1;
  std::string rate = "max";
  double duration_s = 10;
  uint64_t count = 0;
  uint64_t batch_rows = 0;
  size_t payload_bytes = 400;
  uint64_t seed = 1;
  std::string run_id;
  double warmup_s = 0;
  std::string json, hdr, timeline, latency_timeline;
  bool quiet = false;
};

namespace copy_format = evpipe::stages::copy_format;

// One row of evpipe-load's mix, with the topic evpipe stores for it.
void copy_row(std::string& out, std::string_view event) {
  copy_format::append_event_row(out, evpipe::perf::topic_of(event, "evpipe/load"), event);
}

// One stream: a connection, what it committed, and its latencies.
// Owned by its thread while the run lasts; read by main after join.
struct stream_state {
  PGconn* conn = nullptr;
  std::atomic<uint64_t> committed{0};
  evpipe::load::latency_histogram latencies;
  std::unique_ptr<evpipe::load::latency_timeline> per_second;
  std::string error;
  int64_t last_commit = 0;
  std::vector<std::string> prepared;  // closed loop: COPY payloads made before the clock starts
  uint64_t prepared_rows = 0;
};

// COPY one payload and commit it (a single statement commits on its own).
bool copy_commit(stream_state& s, const std::string& copy_sql, const std::string& data) {
  return evpipe::perf::copy_commit(s.conn, copy_sql, data, s.error);
}

evpipe::load::generator_options generator_for(const options& o, int stream) {
  evpipe::load::generator_options g;
  g.run_id = o.run_id;
  g.seed = o.seed;
  g.payload_bytes = o.payload_bytes;
  g.stream = static_cast<uint32_t>(stream);
  return g;
}

// Open loop: COPY every row that is due, commit, repeat.
void open_loop(stream_state& s, const options& o, const std::string& copy_sql, int stream, double rate, int64_t start,
               uint64_t limit, int64_t warmup_until) {
  evpipe::load::event_generator gen(generator_for(o, stream));
  evpipe::load::rate_pacer pacer(start, rate);
  std::string data, event;
  uint64_t i = 0;
  std::this_thread::sleep_for(std::chrono::nanoseconds(std::max<int64_t>(0, start - now_ns())));
  while (i < limit) {
    int64_t now = now_ns();
    uint64_t due = std::min(pacer.due(now), limit);
    if (due <= i) {
      // Like evpipe-load's sender: wake at most every 250 us, so both sides
      // of a comparison batch the same way.
      std::this_thread::sleep_for(std::chrono::nanoseconds(std::max<int64_t>(250'000, pacer.intended(i) - now)));
      continue;
    }
    due = std::min<uint64_t>(due, i + 65536);  // one COPY stays a few tens of MB at most
    data.clear();
    data.append(copy_format::header);
    for (uint64_t k = i; k < due; ++k) {
      event.clear();
      (void)gen.next(event);  // no invalid events or resends: every row is stored
      copy_row(data, event);
    }
    data.append(copy_format::trailer);
    if (!copy_commit(s, copy_sql, data)) return;
    int64_t done = now_ns();
    for (uint64_t k = i; k < due; ++k) {
      int64_t t = pacer.intended(k);
      if (t < warmup_until) continue;
      s.latencies.record(done - t);
      if (s.per_second) s.per_second->record(t, done - t);
    }
    s.last_commit = done;
    s.committed.store(due);
    i = due;
  }
}

// Closed loop: the prepared COPYs back to back; a row's latency runs from the
// start of its COPY to the commit.
void closed_loop(stream_state& s, const std::string& copy_sql, int64_t start, uint64_t rows_per_copy) {
  std::this_thread::sleep_for(std::chrono::nanoseconds(std::max<int64_t>(0, start - now_ns())));
  uint64_t done_rows = 0;
  for (const auto& data : s.prepared) {
    int64_t began = now_ns();
    if (!copy_commit(s, copy_sql, data)) return;
    int64_t done = now_ns();
    uint64_t n = std::min(rows_per_copy, s.prepared_rows - done_rows);
    for (uint64_t k = 0; k < n; ++k) s.latencies.record(done - began);
    if (s.per_second) {
      for (uint64_t k = 0; k < n; ++k) s.per_second->record(began, done - began);
    }
    done_rows += n;
    s.last_commit = done;
    s.committed.store(done_rows);
  }
}

void prepare(stream_state& s, const options& o, int stream, uint64_t rows, uint64_t rows_per_copy) {
  evpipe::load::event_generator gen(generator_for(o, stream));
  std::string event;
  s.prepared_rows = rows;
  for (uint64_t i = 0; i < rows;) {
    std::string data;
    data.append(copy_format::header);
    uint64_t end = std::min(rows, i + rows_per_copy);
    for (; i < end; ++i) {
      event.clear();
      (void)gen.next(event);
      copy_row(data, event);
    }
    data.append(copy_format::trailer);
    s.prepared.push_back(std::move(data));
  }
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  CLI::App cli{
      "floor-client: K libpq connections COPYing evpipe-load's event mix straight into events_mirror (binary COPY, "
      "commit per COPY): the latency floor (open loop, --rate R) and the K-stream copy ceiling (closed loop, --rate "
      "max --count N) for evpipe"};
  cli.add_option("--dsn", o.dsn, "libpq connection string of the database holding the table")->required();
  cli.add_option("--table", o.table, "table with evpipe's events_mirror columns (topic, payload)")
      ->default_val("events_mirror");
  cli.add_option("--connections", o.connections, "parallel connections (K streams)")->default_val(1)
      ->check(CLI::Range(1, 256));
  cli.add_option("--rate", o.rate, "rows/s across all connections (open loop), or \"max\" (closed loop, needs --count)")
      ->default_val("max");
  cli.add_option("--duration", o.duration_s, "open loop: seconds of schedule (ignored with --count)")->default_val(10)
      ->check(CLI::Range(0.1, 86400.0));
  cli.add_option("--count", o.count, "rows in all (0: open loop runs for --duration)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1'000'000'000}));
  cli.add_option("--batch-rows", o.batch_rows,
                 "closed loop: rows per COPY and commit (0: each stream's whole share in one COPY, like psql \\copy)")
      ->default_val(0);
  cli.add_option("--payload-bytes", o.payload_bytes, "approximate size of each event")->default_val(400)
      ->check(CLI::Range(size_t{200}, size_t{1 << 20}));
  cli.add_option("--seed", o.seed, "seed of the event stream")->default_val(1);
  cli.add_option("--run-id", o.run_id, "prefix of every idempotency key (default: derived from the clock)");
  cli.add_option("--warmup", o.warmup_s, "open loop: seconds at the start left out of the latency figures")
      ->default_val(0);
  cli.add_option("--json", o.json, "also write the figures as JSON (evpipe-load's fields) to FILE");
  cli.add_option("--timeline", o.timeline, "also write committed rows per second as CSV (seconds,acked_per_s) to FILE");
  cli.add_option("--latency-timeline", o.latency_timeline,
                 "also write latency per second of intended send time as CSV "
                 "(second,events,p50_ms,p99_ms,p99_9_ms,max_ms) to FILE, as evpipe-load does");
  cli.add_option("--hdr", o.hdr, "also write the latency percentile distribution (HdrHistogram text) to FILE");
  cli.add_flag("--quiet", o.quiet, "no progress line");
  CLI11_PARSE(cli, argc, argv);

  double rate = 0;
  if (o.rate != "max") {
    try {
      rate = std::stod(o.rate);
    } catch (...) {
      std::fprintf(stderr, "floor-client: --rate takes a number of rows/s or \"max\"\n");
      return 2;
    }
    if (rate <= 0) {
      std::fprintf(stderr, "floor-client: --rate must be positive\n");
      return 2;
    }
  } else if (o.count == 0) {
    std::fprintf(stderr, "floor-client: --rate max (closed loop) needs --count N\n");
    return 2;
  }
  if (o.run_id.empty()) {
    o.run_id = "floor" + std::to_string(std::chrono::system_clock::now().time_since_epoch().count() / 1000000);
  }
  const std::string copy_sql = "COPY " + o.table + " (topic, payload) FROM STDIN (FORMAT binary)";
  const int k = o.connections;

  std::vector<std::unique_ptr<stream_state>> streams;
  for (int i = 0; i < k; ++i) {
    auto s = std::make_unique<stream_state>();
    s->conn = PQconnectdb(o.dsn.c_str());
    if (PQstatus(s->conn) != CONNECTION_OK) {
      std::fprintf(stderr, "floor-client: cannot connect: %s", PQerrorMessage(s->conn));
      PQfinish(s->conn);
      for (auto& t : streams) PQfinish(t->conn);
      return 1;
    }
    PQclear(PQexec(s->conn, "SET application_name = 'evpipe-floor-client'"));
    streams.push_back(std::move(s));
  }
  auto quota = [&](int i) { return o.count / k + (static_cast<uint64_t>(i) < o.count % k ? 1 : 0); };
  if (rate == 0) {
    uint64_t per_copy = o.batch_rows ? o.batch_rows : o.count;
    for (int i = 0; i < k; ++i) prepare(*streams[i], o, i, quota(i), per_copy);
  }

  const int64_t start = now_ns() + 20'000'000;  // 20 ms for the threads to start
  const int64_t warmup_until = start + static_cast<int64_t>(o.warmup_s * 1e9);
  std::vector<std::thread> threads;
  for (int i = 0; i < k; ++i) {
    auto& s = *streams[i];
    if (!o.latency_timeline.empty()) s.per_second = std::make_unique<evpipe::load::latency_timeline>(start);
    if (rate == 0) {
      uint64_t per_copy = o.batch_rows ? o.batch_rows : o.count;
      threads.emplace_back(closed_loop, std::ref(s), std::cref(copy_sql), start, per_copy);
    } else {
      // Each stream has its share of the rate; with --duration it sends every
      // row scheduled before the end.
      double share = rate / k;
      uint64_t limit = o.count ? quota(i) : evpipe::load::rate_pacer(start, share).due(
                                                 start + static_cast<int64_t>(o.duration_s * 1e9) - 1);
      threads.emplace_back(open_loop, std::ref(s), std::cref(o), std::cref(copy_sql), i, share, start, limit,
                           warmup_until);
    }
  }

  std::atomic<bool> finished{false};
  std::ofstream timeline;
  if (!o.timeline.empty()) {
    timeline.open(o.timeline);
    if (!timeline) {
      std::fprintf(stderr, "floor-client: cannot write %s\n", o.timeline.c_str());
      return 1;
    }
    timeline << "seconds,acked_per_s\n";
  }
  std::thread progress([&] {
    int64_t last_t = start;
    uint64_t last = 0;
    while (!finished.load()) {
      std::this_thread::sleep_for(200ms);
      if (now_ns() - last_t < 1'000'000'000) continue;
      uint64_t committed = 0;
      for (auto& s : streams) committed += s->committed.load();
      int64_t t = now_ns();
      double per_s = static_cast<double>(committed - last) * 1e9 / static_cast<double>(t - last_t);
      if (!o.quiet) std::fprintf(stderr, "  %6.1f s  committed %10llu  %9.0f rows/s\n", (t - start) / 1e9,
                                 static_cast<unsigned long long>(committed), per_s);
      if (timeline.is_open()) timeline << (t - start) / 1e9 << "," << per_s << "\n";
      last_t = t;
      last = committed;
    }
  });
  for (auto& t : threads) t.join();
  finished.store(true);
  progress.join();

  uint64_t committed = 0;
  int64_t last_commit = start;
  evpipe::load::latency_histogram lat;
  evpipe::load::latency_timeline per_second(start);
  std::string error;
  for (auto& s : streams) {
    committed += s->committed.load();
    last_commit = std::max(last_commit, s->last_commit);
    lat.merge(s->latencies);
    if (s->per_second) per_second.merge(*s->per_second);
    if (!s->error.empty() && error.empty()) error = s->error;
    PQfinish(s->conn);
  }
  double secs = static_cast<double>(last_commit - start) / 1e9;
  double throughput = secs > 0 ? committed / secs : 0;
  double p50 = lat.percentile(50) / 1e6, p90 = lat.percentile(90) / 1e6, p99 = lat.percentile(99) / 1e6,
         p999 = lat.percentile(99.9) / 1e6, pmax = lat.max() / 1e6;
  std::printf("floor-client  %s  connections %d  rate %s  run %s\n", o.table.c_str(), k, o.rate.c_str(),
              o.run_id.c_str());
  std::printf("  committed           %12llu\n", static_cast<unsigned long long>(committed));
  std::printf("  throughput          %12.0f rows/s (committed, over %.2f s)\n", throughput, secs);
  std::printf("  latency ms  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n", p50, p90, p99, p999, pmax);
  if (!o.json.empty()) {
    std::ofstream j(o.json);
    j << "{\"sent\":" << committed << ",\"acked\":" << committed << ",\"connections\":" << k
      << ",\"seconds\":" << secs << ",\"throughput\":" << throughput
      // evpipe-load's field; here the whole run, the rows' generation included.
      << ",\"cpu_seconds\":" << evpipe::load::process_cpu_seconds()
      << ",\"latency_ms\":{\"p50\":" << p50
      << ",\"p90\":" << p90 << ",\"p99\":" << p99 << ",\"p99_9\":" << p999 << ",\"max\":" << pmax << "}}\n";
  }
  if (!o.hdr.empty()) std::ofstream(o.hdr) << lat.distribution();
  if (!o.latency_timeline.empty() && !per_second.write(o.latency_timeline)) {
    std::fprintf(stderr, "floor-client: cannot write %s\n", o.latency_timeline.c_str());
    return 1;
  }
  if (!error.empty()) {
    std::fprintf(stderr, "floor-client: COPY into %s failed: %s", o.table.c_str(), error.c_str());
    return 1;
  }
  return 0;
}
