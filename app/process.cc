#include "app/process.h"

#include <fcntl.h>
#include <spdlog/async.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <thread>

#include "app/log_limiter.h"
#include "pipeline/thread_name.h"
#include "stages/json_text.h"

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


// spdlog formatter for [log] format = "json"; runs on the logger's writer thread.
class json_formatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    auto t = std::chrono::system_clock::to_time_t(msg.time);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char when[40];
    std::snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
    auto level = spdlog::level::to_string_view(msg.level);
    line_ = json_log_line(when, std::string_view(level.data(), level.size()),
                          std::string_view(msg.payload.data(), msg.payload.size()),
                          pipeline::thread_log_fields(msg.thread_id));
    dest.append(line_.data(), line_.data() + line_.size());
  }
  [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<json_formatter>(); }

 private:
  std::string line_;  // reused: one writer thread formats every line
};

// The daemon's logger: repeated lines are rate-limited (app/log_limiter.h)
// on the calling thread, then go to `queued` (the async logger whose queue
// feeds the writer thread), so that a flood never fills that queue.
// spdlog's async_logger is final, hence a front logger without sinks.
class limited_logger final : public spdlog::logger {
 public:
  explicit limited_logger(std::shared_ptr<spdlog::async_logger> queued)
      : spdlog::logger("evpipe"), queued_(std::move(queued)) {
    queued_->set_level(spdlog::level::trace);  // the level is this logger's
  }
  [[nodiscard]] spdlog::async_logger& queued() { return *queued_; }

  // Writes what is still suppressed (at exit).
  void write_summaries() {
    for (const auto& s : limiter_.drain()) write_summary(s);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    auto d = limiter_.admit(static_cast<int>(msg.level), std::string_view(msg.payload.data(), msg.payload.size()),
                            log_limiter::clock::now());
    for (const auto& s : d.summaries) write_summary(s);
    if (d.write) queued_->log(msg.time, msg.source, msg.level, msg.payload);
  }
  void flush_() override { queued_->flush(); }

 private:
  void write_summary(const log_limiter::summary& s) {
    queued_->log(static_cast<spdlog::level::level_enum>(s.level), s.text);
  }

  std::shared_ptr<spdlog::async_logger> queued_;
  log_limiter limiter_;
};

}  // namespace

std::string json_log_line(std::string_view time, std::string_view level, std::string_view message,
                          std::string_view fields) {
  std::string out = "{\"time\":";
  stages::append_json_string(out, time);
  out += ",\"level\":";
  stages::append_json_string(out, level);
  out += ",\"message\":";
  stages::append_json_string(out, message);
  out += ",\"fields\":";
  out += fields;
  out += "}\n";
  return out;
}

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

void setup_logging(const std::string& level, const std::string& format) {
  // 8192 lines of slack: a burst at start or shutdown fits; a stalled reader
  // loses the oldest lines, not the ingest thread's time.
  spdlog::init_thread_pool(8192, 1);
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto queued = std::make_shared<spdlog::async_logger>("evpipe", sink, spdlog::thread_pool(),
                                                       spdlog::async_overflow_policy::overrun_oldest);
  auto logger = std::make_shared<limited_logger>(std::move(queued));
  spdlog::set_default_logger(logger);
  apply_log_settings(level, format);
}

void apply_log_settings(const std::string& level, const std::string& format) {
  auto logger = spdlog::default_logger();
  auto* limited = dynamic_cast<limited_logger*>(logger.get());
  spdlog::logger& formatted = limited ? static_cast<spdlog::logger&>(limited->queued()) : *logger;
  // The sinks swap formatters under their own lock, so the writer thread
  // formats each line wholly in one format or the other.
  if (format == "json") {
    formatted.set_formatter(std::make_unique<json_formatter>());
  } else {
    formatted.set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
  logger->set_level(spdlog::level::from_str(level));
}

namespace {
std::atomic<bool> exiting{false};
}  // namespace

bool exit_started() noexcept { return exiting.load(); }

void exit_process(int code, exit_mode mode, int flush_ms) {
  if (exiting.exchange(true)) {
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(flush_ms);
  if (auto pool = spdlog::thread_pool()) {
    if (auto* limited = dynamic_cast<limited_logger*>(spdlog::default_logger_raw())) limited->write_summaries();
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
