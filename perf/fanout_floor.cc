// fanout-floor: the floor for the live stream's fan-out (perf/stream_fanout.sh).
// It is the least a server can do to hand the same events to N WebSocket
// clients on this machine, and nothing more: no database, no tail read, no
// filters, no per-client queue or thread. One thread, on an open-loop
// schedule (load/rate_pacer.h, as evpipe-load's), formats what is due every
// tick once, as the stream's event messages (the same fields and about the
// same size), and writes that one block to every client's socket in turn.
//
// It speaks what build/bench/stream_fanout_client needs: the WebSocket
// upgrade (Beast), a subscribe message read and ignored, "caught_up", then
// event messages whose position carries, where evpipe's carries the
// transaction id, the event's intended send time (CLOCK_REALTIME, µs); the
// client, with --position-time, records receive minus that time.
//
// A client that stops reading stalls the others (the writes block): a floor,
// not a server. Prints its own CPU seconds at the end.
//
//   fanout-floor --port P --clients N --rate R --count C [--tick-us T] [--payload-bytes B]

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "load/event_generator.h"
#include "load/rate_pacer.h"
#include "read/position.h"
#include "read/stream/stream_frames.h"

namespace {

namespace asio = boost::asio;
namespace websocket = boost::beast::websocket;

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
int64_t realtime_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"The fan-out floor: N WebSocket clients fed the same events by one thread (perf/stream_fanout.sh)"};
  uint16_t port = 0;
  int clients = 1;
  double rate = 20000;
  uint64_t count = 0;
  int64_t tick_us = 1000;
  size_t payload_bytes = 200;
  app.add_option("--port", port, "listen on 127.0.0.1:PORT")->required();
  app.add_option("--clients", clients, "clients to wait for before the clock starts")->check(CLI::PositiveNumber);
  app.add_option("--rate", rate, "events per second (open loop)")->check(CLI::PositiveNumber);
  app.add_option("--count", count, "events in all")->required()->check(CLI::PositiveNumber);
  app.add_option("--tick-us", tick_us, "one write of what is due per client at most every T µs")
      ->check(CLI::Range(100, 1000000));
  app.add_option("--payload-bytes", payload_bytes, "approximate size of an event, as evpipe-load's");
  CLI11_PARSE(app, argc, argv);

  asio::io_context ioc;
  asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), port});
  std::vector<asio::ip::tcp::socket> socks;
  std::string caught_up;
  evpipe::read::append_ws_text_frame(caught_up, R"({"type":"caught_up","position":")" +
                                                    evpipe::read::encode(evpipe::read::position::start()) + "\"}");
  for (int i = 0; i < clients; ++i) {
    asio::ip::tcp::socket s(ioc);
    acceptor.accept(s);
    websocket::stream<asio::ip::tcp::socket&> ws(s);
    boost::beast::error_code ec;
    ws.accept(ec);
    if (ec) {
      std::fprintf(stderr, "fanout-floor: client %d: handshake: %s\n", i, ec.message().c_str());
      return 1;
    }
    int one = 1;
    ::setsockopt(s.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // The client's subscribe message (read and ignored), then caught_up.
    char buf[512];
    if (::recv(s.native_handle(), buf, sizeof buf, 0) <= 0 || !send_all(s.native_handle(), caught_up)) {
      std::fprintf(stderr, "fanout-floor: client %d left before subscribing\n", i);
      return 1;
    }
    socks.push_back(std::move(s));
  }

  evpipe::load::event_generator gen({.run_id = "fanout-floor", .payload_bytes = payload_bytes});
  const int64_t start = steady_ns();
  const int64_t realtime_at_start = realtime_ns();
  evpipe::load::rate_pacer pacer(start, rate);
  std::string block, event, message;
  uint64_t sent = 0, writes = 0;
  while (sent < count) {
    const uint64_t due = std::min<uint64_t>(pacer.due(steady_ns()), count);
    if (due > sent) {
      block.clear();
      for (; sent < due; ++sent) {
        event.clear();
        gen.next(event);
        const int64_t intended_us = (realtime_at_start + (pacer.intended(sent) - start)) / 1000;
        // The position's tx is the intended send time (the stream's framing and positions: read/).
        message.assign(R"({"type":"event","position":")");
        message += evpipe::read::encode({static_cast<uint64_t>(intended_us), static_cast<int64_t>(sent + 1)});
        message += R"(","topic":"perf/stream","event":)";
        message += event;
        message += '}';
        evpipe::read::append_ws_text_frame(block, message);
      }
      for (auto& s : socks) {
        if (!send_all(s.native_handle(), block)) {
          std::fprintf(stderr, "fanout-floor: a client closed before the last event\n");
          return 1;
        }
      }
      ++writes;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(tick_us));
  }
  // The clients close once they have every event.
  char buf[512];
  for (auto& s : socks) {
    while (::recv(s.native_handle(), buf, sizeof buf, 0) > 0) {
    }
  }
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  std::printf("fanout-floor events %llu clients %d writes_per_client %llu cpu_s %.2f\n",
              static_cast<unsigned long long>(count), clients, static_cast<unsigned long long>(writes),
              static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                  static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
  return 0;
}
