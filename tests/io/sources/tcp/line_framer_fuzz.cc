// Fuzz target: the line framer. The first byte picks the read size; the rest
// is the stream. Every newline must end exactly one item, lines must stay
// within the limit and never hold a newline, the parser's padding must be
// there, and the buffer must never grow past the limit.
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <string_view>

#include "io/sources/tcp/line_framer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t chunk = data[0] % 97 + 1;
  std::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);
  constexpr size_t max_line = 40, padding = 64;
  evpipe::io::line_framer framer(max_line, padding, 64);
  size_t items = 0;
  auto check = [&](const evpipe::io::line_framer::item& it) {
    if (it.what == evpipe::io::line_framer::kind::line) {
      if (it.bytes.size() > max_line || it.bytes.find('\n') != std::string_view::npos) __builtin_trap();
      if (it.readable < it.bytes.size() + padding) __builtin_trap();
    } else if (it.full_size <= max_line || it.bytes.size() > evpipe::io::line_framer::too_long_prefix) {
      __builtin_trap();
    }
    ++items;
  };
  for (size_t off = 0; off < stream.size();) {
    auto w = framer.writable();
    if (w.size == 0) __builtin_trap();
    size_t n = std::min({chunk, w.size, stream.size() - off});
    std::memcpy(w.data, stream.data() + off, n);
    framer.commit(n);
    off += n;
    for (auto it = framer.next(); it.what != evpipe::io::line_framer::kind::none; it = framer.next()) check(it);
    if (framer.capacity() > std::max<size_t>(1024, max_line + 2)) __builtin_trap();
  }
  size_t newlines = static_cast<size_t>(std::count(stream.begin(), stream.end(), '\n'));
  if (items != newlines) __builtin_trap();
  auto last = framer.finish();
  bool tail = !stream.empty() && stream.back() != '\n';
  if ((last.what != evpipe::io::line_framer::kind::none) != tail) __builtin_trap();
  return 0;
}
