// What an operator's environment does to the daemon (issue 18): signals a
// service manager, logrotate or a terminal sends, descriptors that are closed
// or full, an open-file limit that runs out, and what /health/ready says
// meanwhile. The evpipe binary runs as a child process against the real
// PostgreSQL that scripts/test.sh starts.

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>

#include <fstream>
#include <sstream>
#include <iostream>

#include "tests/support/harness.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {
namespace {

std::string ops_config(const test_db& db, uint16_t tcp_port, uint16_t http_port, const std::string& extra = "",
                       const std::string& level = "info") {
  return "[pipeline]\nshards = 2\nshutdown_timeout_ms = 4000\n"
         "[postgres]\ndsn = \"" + db.dsn() + "\"\nretry_base_ms = 50\nretry_max_ms = 300\n"
         "[http]\nlisten = \"127.0.0.1:" + std::to_string(http_port) + "\"\n"
         "[log]\nlevel = \"" + level + "\"\n"
         "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(tcp_port) + "\"\ntopic = \"ops/it\"\n" + extra;
}

std::string events(const std::string& run, int n) {
  std::string data;
  for (int i = 0; i < n; ++i) data += valid_event(run + "-" + std::to_string(i)) + "\n";
  return data;
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// evpipe started by hand, for what evpipe_process does not set up: stderr on
// a pipe the test never reads, descriptors 0-2 closed, a lowered open-file
// limit. Its stdout and stderr go to `log_path` unless the test says otherwise.
struct child_options {
  bool stdio_closed = false;    // start with descriptors 0, 1 and 2 closed
  int stderr_pipe = -1;         // write end of a pipe for stdout and stderr
  rlim_t nofile = 0;            // soft and hard RLIMIT_NOFILE for the child (0: inherit)
  rlim_t fsize = 0;             // soft and hard RLIMIT_FSIZE for the child (0: inherit)
  // Bind-mounted over /etc/resolv.conf in a mount namespace of the child's
  // own (needs root; exit code 126 when that fails), with RES_OPTIONS.
  std::string resolv_conf, res_options;
};

class raw_child {
 public:
  raw_child(const std::string& config_path, const std::string& log_path, const child_options& o) {
    const std::string binary = evpipe_binary();  // no allocation after fork()
    pid_ = ::fork();
    if (pid_ == 0) {
      if (o.nofile > 0) {
        rlimit lim{o.nofile, o.nofile};
        ::setrlimit(RLIMIT_NOFILE, &lim);
      }
      if (o.fsize > 0) {
        rlimit lim{o.fsize, o.fsize};
        ::setrlimit(RLIMIT_FSIZE, &lim);
      }
      if (!o.resolv_conf.empty()) {
        // Private to the child: the machine's resolv.conf stays as it is.
        if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
            ::mount(o.resolv_conf.c_str(), "/etc/resolv.conf", nullptr, MS_BIND, nullptr) != 0) {
          ::_exit(126);
        }
        ::setenv("RES_OPTIONS", o.res_options.c_str(), 1);
      }
      if (o.stdio_closed) {
        for (int fd = 0; fd < 3; ++fd) ::close(fd);
      } else {
        int out = o.stderr_pipe >= 0 ? o.stderr_pipe : ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(out, 1);
        ::dup2(out, 2);
      }
      // Nothing else of the test's may leak into the child.
      for (int fd = 3; fd < 4096; ++fd) ::close(fd);
      ::execl(binary.c_str(), binary.c_str(), "run", "--config", config_path.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~raw_child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  void signal(int sig) const { ::kill(pid_, sig); }
  // The exit code, or -1 on a timeout or a death by signal.
  int wait(std::chrono::milliseconds timeout) { return wait_for_exit(pid_, timeout); }
  // CPU time the child has used (user + system), from /proc.
  [[nodiscard]] double cpu_seconds() const { return cpu_seconds_of(pid_); }

 private:
  pid_t pid_ = -1;
};

bool accepts(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// The sum of every series of one metric family in a /metrics body.
double family_sum(const std::string& metrics, const std::string& name) {
  double sum = 0;
  std::istringstream lines(metrics);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + "{", 0) == 0 || line.rfind(name + " ", 0) == 0) sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

std::string status_line(const std::string& reply) { return reply.substr(0, reply.find("\r\n")); }

class Operations : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
  }
  long mirrored(const std::string& run) {
    return db.count("SELECT count(*) FROM events_mirror WHERE idempotency_key LIKE '" + run + "-%'");
  }
  test_db db;
};

// logrotate's postrotate, `systemctl reload` and a closed terminal send
// SIGHUP (a reload of the unchanged config: nothing restarts); some log tools
// send SIGUSR1 or SIGUSR2 (logged and ignored). 2,000 events in flight at the
// time are all acknowledged and stored.
TEST_F(Operations, HupReloadsAndUsr1Usr2AreIgnoredWithEventsInFlight) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(ops_config(db, port, http_port), "ops_hup");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  ndjson_client c(port);
  c.send_all(events("hup", 2000));
  // One at a time: signals of one kind that arrive together count once.
  const std::pair<int, const char*> sigs[] = {
      {SIGHUP, "SIGHUP"}, {SIGUSR1, "SIGUSR1"}, {SIGUSR2, "SIGUSR2"}, {SIGHUP, "SIGHUP"}};
  size_t logged = 0;
  for (auto [sig, name] : sigs) {
    evp.kill(sig);
    ++logged;
    ASSERT_TRUE(eventually([&] {
      std::string log = evp.log();
      return count_of(log, ": ignored") + count_of(log, "reload done") == logged;
    }, 30s))
        << name << " " << evp.log();
  }
  EXPECT_EQ(c.read_acks_until(2000, 60s), 2000u) << evp.log();
  EXPECT_EQ(mirrored("hup"), 2000);
  // Still running and ingesting after the signals.
  ndjson_client c2(port);
  c2.send_all(events("hup2", 10));
  EXPECT_EQ(c2.read_acks_until(10, 60s), 10u) << evp.log();
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
  std::string log = evp.log();
  EXPECT_EQ(count_of(log, "received SIGHUP: reloading"), 2u) << log;
  EXPECT_EQ(count_of(log, "reload done: sources 0 stopped, 0 started, 1 unchanged"), 2u) << log;
  EXPECT_EQ(count_of(log, "received SIGUSR1: ignored"), 1u) << log;
  EXPECT_EQ(count_of(log, "received SIGUSR2: ignored"), 1u) << log;
}

// Ctrl-\ and some container runtimes send SIGQUIT: the same drain as SIGTERM,
// and a second stop signal during the drain does not cut it short.
TEST_F(Operations, SigquitAndRepeatedStopSignalsDrainAndExitZero) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(ops_config(db, port, http_port), "ops_quit");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  const int n = 20000;
  ndjson_client c(port);
  std::thread sender([&] {
    try {
      c.send_all(events("quit", n));
    } catch (...) {
      // evpipe stops reading and closes: expected
    }
  });
  ASSERT_GE(c.read_acks_until(1, 60s), 1u);
  evp.kill(SIGQUIT);
  ASSERT_TRUE(eventually([&] { return evp.log().find("received SIGQUIT: draining") != std::string::npos; }, 30s))
      << evp.log();
  evp.kill(SIGINT);
  uint64_t acked = c.read_acks_until(n, 60s);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
  sender.join();
  long stored = db.stored_of("quit-", static_cast<long>(acked));
  EXPECT_EQ(stored, static_cast<long>(acked));
  EXPECT_TRUE(evp.log_has("while draining: the drain goes on")) << evp.log();
}

// A database that holds every write (a migration's ACCESS EXCLUSIVE lock):
// from the moment the drain starts /health/ready says 503 "draining" while
// /health/live stays 200, and the process still exits 0 once
// shutdown_timeout_ms is up, without acknowledging what it could not commit.
TEST_F(Operations, DrainIsVisibleToReadinessAndEndsAtTheTimeoutWhateverTheDatabaseDoes) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(ops_config(db, port, http_port), "ops_stall");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  // The listeners open before the first database round trip ([postgres]
  // startup = "wait"), so readiness may still say 503 for a moment.
  EXPECT_TRUE(eventually([&] { return status_line(http_get(http_port, "/health/ready")) == "HTTP/1.1 200 OK"; }, 20s))
      << http_get(http_port, "/health/ready");
  side_session locker(db.dsn());
  locker.exec("BEGIN");
  locker.exec("LOCK TABLE events_mirror IN ACCESS EXCLUSIVE MODE");
  ndjson_client c(port);
  c.send_all(events("stall", 500));
  // The events reach a shard, whose COPY now waits on the lock.
  ASSERT_TRUE(eventually([&] {
    return metric_value(http_get(http_port, "/metrics"), "evpipe_events_received_total{source=\"tcp\"}") >= 500;
  }, 60s)) << http_get(http_port, "/metrics");
  auto t0 = std::chrono::steady_clock::now();
  evp.kill(SIGTERM);
  ASSERT_TRUE(eventually([&] { return http_get(http_port, "/health/ready").find("draining") != std::string::npos; }, 20s))
      << evp.log();
  EXPECT_EQ(status_line(http_get(http_port, "/health/ready")), "HTTP/1.1 503 Service Unavailable");
  EXPECT_EQ(status_line(http_get(http_port, "/health/live")), "HTTP/1.1 200 OK");
  // shutdown_timeout_ms is 4 s; the wait allows for a slow machine, and the
  // lock is held until after it, so only the timeout can end the drain.
  int code = evp.wait(30s);
  auto took = std::chrono::steady_clock::now() - t0;
  locker.exec("ROLLBACK");
  EXPECT_EQ(code, 0) << evp.log();
  std::cout << "exited " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
            << " ms after SIGTERM (shutdown_timeout_ms = 4000)\n";
  EXPECT_EQ(c.read_acks_until(500, 2s), 0u) << "nothing was committed, so nothing may be acknowledged";
  EXPECT_TRUE(evp.log_has("shutdown_timeout_ms (4000 ms) reached")) << evp.log();
}

// stderr is a pipe that nobody reads (a stalled log shipper): lines are
// dropped rather than stalling ingest, and the process still exits 0 on
// SIGTERM with the pipe full. The pipe holds 4 KiB; the SIGHUPs below log far
// more than that.
TEST_F(Operations, StalledLogPipeNeitherStallsIngestNorHoldsTheExit) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process setup(ops_config(db, port, http_port), "ops_logpipe");
  ASSERT_EQ(setup.run_command("migrate"), 0) << setup.log("migrate.log");
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_GE(::fcntl(fds[1], F_SETPIPE_SZ, 4096), 0);
  std::string dir = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_ops_logpipe";
  raw_child child(dir + "/evpipe.toml", "", {.stderr_pipe = fds[1]});
  ::close(fds[1]);
  ASSERT_TRUE(eventually([&] { return accepts(port); }, 30s));
  for (int i = 0; i < 300; ++i) {
    child.signal(SIGHUP);
    std::this_thread::sleep_for(1ms);  // signals of one kind sent together count once
  }
  ndjson_client c(port);
  c.send_all(events("logpipe", 1000));
  EXPECT_EQ(c.read_acks_until(1000, 60s), 1000u);
  EXPECT_EQ(mirrored("logpipe"), 1000);
  child.signal(SIGTERM);
  EXPECT_EQ(child.wait(60s), 0);
  ::close(fds[0]);
}

// SIGTERM while the MQTT broker's name is being looked up and the DNS server
// never answers (RES_OPTIONS: 30 s a try, 3 tries): evpipe exits 0 within
// shutdown_timeout_ms instead of waiting for getaddrinfo. The child gets its
// own resolv.conf in a mount namespace, naming a loopback address where the
// test holds a UDP socket that reads nothing; the machine's resolver is
// untouched. Needs root (as scripts/test.sh runs); skipped otherwise.
TEST_F(Operations, SigtermDuringAHangingDnsLookupExitsZeroWithinTheShutdownTimeout) {
  // Port 53 is fixed in resolv.conf; an address of 127/8 that nothing else uses.
  const char* dns_ip = "127.53.86.1";
  int dns = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(53);
  ::inet_pton(AF_INET, dns_ip, &a.sin_addr);
  if (::bind(dns, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(dns);
    GTEST_SKIP() << "cannot bind " << dns_ip << ":53 (needs root)";
  }
  uint16_t port = free_port(), http_port = free_port();
  std::string mqtt = "[[sources.mqtt]]\nurl = \"mqtt://broker.evpipe-dns-test.example:1883\"\n"
                     "client_id = \"evpipe-dns\"\ntopics = [\"t/#\"]\n";
  evpipe_process setup(ops_config(db, port, http_port, mqtt), "ops_dns");
  ASSERT_EQ(setup.run_command("migrate"), 0) << setup.log("migrate.log");
  std::string dir = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_ops_dns";
  std::ofstream(dir + "/resolv.conf") << "nameserver " << dns_ip << "\n";
  raw_child child(dir + "/evpipe.toml", dir + "/child.log",
                  {.resolv_conf = dir + "/resolv.conf", .res_options = "timeout:30 attempts:3"});
  // The lookup has begun once its query reaches the silent server.
  pollfd p{dns, POLLIN, 0};
  int ready = ::poll(&p, 1, 30000);
  if (ready <= 0 && child.wait(0ms) == 126) {
    ::close(dns);
    GTEST_SKIP() << "no mount namespace for the child (needs CAP_SYS_ADMIN)";
  }
  ASSERT_EQ(ready, 1) << "no DNS query within 30 s: " << setup.log("child.log");
  ASSERT_TRUE(eventually([&] { return accepts(port); }, 30s)) << setup.log("child.log");
  auto t0 = std::chrono::steady_clock::now();
  child.signal(SIGTERM);
  // shutdown_timeout_ms is 4 s; the lookup would take 90 s.
  int code = child.wait(20s);
  auto took = std::chrono::steady_clock::now() - t0;
  ::close(dns);
  EXPECT_EQ(code, 0) << setup.log("child.log");
  std::cout << "exited " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
            << " ms after SIGTERM during the lookup (shutdown_timeout_ms = 4000)\n";
}

// The log file reaches RLIMIT_FSIZE (a quota, a container's limit): the
// write fails with EFBIG instead of SIGXFSZ killing the process. The SIGHUPs
// log far more than the 2 KiB allowed.
TEST_F(Operations, LogFileOverTheSizeLimitDoesNotKill) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process setup(ops_config(db, port, http_port), "ops_fsize");
  ASSERT_EQ(setup.run_command("migrate"), 0) << setup.log("migrate.log");
  std::string dir = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_ops_fsize";
  raw_child child(dir + "/evpipe.toml", dir + "/child.log", {.fsize = 2048});
  ASSERT_TRUE(eventually([&] { return accepts(port); }, 30s));
  for (int i = 0; i < 100; ++i) {
    child.signal(SIGHUP);
    std::this_thread::sleep_for(2ms);  // signals of one kind sent together count once
  }
  ndjson_client c(port);
  c.send_all(events("fsize", 100));
  EXPECT_EQ(c.read_acks_until(100, 60s), 100u);
  child.signal(SIGTERM);
  EXPECT_EQ(child.wait(60s), 0) << "killed (SIGXFSZ?)";
}

// A terminal's job control: SIGTSTP stops evpipe (the default), SIGCONT
// resumes it; producers see a pause, and nothing is lost or acked early.
TEST_F(Operations, StopAndContinueLoseNothing) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(ops_config(db, port, http_port), "ops_tstp");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port, /*own_process_group=*/true);
  evp.kill(SIGTSTP);
  // Stopped: state T in /proc/PID/stat (after the ") " that ends the name).
  auto state = [&] {
    std::ifstream in("/proc/" + std::to_string(evp.pid()) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), {});
    auto close = stat.rfind(") ");
    return close == std::string::npos ? '?' : stat[close + 2];
  };
  ASSERT_TRUE(eventually([&] { return state() == 'T'; }, 10s)) << "SIGTSTP did not stop evpipe, state " << state();
  ndjson_client c(port);  // the kernel completes the handshake for a stopped listener
  c.send_all(events("tstp", 500));
  EXPECT_EQ(c.read_acks_until(1, 1s), 0u) << "a stopped process acknowledged";
  evp.kill(SIGCONT);
  EXPECT_EQ(c.read_acks_until(500, 60s), 500u) << evp.log();
  EXPECT_EQ(mirrored("tstp"), 500);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// Started with descriptors 0, 1 and 2 closed (a careless init script): a
// socket opened later must not become "stderr", or log lines would be written
// into a database or producer connection.
TEST_F(Operations, ClosedStdioDescriptorsDoNotCapturePipelineSockets) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process setup(ops_config(db, port, http_port, "", "debug"), "ops_stdio");
  ASSERT_EQ(setup.run_command("migrate"), 0) << setup.log("migrate.log");
  std::string dir = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_ops_stdio";
  raw_child child(dir + "/evpipe.toml", "", {.stdio_closed = true});
  ASSERT_TRUE(eventually([&] { return accepts(port); }, 30s));
  // Descriptors 0-2 are /dev/null, so that nothing opened later takes them.
  for (int fd = 0; fd < 3; ++fd) {
    char target[256] = {};
    std::string link = "/proc/" + std::to_string(child.pid()) + "/fd/" + std::to_string(fd);
    ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    EXPECT_EQ(std::string(target, n > 0 ? n : 0), "/dev/null") << "descriptor " << fd;
  }
  for (int round = 0; round < 3; ++round) {
    ndjson_client c(port);
    std::string run = "stdio" + std::to_string(round);
    c.send_all(events(run, 300) + "not json\n");
    EXPECT_EQ(c.read_acks_until(301, 60s), 301u);
    EXPECT_EQ(mirrored(run), 300);
  }
  // Log lines written into a database connection break its protocol: the
  // shards would have failed and reconnected.
  auto metrics = http_get(http_port, "/metrics");
  EXPECT_EQ(family_sum(metrics, "evpipe_db_errors_total"), 0) << metrics;
  child.signal(SIGTERM);
  EXPECT_EQ(child.wait(60s), 0);
}

// 1,100 idle clients under an open-file limit of 1,024 (the child's own), on
// the metrics endpoint and then on the TCP source: no accept storm (a few log
// lines, little CPU), and /health/live still answers.
void idle_clients_under_low_limit(test_db& db, const std::string& name, bool on_source) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process setup(ops_config(db, port, http_port), name);
  ASSERT_EQ(setup.run_command("migrate"), 0) << setup.log("migrate.log");
  std::string dir = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_" + name;
  std::string log_path = dir + "/child.log";
  raw_child child(dir + "/evpipe.toml", log_path, {.nofile = 1024});
  ASSERT_TRUE(eventually([&] { return accepts(port); }, 30s));
  double cpu0 = child.cpu_seconds();
  std::vector<int> idle;
  for (int i = 0; i < 1100; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(on_source ? port : http_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    (void)::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);  // completes in the backlog or not: both count
    idle.push_back(fd);
  }
  auto t0 = std::chrono::steady_clock::now();
  bool live = eventually([&] { return status_line(http_get(http_port, "/health/live")) == "HTTP/1.1 200 OK"; }, 15s);
  EXPECT_TRUE(live) << "/health/live did not answer within 15 s";
  std::this_thread::sleep_until(t0 + 10s);
  double cpu = child.cpu_seconds() - cpu0;
  std::ifstream in(log_path);
  std::string log((std::istreambuf_iterator<char>(in)), {});
  size_t lines = count_of(log, "\n");
  std::cout << name << ": " << lines << " log lines in all, " << cpu << " s of CPU over 10 s with 1,100 idle clients\n";
  // An accept storm spins a core (about 10 s here); a quiet sanitized evpipe
  // used 1.06 s once with two other tests running beside it.
  EXPECT_LT(cpu, 2.5) << "over 25 % of a core";
  EXPECT_LT(lines, 20u + 12u) << log.substr(0, 4000);  // the 12 or so start-up lines are not the episode
  // Still ingesting once the idle clients leave.
  for (int fd : idle) ::close(fd);
  ASSERT_TRUE(eventually([&] {
    try {
      ndjson_client c(port);
      c.send_all(events(name, 10));
      return c.read_acks_until(10, 5s) == 10;
    } catch (...) {
      return false;
    }
  }, 30s)) << log;
  child.signal(SIGTERM);
  EXPECT_EQ(child.wait(60s), 0);
}

TEST_F(Operations, IdleMetricsClientsUnderALowFileLimitCauseNoAcceptStorm) {
  idle_clients_under_low_limit(db, "ops_fd_metrics", false);
}

TEST_F(Operations, IdleSourceClientsUnderALowFileLimitLeaveHealthAndDatabaseWorking) {
  idle_clients_under_low_limit(db, "ops_fd_source", true);
}

// Idle means asleep: with no client of any kind (the stream on, on a port of
// its own), evpipe's threads wait. The stream hub once spun with no client,
// its wait's deadline long past: a whole core, mostly in futex calls. Later
// it still woke every poll_ms (50 times a second), and each shard every
// 50 ms: about 470 context switches in 5 s. Now a shard wakes once a second
// for its idle database check and nothing else wakes (the I/O stall watch,
// which samples the I/O threads' lateness on a timer, is off here).
TEST_F(Operations, AnIdleEvpipeWithTheStreamOnUsesNoCpu) {
  uint16_t port = free_port(), http_port = free_port(), stream_port = free_port();
  std::string config =
      ops_config(db, port, http_port, "[stream]\nlisten = \"127.0.0.1:" + std::to_string(stream_port) + "\"\n");
  const std::string pipeline = "shutdown_timeout_ms = 4000\n";
  config.replace(config.find(pipeline), pipeline.size(), pipeline + "slow_batch_ms = 0\n");
  evpipe_process setup(config, "ops_idle");
  ASSERT_EQ(setup.run_command("migrate"), 0) << setup.log("migrate.log");
  std::string dir = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_ops_idle";
  raw_child child(dir + "/evpipe.toml", dir + "/child.log", {});
  ASSERT_TRUE(eventually([&] { return accepts(stream_port); }, 30s));
  std::this_thread::sleep_for(1s);  // past start-up's own work
  double cpu0 = child.cpu_seconds();
  const auto before = context_switches_by_thread(child.pid());
  std::this_thread::sleep_for(5s);
  double cpu = child.cpu_seconds() - cpu0;
  EXPECT_LT(cpu, 0.5) << "an idle evpipe used " << cpu << " s of CPU in 5 s";
  uint64_t switches = 0;
  for (const auto& [tid, n] : context_switches_by_thread(child.pid())) {
    if (auto it = before.find(tid); it != before.end()) switches += n - it->second;
  }
  EXPECT_LT(switches, 60u) << "an idle evpipe's threads were switched in " << switches << " times in 5 s";
  child.signal(SIGTERM);
  EXPECT_EQ(child.wait(60s), 0);
}

// Limits in the database's units: the topic column is VARCHAR(255), which
// counts characters. Topics of 255 three- and four-byte characters are
// stored as sent; 256 characters are dead-lettered as invalid_topic, not
// refused by the database.
TEST_F(Operations, TopicLimitIsTheColumnsCharactersNotBytes) {
  uint16_t port = free_port(), http_port = free_port();
  evpipe_process evp(ops_config(db, port, http_port), "ops_units");
  ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
  evp.start(port);
  std::string cjk255, emoji255;
  for (int i = 0; i < 255; ++i) cjk255 += "\xe6\x97\xa5";
  for (int i = 0; i < 255; ++i) emoji255 += "\xf0\x9f\x98\x80";
  ndjson_client c(port);
  c.send_all(valid_event("units-cjk", "t", ",\"topic\":\"" + cjk255 + "\"") + "\n" +
             valid_event("units-emoji", "t", ",\"topic\":\"" + emoji255 + "\"") + "\n" +
             valid_event("units-over", "t", ",\"topic\":\"" + cjk255 + "x\"") + "\n");
  EXPECT_EQ(c.read_acks_until(3, 60s), 3u) << evp.log();
  EXPECT_EQ(db.column("SELECT topic FROM events_mirror WHERE idempotency_key = 'units-cjk'").at(0), cjk255);
  EXPECT_EQ(db.column("SELECT topic FROM events_mirror WHERE idempotency_key = 'units-emoji'").at(0), emoji255);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'invalid_topic'"), 1);
  EXPECT_EQ(db.count("SELECT count(*) FROM dlq_events WHERE reason_code = 'db_rejected'"), 0);
  evp.kill(SIGTERM);
  EXPECT_EQ(evp.wait(60s), 0) << evp.log();
}

// What `check-config` accepts, `run` runs; what it refuses, `run` refuses too,
// over the error kinds that used to pass the check and fail at start.
TEST_F(Operations, CheckConfigAndRunAgree) {
  uint16_t port = free_port(), http_port = free_port();
  ::setenv("EVPIPE_OPS_PORT", std::to_string(port).c_str(), 1);
  ::unsetenv("EVPIPE_OPS_UNSET");
  std::string base = "[postgres]\ndsn = \"" + db.dsn() + "\"\n[http]\nlisten = \"127.0.0.1:" +
                     std::to_string(http_port) + "\"\n";
  std::string tcp = "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\n";
  struct case_t {
    std::string name, toml;
    bool accepted;
  };
  std::vector<case_t> cases = {
      {"plain", base + tcp, true},
      {"env_port", base + "[[sources.tcp]]\nlisten = \"127.0.0.1:${EVPIPE_OPS_PORT}\"\n", true},
      {"env_default", base + tcp + "topic = \"${EVPIPE_OPS_UNSET:-ops/default}\"\n", true},
      {"host_name", base + "[[sources.tcp]]\nlisten = \"localhost:" + std::to_string(port) + "\"\n", false},
      {"no_source", base, false},
      {"env_unset", base + tcp + "topic = \"${EVPIPE_OPS_UNSET}\"\n", false},
      {"missing_ca", base + tcp + "[[sources.mqtt]]\nurl = \"mqtts://127.0.0.1:8883\"\ntopics = [\"a/#\"]\n"
                     "ca_file = \"no-such-ca.pem\"\n", false},
  };
  bool migrated = false;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    evpipe_process evp(c.toml, "ops_cfg_" + c.name);
    if (!migrated) {
      ASSERT_EQ(evp.run_command("migrate"), 0) << evp.log("migrate.log");
      migrated = true;
    }
    int check = evp.run_command("check-config");
    EXPECT_EQ(check == 0, c.accepted) << evp.log("check-config.log");
    if (check == 0) {
      EXPECT_NO_THROW(evp.start(port));  // throws when run exits at start
      evp.kill(SIGTERM);
      EXPECT_EQ(evp.wait(60s), 0) << evp.log();
    } else {
      EXPECT_THROW(evp.start(port), std::runtime_error) << "check-config refused it, run must too";
      EXPECT_TRUE(evp.log_has("config error")) << evp.log();
    }
  }
}

}  // namespace
}  // namespace evpipe::testing
