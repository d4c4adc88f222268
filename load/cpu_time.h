#pragma once
// This process's CPU time so far (user + system, all threads), in seconds:
// what evpipe-load, the floors and the stream's bench clients report of
// their own cost beside the server they measure (perf scripts).

#include <sys/resource.h>
#include <sys/time.h>

namespace evpipe::load {

[[nodiscard]] inline double process_cpu_seconds() noexcept {
  rusage u{};
  if (::getrusage(RUSAGE_SELF, &u) != 0) return 0;
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

}  // namespace evpipe::load
