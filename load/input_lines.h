#pragma once
// The lines of evpipe-load's --input file (NDJSON), read once before a run.
// A regular file is mapped and its lines are views into the mapping: no copy
// and no allocation per line (200,000 lines of 87 MB read a string at a time
// cost more CPU than sending them, docs/performance-cpu.md). A pipe or other
// stream is read into one buffer. Immutable after open(); every sender thread
// reads it, so it must outlive them. A mapped file that is truncated while the
// run goes on raises SIGBUS: evpipe-load's input is not expected to change.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace evpipe::load {

class input_lines {
 public:
  input_lines() = default;
  input_lines(const input_lines&) = delete;
  input_lines& operator=(const input_lines&) = delete;
  ~input_lines();

  // Reads `path` (once: a second call fails). Each line is what lies between
  // two newlines, without a carriage return before its newline; a last line
  // without a newline counts; blank lines are kept. False when the file
  // cannot be opened or read.
  bool open(const std::string& path);

  [[nodiscard]] const std::vector<std::string_view>& lines() const noexcept { return lines_; }

 private:
  void split(std::string_view text);

  void* map_ = nullptr;  // the mapping of a regular file, or null
  size_t map_size_ = 0;
  std::string buffer_;   // what a stream held
  std::vector<std::string_view> lines_;
};

}  // namespace evpipe::load
