// tcp-floor: the least a server can do with evpipe-load's TCP stream while
// keeping evpipe's promise (every line acked only after its row commits). It
// is the floor for evpipe's whole TCP path: the same load generator, the same
// loopback sockets and acks, the same table and binary COPY, and nothing
// else. floor-client (perf/floor_client.cc) makes its events in-process; the
// difference between the two is what the sockets, the acks and the load
// generator cost the machine, and the difference between this and evpipe is
// evpipe's own.
//
// K streams, each with its own libpq connection; client connection c is
// served by stream c % K. A stream has two threads, so that it reads while it
// commits (as evpipe does, and as any server that cares about its rate would):
//   reader: wait until one of its sockets has bytes (poll) -> read what each
//     holds -> frame the complete lines into the next COPY (at most
//     --max-batch-bytes of them: then it waits for the writer);
//   writer: take everything framed so far -> one binary COPY (topic, payload),
//     which commits on its own -> write each client {"ack":N}\n, N its lines
//     committed so far.
// No parsing beyond finding each line's "topic", no validation, dedup,
// routing or metrics, and no backpressure but --max-batch-bytes: jsonb checks
// the payload, and a line it refuses fails the run.
//
// It stops once --clients connections have come and gone (or at SIGINT or
// SIGTERM) and prints rows, commits, the rate from the first byte read to the
// last commit, and its CPU time.

#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "perf/copy_rows.h"
#include "stages/batch.h"

namespace {

struct options {
  std::string dsn, listen = "127.0.0.1:0", table = "events_mirror", json, port_file;
  int connections = 2;
  uint64_t clients = 0;
  size_t max_batch_bytes = 16 << 20;
  bool quiet = false;
};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::atomic<bool> stop_requested{false};
extern "C" void on_signal(int) { stop_requested.store(true); }

struct shared_state {
  std::atomic<uint64_t> rows{0}, commits{0}, closed{0};
  std::atomic<int64_t> first_read{0}, last_commit{0};
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  std::string error;
  void fail(const std::string& why) {
    std::lock_guard lock(error_mu);
    if (!failed.exchange(true)) error = why;
  }
};

// One client connection. The stream's reader reads and frames it; its writer
// acks it and, after the end of its stream, closes it once all is acked.
struct client {
  int fd = -1;
  std::string buf;        // reader: bytes read, not yet a whole line
  bool eof = false;       // reader: nothing more will come
  uint64_t acked = 0;     // writer: lines committed and acked
  bool gone = false;      // writer: acks can no longer be sent
};

// Lines of one client taken into the COPY being built; `last`: its stream
// has ended, so it is closed once these are acked.
struct due {
  std::shared_ptr<client> c;
  uint64_t lines = 0;
  bool last = false;
};

// One stream: a reader thread that reads its clients' sockets and frames
// their lines into the next COPY while its writer thread COPYs, commits and
// acks the one before, as a server that keeps reading during a commit does.
class stream {
 public:
  stream(shared_state& sh, const options& o) : sh_(sh), o_(o), wake_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~stream() {
    stop();
    if (conn_ != nullptr) PQfinish(conn_);
    for (auto& c : clients_) ::close(c->fd);
    ::close(wake_);
  }

  bool connect(std::string& why) {
    conn_ = PQconnectdb(o_.dsn.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) {
      why = PQerrorMessage(conn_);
      return false;
    }
    PQclear(PQexec(conn_, "SET application_name = 'evpipe-tcp-floor'"));
    return true;
  }
  void start() {
    reader_ = std::thread([this] { read_loop(); });
    writer_ = std::thread([this] { write_loop(); });
  }
  // From the accepting thread.
  void add(int fd) {
    {
      std::lock_guard lock(mu_);
      incoming_.push_back(fd);
    }
    wake();
  }
  // Ends the reader, then the writer once it has committed and acked what
  // the reader framed.
  void stop() {
    stopping_.store(true);
    wake();
    notify(room_);
    if (reader_.joinable()) reader_.join();
    writer_stopping_.store(true);
    notify(ready_);
    if (writer_.joinable()) writer_.join();
  }

 private:
  bool done() const { return stopping_.load() || sh_.failed.load(); }
  // Under the lock, so that a waiter between its check and its wait cannot miss it.
  void notify(std::condition_variable& cv) {
    {
      std::lock_guard lock(mu_);
    }
    cv.notify_all();
  }
  void wake() {
    const uint64_t one = 1;
    (void)::write(wake_, &one, sizeof one);
  }

  void read_loop() {
    std::vector<pollfd> fds;
    while (!done()) {
      {
        // Backpressure: no more reading while a whole batch waits for the writer.
        std::unique_lock lock(mu_);
        room_.wait(lock, [&] { return pending_.size() < o_.max_batch_bytes || done(); });
        for (int fd : incoming_) {
          auto c = std::make_shared<client>();
          c->fd = fd;
          clients_.push_back(std::move(c));
        }
        incoming_.clear();
      }
      if (done()) break;
      fds.assign(1, pollfd{wake_, POLLIN, 0});
      for (auto& c : clients_) fds.push_back(pollfd{c->fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 200) < 0 && errno != EINTR) {
        sh_.fail(std::string("poll: ") + std::strerror(errno));
        break;
      }
      if (fds[0].revents != 0) {
        uint64_t n;
        (void)::read(wake_, &n, sizeof n);
      }
      bool any = false;
      for (size_t i = 0; i + 1 < fds.size(); ++i) {
        if (fds[i + 1].revents != 0) any |= read_all(*clients_[i]);
      }
      if (!any) continue;
      {
        std::lock_guard lock(mu_);
        for (auto& c : clients_) {
          if (pending_.empty()) pending_.append(evpipe::stages::copy_format::header);
          const uint64_t n = take_lines(*c, pending_);
          if (n > 0 || c->eof) due_.push_back(due{c, n, c->eof});
        }
      }
      // An ended client is the writer's now (it closes it once acked).
      std::erase_if(clients_, [](const std::shared_ptr<client>& c) { return c->eof; });
      ready_.notify_one();
    }
    ready_.notify_one();
  }

  // What the socket holds now, up to 1 MiB a round; true when anything
  // came (or the stream ended).
  bool read_all(client& c) {
    constexpr size_t chunk = 64 << 10, most = 1 << 20;
    size_t got = 0;
    while (got < most) {
      const size_t had = c.buf.size();
      c.buf.resize(had + chunk);
      const ssize_t n = ::recv(c.fd, c.buf.data() + had, chunk, MSG_DONTWAIT);
      c.buf.resize(had + static_cast<size_t>(std::max<ssize_t>(n, 0)));
      if (n > 0) {
        int64_t zero = 0;
        sh_.first_read.compare_exchange_strong(zero, now_ns());
        got += static_cast<size_t>(n);
        if (static_cast<size_t>(n) < chunk) break;  // drained
        continue;
      }
      if (n == 0) {
        c.eof = true;  // a clean end: an unterminated last line is a line too
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        c.buf.clear();  // reset or broken: a cut-off last line is no event (the client resends it)
        c.eof = true;
      }
      break;
    }
    return got > 0 || c.eof;
  }

  // Appends a row for each complete line of the client's buffer (and, at the
  // end of its stream, its unterminated last one); returns how many lines
  // (an empty one counts for the ack, as evpipe acks it as a dead letter;
  // evpipe-load sends none).
  uint64_t take_lines(client& c, std::string& data) {
    size_t start = 0;
    uint64_t n = 0;
    for (;;) {
      const size_t nl = c.buf.find('\n', start);
      const bool last = nl == std::string::npos;
      if (last && !(c.eof && start < c.buf.size())) break;
      std::string_view line(c.buf.data() + start, (last ? c.buf.size() : nl) - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!line.empty()) {
        evpipe::stages::copy_format::append_event_row(data, evpipe::perf::topic_of(line, "evpipe/load"), line);
        ++rows_;
      }
      ++n;
      start = last ? c.buf.size() : nl + 1;
    }
    c.buf.erase(0, start);
    return n;
  }

  void write_loop() {
    const std::string sql = "COPY " + o_.table + " (topic, payload) FROM STDIN (FORMAT binary)";
    std::string data, why;
    std::vector<due> dues;
    for (;;) {
      uint64_t rows = 0;
      {
        std::unique_lock lock(mu_);
        ready_.wait(lock, [&] { return !due_.empty() || writer_stopping_.load() || sh_.failed.load(); });
        if (due_.empty() || sh_.failed.load()) return;
        data.clear();
        data.swap(pending_);
        dues.clear();
        dues.swap(due_);
        rows = rows_;
        rows_ = 0;
      }
      room_.notify_one();
      if (rows > 0) {
        data.append(evpipe::stages::copy_format::trailer);
        if (!evpipe::perf::copy_commit(conn_, sql, data, why)) {
          sh_.fail("COPY into " + o_.table + " failed: " + why);
          notify(room_);
          return;
        }
        sh_.rows.fetch_add(rows);
        sh_.commits.fetch_add(1);
        sh_.last_commit.store(now_ns());
      }
      for (size_t i = 0; i < dues.size(); ++i) {
        // A client's entries of this batch together: its last one acks them all.
        bool later = false;
        for (size_t j = i + 1; j < dues.size() && !later; ++j) later = dues[j].c == dues[i].c;
        if (later) continue;
        uint64_t lines = 0;
        for (size_t j = 0; j <= i; ++j) lines += dues[j].c == dues[i].c ? dues[j].lines : 0;
        dues[i].c->acked += lines;
        if (lines > 0) ack(*dues[i].c);
        if (dues[i].last) {
          ::close(dues[i].c->fd);
          sh_.closed.fetch_add(1);
        }
      }
    }
  }

  // A client that reads no acks for 5 s, or went away, is sent no more.
  void ack(client& c) {
    if (c.gone) return;
    const std::string text = "{\"ack\":" + std::to_string(c.acked) + "}\n";
    const int64_t deadline = now_ns() + 5'000'000'000;
    size_t off = 0;
    while (off < text.size()) {
      const ssize_t n = ::send(c.fd, text.data() + off, text.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        off += static_cast<size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) && now_ns() < deadline &&
                 !sh_.failed.load()) {
        pollfd p{c.fd, POLLOUT, 0};
        (void)::poll(&p, 1, 100);
      } else {
        c.gone = true;
        return;
      }
    }
  }

  shared_state& sh_;
  const options& o_;
  PGconn* conn_ = nullptr;
  int wake_;
  std::atomic<bool> stopping_{false};         // the reader ends
  std::atomic<bool> writer_stopping_{false};  // the writer ends once nothing is due
  std::thread reader_, writer_;
  std::mutex mu_;
  std::condition_variable ready_;  // the writer waits for lines
  std::condition_variable room_;   // the reader waits for the writer to take a full batch
  std::vector<int> incoming_;      // accepted, not yet the reader's
  std::string pending_;            // the next COPY: header and rows
  uint64_t rows_ = 0;              // rows in pending_
  std::vector<due> due_;           // lines in pending_, by client
  std::vector<std::shared_ptr<client>> clients_;  // reader: the clients it reads
};

int listen_on(const std::string& addr, uint16_t& port, std::string& why) {
  const auto colon = addr.rfind(':');
  if (colon == std::string::npos) {
    why = "--listen takes HOST:PORT";
    return -1;
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  if (::inet_pton(AF_INET, addr.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
    why = "--listen: not an IPv4 address: " + addr.substr(0, colon);
    return -1;
  }
  int port_number = -1;
  try {
    port_number = std::stoi(addr.substr(colon + 1));
  } catch (const std::exception&) {
  }
  if (port_number < 0 || port_number > 65535) {
    why = "--listen: not a port: " + addr.substr(colon + 1);
    return -1;
  }
  sa.sin_port = htons(static_cast<uint16_t>(port_number));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    why = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  const int on = 1;
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 128) != 0) {
    why = "cannot listen on " + addr + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  socklen_t len = sizeof sa;
  (void)::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  port = ntohs(sa.sin_port);
  return fd;
}

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  CLI::App cli{
      "tcp-floor: the least a server can do with evpipe-load's TCP stream: K libpq connections, each serving its "
      "share of the client connections by reading what they sent, one binary COPY (topic, payload) of the complete "
      "lines into events_mirror, which commits, then {\"ack\":N} to each client. The floor for evpipe's whole TCP "
      "path (perf/run.sh)"};
  cli.add_option("--dsn", o.dsn, "libpq connection string of the database holding the table")->required();
  cli.add_option("--listen", o.listen, "HOST:PORT to accept evpipe-load's connections on (port 0: any free one)")
      ->default_val("127.0.0.1:0");
  cli.add_option("--table", o.table, "table with evpipe's events_mirror columns (topic, payload)")
      ->default_val("events_mirror");
  cli.add_option("--connections", o.connections, "libpq connections (K streams); client c is served by c % K")
      ->default_val(2)
      ->check(CLI::Range(1, 256));
  cli.add_option("--clients", o.clients, "stop once this many client connections have come and gone (0: at a signal)")
      ->default_val(0);
  cli.add_option("--max-batch-bytes", o.max_batch_bytes, "most bytes a stream reads for one COPY")
      ->default_val(16 << 20)
      ->check(CLI::Range(size_t{1} << 16, size_t{1} << 30));
  cli.add_option("--port-file", o.port_file, "write the port listened on to FILE once accepting");
  cli.add_option("--json", o.json, "also write the figures as JSON to FILE");
  cli.add_flag("--quiet", o.quiet, "no summary on stdout");
  CLI11_PARSE(cli, argc, argv);

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  shared_state sh;
  std::vector<std::unique_ptr<stream>> streams;
  for (int i = 0; i < o.connections; ++i) {
    auto s = std::make_unique<stream>(sh, o);
    std::string why;
    if (!s->connect(why)) {
      std::fprintf(stderr, "tcp-floor: cannot connect to PostgreSQL: %s", why.c_str());
      return 1;
    }
    streams.push_back(std::move(s));
  }
  uint16_t port = 0;
  std::string why;
  const int lfd = listen_on(o.listen, port, why);
  if (lfd < 0) {
    std::fprintf(stderr, "tcp-floor: %s\n", why.c_str());
    return 1;
  }
  if (!o.port_file.empty()) std::ofstream(o.port_file) << port << "\n";
  const double cpu0 = cpu_seconds();
  for (auto& s : streams) s->start();

  uint64_t accepted = 0;
  while (!stop_requested.load() && !sh.failed.load()) {
    if (o.clients > 0 && accepted >= o.clients && sh.closed.load() >= o.clients) break;
    pollfd p{lfd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    const int on = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    streams[accepted % streams.size()]->add(fd);
    ++accepted;
  }
  stop_requested.store(true);
  for (auto& s : streams) s->stop();
  ::close(lfd);
  const double cpu = cpu_seconds() - cpu0;

  const uint64_t rows = sh.rows.load();
  const int64_t first = sh.first_read.load(), last = sh.last_commit.load();
  const double secs = first > 0 && last > first ? static_cast<double>(last - first) / 1e9 : 0;
  const double rate = secs > 0 ? static_cast<double>(rows) / secs : 0;
  if (!o.quiet) {
    std::printf("tcp-floor  %s  connections %d  clients %llu\n", o.table.c_str(), o.connections,
                static_cast<unsigned long long>(accepted));
    std::printf("  committed           %12llu rows in %llu commits\n", static_cast<unsigned long long>(rows),
                static_cast<unsigned long long>(sh.commits.load()));
    std::printf("  throughput          %12.0f rows/s (first byte read to last commit, %.2f s)\n", rate, secs);
    std::printf("  cpu                 %12.2f s (%.0f ns a row)\n", cpu, rows ? cpu * 1e9 / static_cast<double>(rows) : 0);
  }
  if (!o.json.empty()) {
    std::ofstream(o.json) << "{\"rows\":" << rows << ",\"commits\":" << sh.commits.load() << ",\"clients\":" << accepted
                          << ",\"seconds\":" << secs << ",\"throughput\":" << rate << ",\"cpu_seconds\":" << cpu
                          << "}\n";
  }
  if (sh.failed.load()) {
    std::fprintf(stderr, "tcp-floor: %s\n", sh.error.c_str());
    return 1;
  }
  return 0;
}
