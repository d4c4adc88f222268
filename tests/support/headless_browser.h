#pragma once
// Headless Chromium (Debian `chromium`) for the tests that check a page in a
// real browser: the HTTP source's CORS page and the stream's page.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tests/support/harness.h"

namespace evpipe::testing {

// The Chromium binary, or "" when it is not installed.
inline std::string find_chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

// Headless Chromium showing `url`, with the DevTools protocol on
// `debug_port` (a free port when 0), in a process group of its own so that
// its helper processes end with it. Its output goes to <profile>.log.
class headless_browser {
 public:
  headless_browser(const std::string& binary, const std::string& url, const std::string& profile,
                   uint16_t debug_port = 0) {
    if (debug_port == 0) debug_port = free_port();
    std::vector<std::string> args = {binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                     "--no-first-run", "--disable-background-networking",
                                     "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                                     "--user-data-dir=" + profile,
                                     "--remote-debugging-port=" + std::to_string(debug_port), url};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    std::string log = profile + ".log";
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (posix_spawn(&pid_, argv[0], &fa, &attr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
  }
  ~headless_browser() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGTERM);
    bool gone = eventually([&] { return ::waitpid(pid_, nullptr, WNOHANG) == pid_; }, std::chrono::seconds(10),
                           std::chrono::milliseconds(50));
    ::kill(-pid_, SIGKILL);  // helpers that outlived it, or all of it
    if (!gone) ::waitpid(pid_, nullptr, 0);
  }
  headless_browser(const headless_browser&) = delete;
  headless_browser& operator=(const headless_browser&) = delete;
  [[nodiscard]] bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

}  // namespace evpipe::testing
