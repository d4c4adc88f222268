#pragma once
// Test support for integration tests: a private schema in the test database,
// the evpipe binary run as a child process, and an NDJSON client that reads
// the {"ack":N} replies. Header-only; used by tests/integration/*.

#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <atomic>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace evpipe::testing {

using namespace std::chrono_literals;

inline std::string env_or(const char* name, const char* fallback = "") {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

// The binaries a test starts: its own build's, or the ones the environment
// names. scripts/test.sh runs the Release tree's black-box tests (ctest label
// black_box) a second time with EVPIPE_TEST_EVPIPE and EVPIPE_TEST_EVPIPE_LOAD
// pointing at the sanitizer tree's binaries.
#ifdef EVPIPE_BINARY
inline std::string evpipe_binary() { return env_or("EVPIPE_TEST_EVPIPE", EVPIPE_BINARY); }
#endif
#ifdef EVPIPE_LOAD_BINARY
inline std::string evpipe_load_binary() { return env_or("EVPIPE_TEST_EVPIPE_LOAD", EVPIPE_LOAD_BINARY); }
#endif

// Polls `done` every `poll` until it holds or `timeout` passes; returns
// done(). Tests wait on what they can observe (a row count, a metric, a log
// line) with a deadline generous enough for a loaded sanitizer build, never on
// a sleep that hopes the machine was fast enough.
template <typename F>
bool eventually(F done, std::chrono::milliseconds timeout = 60s, std::chrono::milliseconds poll = 20ms) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(poll);
  }
  return true;
}

// A loopback port nothing listens on right now, and not handed out before by
// this process: the kernel may offer one ephemeral port twice in a row, and
// a test asks for several before anything binds them.
// Gives `port` to this test process for the rest of the run. ctest -j runs
// tests side by side, and two that picked the same free port would both
// find it free (the check binds and closes at once) before either's server
// listens on it: with a few ports per test and a few hundred tests, a run
// is likely to meet that somewhere ("Address already in use" in
// TcpPipeline.RepeatedSigkill and RouteKeysPruning). A marker file per port in $TMPDIR
// (the run's scratch directory under scripts/test.sh, deleted with it)
// settles it: the process that creates the file has the port. Without
// TMPDIR, only this process's own picks are kept apart.
inline bool reserve_port(uint16_t port) {
  static const std::string dir = [] {
    std::string d = env_or("TMPDIR");
    if (d.empty()) return d;
    d += "/evpipe-test-ports";
    ::mkdir(d.c_str(), 0700);  // exists already: fine
    return d;
  }();
  if (dir.empty()) return true;
  int fd = ::open((dir + "/" + std::to_string(port)).c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

inline uint16_t free_port() {
  // Below the kernel's ephemeral range (32768-60999 here and by default):
  // a port the kernel chose (bind to port 0) is one any outgoing connection,
  // such as a test's or an evpipe's to PostgreSQL, may take as its own port
  // before the evpipe the port is for binds it ("Address already in use").
  // A random port of 20000-32767 that binds now is free of both; one that
  // reserve_port() gives is free of the other tests of the run.
  static std::set<uint16_t> given;
  static std::mt19937 rng(static_cast<unsigned>(::getpid()) * 2654435761u ^
                          static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()));
  for (;;) {
    auto port = static_cast<uint16_t>(20000 + rng() % 12768);
    if (given.count(port)) continue;
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    given.insert(port);  // taken or tried: not again in this process
    if (bound && reserve_port(port)) return port;
  }
}

// A TCP connection to 127.0.0.1:port; throws when refused.
inline int connect_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
  }
  return fd;
}

// Sets `stop` and joins `t` when the scope ends, however it ends: a failed
// ASSERT returns from the test with the thread still running, and a
// joinable std::thread's destructor would end the whole test binary.
struct stop_and_join {
  std::atomic<bool>& stop;
  std::thread& t;
  ~stop_and_join() {
    stop = true;
    if (t.joinable()) t.join();
  }
};

// A connection to the test database, with its own schema so that tests do not
// see each other's rows. dsn() is what evpipe should use.
class test_db {
 public:
  test_db() {
    base_ = env_or("EVPIPE_TEST_DSN");
    if (base_.empty()) return;
    schema_ = "it_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++);
    conn_ = PQconnectdb(base_.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(conn_));
    PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
    exec("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    exec("CREATE SCHEMA " + schema_);
    exec("SET search_path = " + schema_);
  }
  ~test_db() {
    if (conn_) {
      if (env_or("EVPIPE_TEST_KEEP").empty()) exec("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
      PQfinish(conn_);
    }
  }
  [[nodiscard]] bool available() const { return !base_.empty(); }
  // The server's port, when the DSN is a URI naming host:port (else 0).
  [[nodiscard]] uint16_t server_port() const {
    auto at = base_.find('@');
    auto colon = base_.find(':', at == std::string::npos ? base_.find("://") + 3 : at);
    if (base_.find("://") == std::string::npos || colon == std::string::npos) return 0;
    return static_cast<uint16_t>(std::atoi(base_.c_str() + colon + 1));
  }
  // dsn() with the server's port replaced (to go through a proxy).
  [[nodiscard]] std::string dsn_via(uint16_t port) const {
    std::string d = dsn();
    std::string from = ":" + std::to_string(server_port()) + "/";
    auto at = d.find(from);
    return at == std::string::npos ? d : d.replace(at, from.size(), ":" + std::to_string(port) + "/");
  }
  // `extra` is appended to the server options, URL-encoded (URI DSNs), e.g.
  // "%20-clock_timeout%3D200".
  [[nodiscard]] std::string dsn(const std::string& extra = "") const {
    std::string opt = "options=-csearch_path%3D" + schema_ + extra;
    if (base_.find("://") != std::string::npos) {
      return base_ + (base_.find('?') == std::string::npos ? "?" : "&") + opt;
    }
    return base_ + " options='-csearch_path=" + schema_ + "'";
  }
  void exec(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    auto st = PQresultStatus(r);
    std::string err = PQresultErrorMessage(r);
    PQclear(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) throw std::runtime_error(sql + ": " + err);
  }
  // All rows of a one-column query, as text ("<null>" for NULL).
  std::vector<std::string> column(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      std::string err = PQresultErrorMessage(r);
      PQclear(r);
      throw std::runtime_error(sql + ": " + err);
    }
    std::vector<std::string> out;
    for (int i = 0; i < PQntuples(r); ++i) {
      out.push_back(PQgetisnull(r, i, 0) ? "<null>" : std::string(PQgetvalue(r, i, 0), PQgetlength(r, i, 0)));
    }
    PQclear(r);
    return out;
  }
  long count(const std::string& sql) { return std::stol(column(sql).at(0)); }
  // How many of the keys <prefix>0 ... <prefix>(n - 1) have a row in
  // events_mirror. A hashed semi-join: `= ANY (ARRAY(...))`, as these checks
  // were written before, compares every row with the whole array and took
  // 30 s at 40,000 keys, which made a kill loop wait on itself.
  long stored_of(const std::string& prefix, long n) {
    if (n <= 0) return 0;
    return count("SELECT count(*) FROM events_mirror WHERE idempotency_key IN (SELECT '" + prefix +
                 "' || g FROM generate_series(0, " + std::to_string(n - 1) + ") g)");
  }
  // Sessions waiting for a lock on `table` of the test schema: with the
  // table locked by this connection, evpipe's writers show up here once a
  // batch has reached the database.
  long lock_waiters(const std::string& table) {
    return count("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = '" + table + "'::regclass");
  }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  std::string base_;
  std::string schema_;
  PGconn* conn_ = nullptr;
};

// A second session on the test database, to hold locks while evpipe writes.
class side_session {
 public:
  explicit side_session(const std::string& dsn) : conn_(PQconnectdb(dsn.c_str())) {}
  ~side_session() { PQfinish(conn_); }
  side_session(const side_session&) = delete;
  side_session& operator=(const side_session&) = delete;
  // Its server process, as pg_stat_activity and pg_blocking_pids() name it.
  [[nodiscard]] int pid() const { return PQbackendPID(conn_); }
  void exec(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    auto st = PQresultStatus(r);
    std::string err = PQerrorMessage(conn_);
    PQclear(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) throw std::runtime_error(sql + ": " + err);
  }

 private:
  PGconn* conn_;
};

// Waits for child `pid` to exit; its exit code, or -1 on a timeout or a death
// by signal. Sets pid to -1 once it has exited.
// CPU time process `pid` has used (user + system), from /proc.
inline double cpu_seconds_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  auto close_paren = stat.rfind(')');
  if (close_paren == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close_paren + 2));
  std::string f;
  unsigned long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stoul(f);
    if (i == 15) stime = std::stoul(f);
  }
  return double(utime + stime) / double(::sysconf(_SC_CLK_TCK));
}

// How many times each thread of `pid` has been switched out so far
// (voluntary and not, from /proc/<pid>/task/<tid>/status), by thread id: a
// thread that wakes up on a timer adds one per wake-up, however little it
// does.
inline std::map<pid_t, uint64_t> context_switches_by_thread(pid_t pid) {
  std::map<pid_t, uint64_t> out;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(tasks, ec)) {
    std::ifstream in(task.path() / "status");
    std::string line;
    uint64_t n = 0;
    while (std::getline(in, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 || line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
        n += std::stoull(line.substr(line.find(':') + 1));
      }
    }
    out[static_cast<pid_t>(std::stol(task.path().filename().string()))] = n;
  }
  return out;
}

inline int wait_for_exit(pid_t& pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (pid > 0 && std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      pid = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(10ms);
  }
  return -1;
}

// The service manager's end of sd_notify (app/service_notify.cc): a datagram
// socket in the abstract namespace (no file, no path length limit).
// evpipe_process::start() listens on one for READY=1; a test that plays the
// service manager itself names it in NOTIFY_SOCKET.
class notify_listener {
 public:
  notify_listener() {
    static int counter = 0;
    name_ = "evpipe-test-notify-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path + 1, name_.data(), name_.size());  // sun_path[0] == 0: abstract
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name_.size());
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0)
      throw std::runtime_error("cannot bind the notify socket @" + name_);
  }
  notify_listener(const notify_listener&) = delete;
  notify_listener& operator=(const notify_listener&) = delete;
  ~notify_listener() { ::close(fd_); }
  // NOTIFY_SOCKET's value: '@' names an abstract socket.
  [[nodiscard]] std::string address() const { return "@" + name_; }
  // True once a datagram that holds `line` has arrived (reads what is queued).
  bool received(const std::string& line) {
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd_, buf, sizeof buf, 0)) > 0) seen_.append(buf, static_cast<size_t>(n)).push_back('\n');
    return seen_.find(line) != std::string::npos;
  }
  // The next datagram, or "" when none arrives within `timeout`.
  std::string receive(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return {};
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }

 private:
  std::string name_, seen_;
  int fd_ = -1;
};

// The evpipe binary with a config written for the test.
class evpipe_process {
 public:
  evpipe_process(std::string config_text, std::string name) : name_(std::move(name)) {
    dir_ = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_" + name_;
    std::string mk = "mkdir -p '" + dir_ + "'";
    if (std::system(mk.c_str()) != 0) throw std::runtime_error("mkdir " + dir_);
    config_path_ = dir_ + "/evpipe.toml";
    std::ofstream(config_path_) << config_text;
  }
  ~evpipe_process() { kill(SIGKILL); }

  // Runs a subcommand to completion; returns its exit code.
  int run_command(const std::string& sub) {
    pid_t pid = spawn({evpipe_binary(), sub, "--config", config_path_}, dir_ + "/" + sub + ".log");
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  // Starts `evpipe run` and waits until `port` accepts connections and evpipe
  // has told its service manager (sd_notify, on a socket of the test's own)
  // READY=1, or that it waits for PostgreSQL: either comes once every source
  // and the HTTP server listen, so a test may use any port its config names.
  // `own_process_group`: the child leads a process group of its own, whose
  // parent (this test) is in the same session, so the group is never
  // orphaned; the kernel discards SIGTSTP sent to an orphaned group (as when
  // the test runner was started in the background by a shell that exited).
  void start(uint16_t port, bool own_process_group = false) {
    // The log of an earlier run is kept as run.<n>.log (earlier_logs()).
    if (::access((dir_ + "/run.log").c_str(), F_OK) == 0) {
      std::string kept = dir_ + "/run." + std::to_string(++runs_kept_) + ".log";
      std::rename((dir_ + "/run.log").c_str(), kept.c_str());
    }
    // A test that plays the service manager itself sets NOTIFY_SOCKET: the
    // messages are its own, and start() waits for the port only.
    std::optional<notify_listener> ready;
    if (std::getenv("NOTIFY_SOCKET") == nullptr) ready.emplace();
    pid_ = spawn({evpipe_binary(), "run", "--config", config_path_}, dir_ + "/run.log", own_process_group,
                 ready ? "NOTIFY_SOCKET=" + ready->address() : std::string());
    auto deadline = std::chrono::steady_clock::now() + 60s;  // a loaded sanitizer build starts slowly
    bool listening = false, is_ready = !ready;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!listening) {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        listening = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        ::close(fd);
      }
      if (!is_ready) is_ready = ready->received("READY=1") || ready->received("STATUS=waiting for PostgreSQL");
      if (listening && is_ready) return;
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("evpipe exited at startup: " + log());
      }
      std::this_thread::sleep_for(20ms);
    }
    throw std::runtime_error(std::string("evpipe did not ") + (listening ? "report READY=1 (or that it waits for PostgreSQL)" : "listen") +
                             " in time: " + log());
  }
  void kill(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
    if (sig == SIGKILL && pid_ > 0) {
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // Its directory: evpipe.toml and the logs.
  [[nodiscard]] const std::string& dir() const noexcept { return dir_; }
  // Waits for the process to exit; returns its exit code (-1 on timeout or signal).
  int wait(std::chrono::milliseconds timeout = 60s) { return wait_for_exit(pid_, timeout); }
  // Replaces the config file (a reload test then sends SIGHUP).
  void write_config(const std::string& text) const { std::ofstream(config_path_) << text; }
  // The logs of the runs before the current one, oldest first.
  [[nodiscard]] std::string earlier_logs() const {
    std::string out;
    for (int i = 1; i <= runs_kept_; ++i) out += "--- run " + std::to_string(i) + " ---\n" + log("run." + std::to_string(i) + ".log");
    return out;
  }
  [[nodiscard]] std::string log(const std::string& file = "run.log") const {
    std::ifstream in(dir_ + "/" + file);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // The daemon logs through a queue and a thread of its own: a line can
  // reach the file a moment after what it reports shows elsewhere (a metric,
  // an ack, a closed socket). True once `file` holds `text`.
  [[nodiscard]] bool log_has(const std::string& text, std::chrono::milliseconds timeout = std::chrono::seconds(10),
                             const std::string& file = "run.log") const {
    return eventually([&] { return log(file).find(text) != std::string::npos; }, timeout);
  }

 private:

  // `extra_env` ("NAME=value", or empty) is added to the child's environment.
  static pid_t spawn(const std::vector<std::string>& args, const std::string& log_path,
                     bool own_process_group = false, const std::string& extra_env = {}) {
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    if (own_process_group) {
      posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
      posix_spawnattr_setpgroup(&attr, 0);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid;
    std::vector<char*> envp;
    for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
    if (!extra_env.empty()) envp.push_back(const_cast<char*>(extra_env.c_str()));
    envp.push_back(nullptr);
    int rc = posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) throw std::runtime_error("cannot start " + args[0]);
    return pid;
  }
  std::string name_, dir_, config_path_;
  pid_t pid_ = -1;
  int runs_kept_ = 0;
};

// A producer connection: writes NDJSON, reads {"ack":N} lines.
class ndjson_client {
 public:
  explicit ndjson_client(uint16_t port) : fd_(connect_loopback(port)) {}
  ~ndjson_client() { ::close(fd_); }

  void send_all(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("send");
      off += n;
    }
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  // Reads acks until `target` is acked, the peer closes, or the timeout.
  // Returns the last count seen; every count must be larger than the one
  // before, or equal in a line that names selective runs.
  uint64_t read_acks_until(uint64_t target, std::chrono::milliseconds timeout, bool* monotonic = nullptr) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (last_ < target && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
      pending_.append(buf, n);
      size_t nl;
      while ((nl = pending_.find('\n')) != std::string::npos) {
        std::string line = pending_.substr(0, nl);
        pending_.erase(0, nl + 1);
        auto colon = line.find(':');
        uint64_t v = std::stoull(line.substr(colon + 1));
        // A line that names runs beyond the count ("sack") may repeat it.
        const size_t sack = line.find("\"sack\":[");
        const bool runs = sack != std::string::npos;
        if ((v < last_ || (v == last_ && !runs)) && monotonic) *monotonic = false;
        last_ = v;
        if (runs) parse_runs(line.substr(sack + 8));
      }
    }
    return last_;
  }
  [[nodiscard]] bool closed() const { return closed_; }
  [[nodiscard]] uint64_t last_ack() const { return last_; }
  // Every run [first, last] of lines (from 1) that selective acks named, in
  // the order they came.
  [[nodiscard]] const std::vector<std::pair<uint64_t, uint64_t>>& runs() const { return runs_; }

 private:
  // The runs of a "sack":[[a,b],...] array, from just after its '['.
  void parse_runs(const std::string& text) {
    size_t at = 0;
    auto number = [&](uint64_t& v) {
      at = text.find_first_of("0123456789]", at);
      if (at == std::string::npos || text[at] == ']') return false;
      size_t used = 0;
      v = std::stoull(text.substr(at), &used);
      at += used;
      return true;
    };
    for (;;) {
      at = text.find_first_of("[]", at);
      if (at == std::string::npos || text[at] == ']') return;
      ++at;
      uint64_t a = 0, b = 0;
      if (!number(a) || !number(b)) throw std::runtime_error("malformed sack: " + text);
      runs_.emplace_back(a, b);
      at = text.find(']', at);
      if (at == std::string::npos) throw std::runtime_error("malformed sack: " + text);
      ++at;
    }
  }

  int fd_ = -1;
  std::string pending_;
  uint64_t last_ = 0;
  bool closed_ = false;
  std::vector<std::pair<uint64_t, uint64_t>> runs_;
};

}  // namespace evpipe::testing
