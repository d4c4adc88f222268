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
// With --dsn it is the floor of what the stream must do besides: the events
// are the rows something else (evpipe's ingest) commits to events_mirror, and
// every tick it reads the new ones with one statement, the stream's minimal
// tail read (position order, below the visibility horizon, after the last
// row read: docs/read.md), then writes them as above. Positions are then the
// rows' own, and the clients measure commit to receive as they do for evpipe
// (per transaction, against pg_xact_commit_timestamp). It stops after
// --count rows.
//
// A client that stops reading stalls the others (the writes block): a floor,
// not a server. Prints its own CPU seconds at the end.
//
//   fanout-floor --port P --clients N --count C [--rate R | --dsn DSN]
//                [--tick-us T] [--payload-bytes B]

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <CLI/CLI.hpp>
#include <libpq-fe.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "load/event_generator.h"
#include "load/cpu_time.h"
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

// The table's rows past the last one read, below the horizon, in position
// order (the stream's tail read without its filters and extra columns).
class tail_reader {
 public:
  explicit tail_reader(const std::string& dsn) : conn_(PQconnectdb(dsn.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) fail("connect");
    PGresult* r = PQprepare(conn_, "tail",
                            // (tx::text named apart: ORDER BY tx would sort the text.)
                            "SELECT tx::text AS tx_text, id, topic, payload::text FROM events_mirror"
                            " WHERE tx < pg_snapshot_xmin(pg_current_snapshot())"
                            " AND (tx, id) > ($1::xid8, $2::bigint) AND tx >= $1::xid8"
                            " ORDER BY tx, id LIMIT 10000",
                            2, nullptr);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) fail("prepare");
    PQclear(r);
  }
  ~tail_reader() { PQfinish(conn_); }
  tail_reader(const tail_reader&) = delete;
  tail_reader& operator=(const tail_reader&) = delete;

  // Appends a WebSocket frame per new row to `block`; returns how many.
  uint64_t read(std::string& block, std::string& message) {
    const std::string tx = std::to_string(last_.tx), id = std::to_string(last_.id);
    const char* params[2] = {tx.c_str(), id.c_str()};
    PGresult* r = PQexecPrepared(conn_, "tail", 2, params, nullptr, nullptr, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) fail("read");
    const int n = PQntuples(r);
    for (int i = 0; i < n; ++i) {
      evpipe::read::event_row row;
      row.pos = {std::strtoull(PQgetvalue(r, i, 0), nullptr, 10), std::strtoll(PQgetvalue(r, i, 1), nullptr, 10)};
      row.topic = {PQgetvalue(r, i, 2), static_cast<size_t>(PQgetlength(r, i, 2))};
      row.payload = {PQgetvalue(r, i, 3), static_cast<size_t>(PQgetlength(r, i, 3))};
      message.clear();
      evpipe::read::append_event_json(message, row);
      evpipe::read::append_ws_text_frame(block, message);
      last_ = row.pos;
    }
    PQclear(r);
    return static_cast<uint64_t>(n);
  }

 private:
  [[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "fanout-floor: %s: %s", what, PQerrorMessage(conn_));
    std::exit(1);
  }
  PGconn* conn_;
  evpipe::read::position last_ = evpipe::read::position::start();
};

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
  std::string dsn;
  app.add_option("--dsn", dsn, "read the events from events_mirror (PostgreSQL DSN) instead of making them")
      ->excludes("--rate")
      ->excludes("--payload-bytes");
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

  auto write_all = [&](const std::string& block) {
    for (auto& s : socks) {
      if (!send_all(s.native_handle(), block)) {
        std::fprintf(stderr, "fanout-floor: a client closed before the last event\n");
        std::exit(1);
      }
    }
  };
  std::string block, event, message;
  uint64_t sent = 0, writes = 0;
  if (!dsn.empty()) {
    tail_reader tail(dsn);
    while (sent < count) {
      block.clear();
      if (const uint64_t n = tail.read(block, message); n > 0) {
        sent += n;
        write_all(block);
        ++writes;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(tick_us));
    }
  } else {
    evpipe::load::event_generator gen({.run_id = "fanout-floor", .payload_bytes = payload_bytes});
    const int64_t start = steady_ns();
    const int64_t realtime_at_start = realtime_ns();
    evpipe::load::rate_pacer pacer(start, rate);
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
        write_all(block);
        ++writes;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(tick_us));
    }
  }
  // The clients close once they have every event.
  char buf[512];
  for (auto& s : socks) {
    while (::recv(s.native_handle(), buf, sizeof buf, 0) > 0) {
    }
  }
  std::printf("fanout-floor events %llu clients %d writes_per_client %llu cpu_s %.2f\n",
              static_cast<unsigned long long>(count), clients, static_cast<unsigned long long>(writes),
              evpipe::load::process_cpu_seconds());
  return 0;
}
