#pragma once
// What the `evpipe` process does about its environment before and after it
// runs: the descriptors and signals a service manager, a log pipe, a terminal
// or a container runtime can hand it (docs/operations.md has the table), the
// open-file limit, and logging that never makes ingest wait.
//
// Called from main() on the main thread, before any other thread starts
// (harden_process, setup_logging) and at the very end (exit_process).

#include <sys/resource.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace evpipe::app {

// Reopens any of descriptors 0, 1, 2 that is closed onto /dev/null (so that a
// socket opened later never becomes "stderr"), ignores SIGPIPE and SIGXFSZ
// (a write then fails with EPIPE/EFBIG instead of killing the process), and
// ignores SIGHUP, SIGUSR1 and SIGUSR2 until the daemon's own handler takes
// them over (so that a logrotate or a reload during start-up kills nothing).
void harden_process();

// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now
// in force.
rlim_t raise_open_file_limit();

// Logs to stderr through a bounded queue and one writer thread: when stderr
// is a pipe nobody reads, the oldest lines are dropped (and counted), and no
// event thread ever blocks on a log line.
// format "json" writes one object per line, {"time":..., "level":..., "message":...},
// the message escaped so that every line parses (invalid UTF-8 becomes U+FFFD).
void setup_logging(const std::string& level, const std::string& format = "text");

// A reload's [log]: the level and format of the logger setup_logging made.
// Thread-safe.
void apply_log_settings(const std::string& level, const std::string& format);

// One JSON log line (with its newline), as the "json" format writes it; for tests.
// `fields` is a JSON object (pipeline/thread_name.h: the logging thread's).
[[nodiscard]] std::string json_log_line(std::string_view time, std::string_view level, std::string_view message,
                                        std::string_view fields = "{}");

// Flushes the log for up to `flush_ms` and exits with `code`. A writer stuck
// on a full pipe does not hold the exit: the process ends regardless.
// `unwind`: run static destructors (std::exit), which is only safe from main()
// once every other thread is joined; otherwise std::_Exit.
enum class exit_mode : uint8_t { unwind, immediate };
// The first caller exits; a later one (the shutdown watchdog racing the
// normal exit) waits for that exit instead of starting a second.
[[noreturn]] void exit_process(int code, exit_mode mode, int flush_ms = 1000);
// True once exit_process has been called.
[[nodiscard]] bool exit_started() noexcept;

}  // namespace evpipe::app
