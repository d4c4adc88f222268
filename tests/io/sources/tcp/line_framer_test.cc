#include "io/sources/tcp/line_framer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace evpipe::io {
namespace {

// Feeds `input` in chunks of `chunk` bytes and collects what comes out.
struct collected {
  std::vector<std::string> lines;
  std::vector<size_t> too_long_sizes;
};
collected feed(line_framer& f, const std::string& input, size_t chunk, bool finish = true) {
  collected out;
  size_t off = 0;
  auto drain = [&] {
    for (auto it = f.next(); it.what != line_framer::kind::none; it = f.next()) {
      if (it.what == line_framer::kind::line) {
        out.lines.emplace_back(it.bytes);
        EXPECT_GE(it.readable, it.bytes.size() + 64);  // the parser's padding is there
      } else {
        out.too_long_sizes.push_back(it.full_size);
        out.lines.emplace_back("<too long:" + std::string(it.bytes.substr(0, 8)) + ">");
      }
    }
  };
  while (off < input.size()) {
    auto w = f.writable();
    size_t n = std::min({chunk, w.size, input.size() - off});
    std::memcpy(w.data, input.data() + off, n);
    f.commit(n);
    off += n;
    drain();
  }
  if (finish) {
    auto it = f.finish();
    if (it.what == line_framer::kind::line) out.lines.emplace_back(it.bytes);
    if (it.what == line_framer::kind::too_long) out.lines.emplace_back("<too long:" + std::string(it.bytes.substr(0, 8)) + ">");
  }
  return out;
}

TEST(LineFramer, SplitsOnNewlineAndStripsCr) {
  for (size_t chunk : {1, 2, 3, 7, 1000}) {
    line_framer f(1024, 64, 1024);
    auto got = feed(f, "a\nbb\r\n\nccc\n", chunk);
    EXPECT_EQ(got.lines, (std::vector<std::string>{"a", "bb", "", "ccc"})) << "chunk " << chunk;
  }
}

TEST(LineFramer, UnterminatedLastLineAtEndOfStream) {
  line_framer f(1024, 64, 1024);
  auto got = feed(f, "a\nlast", 3);
  EXPECT_EQ(got.lines, (std::vector<std::string>{"a", "last"}));
}

TEST(LineFramer, GrowsForLongLinesUpToTheLimit) {
  line_framer f(100000, 64, 1024);
  std::string big(50000, 'x');
  auto got = feed(f, "s\n" + big + "\nt\n", 4096);
  ASSERT_EQ(got.lines.size(), 3u);
  EXPECT_EQ(got.lines[1], big);
  EXPECT_LE(f.capacity(), 100002u);
}

TEST(LineFramer, OverLongLineIsReportedOnceAndSkipped) {
  line_framer f(1000, 64, 1024);
  std::string huge(50000, 'y');
  auto got = feed(f, "a\n" + huge + "\nb\n", 4096);
  EXPECT_EQ(got.lines, (std::vector<std::string>{"a", "<too long:yyyyyyyy>", "b"}));
  // Memory stays bounded by the limit, not by the line.
  EXPECT_LE(f.capacity(), 1024u);  // the initial size; never grown for the long line
}

TEST(LineFramer, OverLongLineWithinOneChunk) {
  line_framer f(10, 64, 1024);
  auto got = feed(f, "0123456789A\nok\n0123456789\n", 1000);
  EXPECT_EQ(got.lines, (std::vector<std::string>{"<too long:01234567>", "ok", "0123456789"}));
}

TEST(LineFramer, EndlessLineWithoutNewlineStaysBounded) {
  line_framer f(1000, 64, 1024);
  auto got = feed(f, std::string(1 << 20, 'z'), 4096, false);
  EXPECT_TRUE(got.lines.empty());  // reported when it ends
  EXPECT_LE(f.capacity(), 1024u);  // the initial size; never grown for the long line
  EXPECT_LT(f.pending(), 5000u);
  auto end = f.finish();
  EXPECT_EQ(end.what, line_framer::kind::too_long);
  EXPECT_EQ(end.full_size, size_t{1} << 20);
  EXPECT_EQ(end.bytes.size(), line_framer::too_long_prefix);
}

TEST(LineFramer, OverLongLineDigestDoesNotDependOnReadSizes) {
  std::string huge;
  for (int i = 0; i < 30000; ++i) huge.push_back(static_cast<char>('a' + i % 26));
  std::vector<std::pair<uint64_t, uint64_t>> digests;
  for (size_t chunk : {7, 1000, 4096, 100000}) {
    line_framer f(1000, 64, 1024);
    std::string input = huge + "\nnext\n";
    size_t off = 0;
    line_framer::item got;
    while (off < input.size()) {
      auto w = f.writable();
      size_t n = std::min({chunk, w.size, input.size() - off});
      std::memcpy(w.data, input.data() + off, n);
      f.commit(n);
      off += n;
      for (auto it = f.next(); it.what != line_framer::kind::none; it = f.next()) {
        if (it.what == line_framer::kind::too_long) got = it;
      }
    }
    ASSERT_EQ(got.what, line_framer::kind::too_long) << chunk;
    EXPECT_EQ(got.full_size, huge.size()) << chunk;
    EXPECT_TRUE(got.bytes == huge.substr(0, line_framer::too_long_prefix)) << chunk;
    digests.emplace_back(got.digest_lo, got.digest_hi);
  }
  for (auto& d : digests) EXPECT_EQ(d, digests.front());
}

}  // namespace
}  // namespace evpipe::io
