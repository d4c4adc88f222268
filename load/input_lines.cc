#include "load/input_lines.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace evpipe::load {

input_lines::~input_lines() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

bool input_lines::open(const std::string& path) {
  if (map_ != nullptr || !buffer_.empty() || !lines_.empty()) return false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return false;
  }
  if (S_ISREG(st.st_mode)) {
    const auto size = static_cast<size_t>(st.st_size);
    if (size > 0) {
      void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        return false;
      }
      map_ = p;
      map_size_ = size;
    }
    ::close(fd);
    split(std::string_view(static_cast<const char*>(map_), map_size_));
    return true;
  }
  // A pipe, a FIFO, a terminal: its size says nothing; read to its end.
  char chunk[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return false;
    }
    buffer_.append(chunk, static_cast<size_t>(n));
  }
  ::close(fd);
  split(buffer_);
  return true;
}

void input_lines::split(std::string_view text) {
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines_.push_back(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

}  // namespace evpipe::load
