#pragma once
// Splits a byte stream into newline-delimited lines inside one growable
// buffer, without copying: the source reads into writable(), commits what it
// read, then takes complete lines as views. A line longer than the limit is
// skipped as it streams in and reported once at its end, with a prefix of its
// bytes, its size and a digest of all of it, so memory stays bounded by the
// limit whatever a client sends.
//
// The buffer keeps `padding` spare bytes past the end of any line so that a
// parser that reads ahead (simdjson) can run on the bytes in place.
//
// Owned by one connection; not thread-safe.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace evpipe::io {

class line_framer {
 public:
  line_framer(size_t max_line, size_t padding, size_t initial = 64 * 1024);
  ~line_framer();
  line_framer(const line_framer&) = delete;
  line_framer& operator=(const line_framer&) = delete;

  // Space to read into (never empty unless discarding finished the buffer).
  struct span {
    char* data;
    size_t size;
  };
  [[nodiscard]] span writable();
  void commit(size_t n);

  enum class kind { line, too_long, none };
  struct item {
    kind what = kind::none;
    std::string_view bytes;  // the line without "\n" / "\r\n"; for too_long, a prefix
    size_t readable = 0;     // bytes readable from bytes.data() (for the parser's padding)
    size_t full_size = 0;    // too_long: bytes of the whole line
    uint64_t digest_lo = 0;  // too_long: XXH3-128 of the whole line
    uint64_t digest_hi = 0;
  };
  // The next complete line, or none when more bytes are needed.
  [[nodiscard]] item next();
  // At end of stream: the unterminated last line, if any.
  [[nodiscard]] item finish();

  // A new line limit (a reload changed [events] max_event_bytes): applies to
  // the lines next() has not returned yet, including one partly buffered.
  void set_max_line(size_t max_line) noexcept { max_line_ = max_line; }

  // Bytes buffered that are not yet returned as lines.
  [[nodiscard]] size_t pending() const noexcept { return end_ - begin_; }
  [[nodiscard]] size_t capacity() const noexcept { return buf_.size() - padding_; }

  static constexpr size_t too_long_prefix = 4096;

 private:
  void make_room();
  void start_long(std::string_view head);
  void hash_long(std::string_view more);
  item end_long();

  std::vector<char> buf_;
  size_t max_line_;
  size_t padding_;
  size_t begin_ = 0;     // first byte not yet returned
  size_t end_ = 0;       // one past the last byte read
  size_t scanned_ = 0;   // bytes from begin_ known to hold no newline
  bool discarding_ = false;
  // The over-long line being skipped: its first bytes, size and running hash.
  std::string long_prefix_;
  size_t long_size_ = 0;
  struct hash_state;
  std::unique_ptr<hash_state> hash_;
};

}  // namespace evpipe::io
