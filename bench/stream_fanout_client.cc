// WebSocket clients of evpipe's stream for perf/stream_fanout.sh (not a
// Google Benchmark: an end-to-end helper). N clients, one thread each (plain
// sockets and RFC 6455 framing: a few lines, and cheap per message), each
// subscribes to everything with since = "now", optionally reads at most R
// events/s (a slow client), and stops once it has E events or at the timeout.
//
// Prints one line per client on stdout: "client <i> events <n> in_order <0|1>
// ready_ms <t>", then "clients cpu_s <s>" (user + system of all of them),
// and writes the receive times for the latency figures:
//   --per-tx FILE: "tx recv_us count" for each (client, transaction): the
//                  last receive time of the transaction's events at that
//                  client (an upper bound for each of them), and how many;
//   --events FILE: "tx recv_us" for every event of client 0 (exact).
// recv_us is CLOCK_REALTIME in microseconds, to be compared with
// pg_xact_commit_timestamp() of the row's transaction on the same host.
// With --position-time (the server is perf/fanout_floor.cc, whose positions
// carry each event's intended send time, CLOCK_REALTIME µs, where evpipe's
// carry the transaction id) each client records receive minus that time in
// a histogram instead, and one line says its percentiles:
//   "latency all p50 <ms> p99 <ms> max <ms> client0 p50 <ms> p99 <ms> max <ms>".
//
//   stream_fanout_client --port P --clients N --expect E [--read-rate R]
//                        [--timeout S] [--ready-file F] [--per-tx F] [--events F]
//                        [--position-time 1]

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "load/latency_histogram.h"
#include "load/cpu_time.h"

namespace {

struct options {
  uint16_t port = 9465;
  int clients = 1;
  uint64_t expect = 0;
  double read_rate = 0;  // events/s per client; 0: as fast as they come
  int timeout_s = 300;
  std::string ready_file, per_tx_file, events_file;
  bool position_time = false;  // the position's tx is a send time (µs): record latency directly
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
  evpipe::load::latency_histogram latency;                // with --position-time
  std::string error;
};

// A masked client frame (RFC 6455 5.3; the key need not be secret here).
std::string client_frame(uint8_t opcode, std::string_view payload) {
  std::string f;
  f += static_cast<char>(0x80 | opcode);
  if (payload.size() < 126) {
    f += static_cast<char>(0x80 | payload.size());
  } else {
    f += static_cast<char>(0x80 | 126);
    f += static_cast<char>(payload.size() >> 8);
    f += static_cast<char>(payload.size() & 0xff);
  }
  const char key[4] = {0x12, 0x34, 0x56, 0x78};
  f.append(key, 4);
  for (size_t i = 0; i < payload.size(); ++i) f += static_cast<char>(payload[i] ^ key[i & 3]);
  return f;
}

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// The client reads the socket in large chunks and parses frames in place
// (no per-message copy or allocation): it shares the 2 cores with evpipe, so
// its own cost per message is kept small.
void run_client(const options& o, int index, client_result& r, std::atomic<int>& ready,
                std::chrono::steady_clock::time_point start, std::atomic<int>& fd_out) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(o.port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    r.error = std::string("connect: ") + std::strerror(errno);
    ::close(fd);
    return;
  }
  fd_out = fd;  // main() shuts it down at the timeout
  std::string in;
  auto fail = [&](std::string why) {
    r.error = std::move(why);
    fd_out = -1;
    ::close(fd);
  };
  if (!send_all(fd, "GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")) {
    return fail("cannot send the upgrade");
  }
  std::vector<char> buf(1 << 18);
  while (in.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) return fail("no upgrade response");
    in.append(buf.data(), static_cast<size_t>(n));
  }
  if (in.rfind("HTTP/1.1 101", 0) != 0) return fail("upgrade refused: " + in.substr(0, in.find('\r')));
  in.erase(0, in.find("\r\n\r\n") + 4);
  if (!send_all(fd, client_frame(1, R"({"type":"subscribe","since":"now"})"))) return fail("cannot subscribe");

  std::string last;
  auto read_start = std::chrono::steady_clock::time_point{};
  constexpr std::string_view event_prefix = R"({"type":"event","position":")";
  constexpr std::string_view caught_up_prefix = R"({"type":"caught_up")";
  size_t off = 0;
  while (r.events < o.expect) {
    // Complete frames in `in` from `off`.
    const size_t avail = in.size() - off;
    const auto* p = reinterpret_cast<const unsigned char*>(in.data()) + off;
    size_t head = 2;
    uint64_t len = avail >= 2 ? (p[1] & 0x7f) : 0;
    if (avail >= 4 && len == 126) {
      len = (uint64_t{p[2]} << 8) | p[3];
      head = 4;
    } else if (avail >= 10 && len == 127) {
      len = 0;
      for (int i = 0; i < 8; ++i) len = (len << 8) | p[2 + i];
      head = 10;
    }
    const bool complete = avail >= 2 && !(len == 126 && head == 2) && !(len == 127 && head == 2) && avail >= head + len;
    if (!complete) {
      if (off > 0) {
        in.erase(0, off);
        off = 0;
      }
      ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) return fail(n == 0 ? "closed by the server" : std::strerror(errno));
      in.append(buf.data(), static_cast<size_t>(n));
      continue;
    }
    const int opcode = p[0] & 0x0f;
    std::string_view m(in.data() + off + head, len);
    off += head + len;
    if (opcode == 9) {  // ping: answered, as a browser does
      if (!send_all(fd, client_frame(10, m))) return fail("cannot answer a ping");
      continue;
    }
    if (opcode == 8) return fail("closed by the server");
    if (opcode != 1) continue;
    int64_t now_us = realtime_us();
    if (m.rfind(caught_up_prefix, 0) == 0) {
      if (r.ready_ms < 0) {
        r.ready_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
        ready.fetch_add(1);
      }
      continue;
    }
    if (m.rfind(event_prefix, 0) != 0 || m.size() < event_prefix.size() + 34) continue;
    std::string_view pos = m.substr(event_prefix.size(), 34);
    if (!last.empty() && !(pos > std::string_view(last)) && r.in_order) {
      r.in_order = false;
      r.error = "out of order after event " + std::to_string(r.events) + ": " + last + " then " + std::string(pos);
    }
    last.assign(pos);
    uint64_t tx = 0;
    for (char c : pos.substr(2, 16)) tx = (tx << 4) | static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
    if (o.position_time) {
      r.latency.record((now_us - static_cast<int64_t>(tx)) * 1000);
    } else {
      if (r.per_tx.empty() || r.per_tx.back().tx != tx) r.per_tx.push_back({tx, now_us, 0});
      r.per_tx.back().last_recv_us = now_us;
      ++r.per_tx.back().count;
      if (index == 0 && !o.events_file.empty()) r.events_seen.emplace_back(tx, now_us);
    }
    ++r.events;
    if (o.read_rate > 0) {
      // A slow reader: no faster than read_rate events/s from its first event.
      // It sleeps once it is a millisecond ahead, not after every event: a
      // sleep an event cost the client about 20 us of CPU an event, taken
      // from the machine that ingests.
      if (r.events == 1) read_start = std::chrono::steady_clock::now();
      auto due = read_start + std::chrono::microseconds(int64_t(1e6 * double(r.events) / o.read_rate));
      if (due - std::chrono::steady_clock::now() > std::chrono::milliseconds(1)) std::this_thread::sleep_until(due);
    }
  }
  fd_out = -1;  // not to be shut down by number any more
  ::close(fd);
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
    else if (k == "--position-time") o.position_time = v == "1";
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
  // The clients' own CPU (all threads): they share the machine with evpipe.
  std::printf("clients cpu_s %.2f\n", evpipe::load::process_cpu_seconds());
  if (o.position_time) {
    evpipe::load::latency_histogram all;
    for (const auto& r : results) all.merge(r.latency);
    const auto& c0 = results[0].latency;
    auto ms = [](uint64_t ns) { return static_cast<double>(ns) / 1e6; };
    std::printf("latency all p50 %.2f p99 %.2f max %.2f client0 p50 %.2f p99 %.2f max %.2f\n", ms(all.percentile(50)),
                ms(all.percentile(99)), ms(all.max()), ms(c0.percentile(50)), ms(c0.percentile(99)), ms(c0.max()));
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
