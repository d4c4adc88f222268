#include "app/process.h"

#include <fcntl.h>
#include <spdlog/async.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <thread>

namespace evpipe::app {

namespace {

void ensure_open(int fd) {
  if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) return;
  int null = open("/dev/null", fd == STDIN_FILENO ? O_RDONLY : O_WRONLY);
  // open() returns the lowest free descriptor, which is fd itself when the
  // lower ones are open; otherwise move it there.
  if (null >= 0 && null != fd) {
    dup2(null, fd);
    close(null);
  }
}

}  // namespace

void harden_process() {
  for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) ensure_open(fd);
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGXFSZ, SIG_IGN);
  std::signal(SIGHUP, SIG_IGN);
  std::signal(SIGUSR1, SIG_IGN);
  std::signal(SIGUSR2, SIG_IGN);
}

rlim_t raise_open_file_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return raised.rlim_cur;
  }
  return lim.rlim_cur;
}

void setup_logging(const std::string& level) {
  // 8192 lines of slack: a burst at start or shutdown fits; a stalled reader
  // loses the oldest lines, not the ingest thread's time.
  spdlog::init_thread_pool(8192, 1);
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto logger = std::make_shared<spdlog::async_logger>("evpipe", sink, spdlog::thread_pool(),
                                                       spdlog::async_overflow_policy::overrun_oldest);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

void exit_process(int code, exit_mode mode, int flush_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(flush_ms);
  if (auto pool = spdlog::thread_pool()) {
    spdlog::default_logger()->flush();
    while (pool->queue_size() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    pool.reset();  // the registry's reference is then the last: shutdown() joins the writer
    // The writer may sit in a write(2) to a pipe nobody reads, holding
    // stderr's lock, which std::exit would wait for too: give it the rest of
    // the time, then leave without it.
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread([done] {
      spdlog::shutdown();
      done->store(true);
    }).detach();
    while (!done->load() && std::chrono::steady_clock::now() < deadline + std::chrono::milliseconds(200)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (!done->load()) std::_Exit(code);
  }
  if (mode == exit_mode::immediate) std::_Exit(code);
  std::exit(code);
}

}  // namespace evpipe::app
