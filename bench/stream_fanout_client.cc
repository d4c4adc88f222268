// WebSocket clients of evpipe's stream for perf/stream_fanout.sh (not a
// Google Benchmark: an end-to-end helper). N clients, one thread each, each
// subscribes to everything with since = "now", optionally reads at most R
// events/s (a slow client), and stops once it has E events or at the timeout.
//
// Prints one line per client on stdout: "client <i> events <n> in_order <0|1>
// ready_ms <t>", and writes the receive times for the latency figures:
//   --per-tx FILE: "tx recv_us count" for each (client, transaction): the
//                  last receive time of the transaction's events at that
//                  client (an upper bound for each of them), and how many;
//   --events FILE: "tx recv_us" for every event of client 0 (exact).
// recv_us is CLOCK_REALTIME in microseconds, to be compared with
// pg_xact_commit_timestamp() of the row's transaction on the same host.
//
//   stream_fanout_client --port P --clients N --expect E [--read-rate R]
//                        [--timeout S] [--ready-file F] [--per-tx F] [--events F]

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;

namespace {

struct options {
  uint16_t port = 9465;
  int clients = 1;
  uint64_t expect = 0;
  double read_rate = 0;  // events/s per client; 0: as fast as they come
  int timeout_s = 300;
  std::string ready_file, per_tx_file, events_file;
};

int64_t realtime_us() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

struct tx_record {
  uint64_t tx;
  int64_t last_recv_us;
  uint32_t count;
};

struct client_result {
  uint64_t events = 0;
  bool in_order = true;
  int64_t ready_ms = -1;
  std::vector<tx_record> per_tx;
  std::vector<std::pair<uint64_t, int64_t>> events_seen;  // client 0 only
  std::string error;
};

void run_client(const options& o, int index, client_result& r, std::atomic<int>& ready,
                std::chrono::steady_clock::time_point start, std::atomic<int>& fd) {
  try {
    asio::io_context ioc;
    websocket::stream<asio::ip::tcp::socket> ws(ioc);
    ws.next_layer().connect({asio::ip::make_address("127.0.0.1"), o.port});
    ws.read_message_max(1 << 20);
    ws.handshake("127.0.0.1", "/v1/stream");
    ws.write(asio::buffer(std::string(R"({"type":"subscribe","since":"now"})")));
    beast::flat_buffer buf;
    std::string last;
    auto read_start = std::chrono::steady_clock::time_point{};
    fd = ws.next_layer().native_handle();  // main() shuts it down at the timeout
    while (r.events < o.expect) {
      beast::error_code ec;
      buf.consume(buf.size());
      ws.read(buf, ec);
      if (ec) {
        r.error = ec.message();
        break;
      }
      int64_t now_us = realtime_us();
      std::string_view m(static_cast<const char*>(buf.data().data()), buf.size());
      if (m.find("\"type\":\"caught_up\"") != std::string_view::npos && r.ready_ms < 0) {
        r.ready_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
        ready.fetch_add(1);
        continue;
      }
      auto at = m.find("\"position\":\"1-");
      if (at == std::string_view::npos || m.find("\"type\":\"event\"") == std::string_view::npos) continue;
      std::string_view pos = m.substr(at + 12, 34);
      if (!last.empty() && !(pos > std::string_view(last))) r.in_order = false;
      last.assign(pos);
      uint64_t tx = std::strtoull(std::string(pos.substr(2, 16)).c_str(), nullptr, 16);
      if (r.per_tx.empty() || r.per_tx.back().tx != tx) r.per_tx.push_back({tx, now_us, 0});
      r.per_tx.back().last_recv_us = now_us;
      ++r.per_tx.back().count;
      if (index == 0 && !o.events_file.empty()) r.events_seen.emplace_back(tx, now_us);
      ++r.events;
      if (o.read_rate > 0) {
        // A slow reader: no faster than read_rate events/s from its first event.
        if (r.events == 1) read_start = std::chrono::steady_clock::now();
        auto due = read_start + std::chrono::microseconds(int64_t(1e6 * double(r.events) / o.read_rate));
        std::this_thread::sleep_until(due);
      }
    }
    fd = -1;  // closed with `ws` below: not to be shut down by number any more
  } catch (const std::exception& e) {
    r.error = e.what();
  }
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--port") o.port = static_cast<uint16_t>(std::stoi(v));
    else if (k == "--clients") o.clients = std::stoi(v);
    else if (k == "--expect") o.expect = std::stoull(v);
    else if (k == "--read-rate") o.read_rate = std::stod(v);
    else if (k == "--timeout") o.timeout_s = std::stoi(v);
    else if (k == "--ready-file") o.ready_file = v;
    else if (k == "--per-tx") o.per_tx_file = v;
    else if (k == "--events") o.events_file = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  std::vector<client_result> results(o.clients);
  std::atomic<int> ready{0};
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  std::vector<std::atomic<int>> fds(o.clients);
  std::atomic<int> done{0};
  for (int i = 0; i < o.clients; ++i) {
    fds[i] = -1;
    threads.emplace_back([&, i] {
      run_client(o, i, results[i], ready, start, fds[i]);
      done.fetch_add(1);
    });
  }
  // At the timeout, every client still reading is cut off.
  std::thread watchdog([&] {
    auto deadline = start + std::chrono::seconds(o.timeout_s);
    while (done.load() < o.clients && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (auto& fd : fds) {
      if (int f = fd.load(); f >= 0 && done.load() < o.clients) ::shutdown(f, SHUT_RDWR);
    }
  });
  // Tells the script when every client is subscribed (caught_up received).
  if (!o.ready_file.empty()) {
    while (ready.load() < o.clients && std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::ofstream(o.ready_file) << ready.load() << "\n";
  }
  for (auto& t : threads) t.join();
  watchdog.join();
  int failed = 0;
  for (int i = 0; i < o.clients; ++i) {
    const auto& r = results[i];
    std::printf("client %d events %llu in_order %d ready_ms %lld%s%s\n", i, static_cast<unsigned long long>(r.events),
                r.in_order ? 1 : 0, static_cast<long long>(r.ready_ms), r.error.empty() ? "" : " error ",
                r.error.c_str());
    if (r.events != o.expect || !r.in_order) ++failed;
  }
  if (!o.per_tx_file.empty()) {
    std::ofstream f(o.per_tx_file);
    for (const auto& r : results) {
      for (const auto& t : r.per_tx) f << t.tx << ' ' << t.last_recv_us << ' ' << t.count << '\n';
    }
  }
  if (!o.events_file.empty()) {
    std::ofstream f(o.events_file);
    for (const auto& [tx, us] : results[0].events_seen) f << tx << ' ' << us << '\n';
  }
  return failed == 0 ? 0 : 1;
}
