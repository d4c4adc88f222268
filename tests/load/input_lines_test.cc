// evpipe-load's --input reader: the lines of a regular file (mapped) and of a
// pipe (read to its end) are the same, CRLF and a missing last newline
// included, and blank lines are kept.
#include "load/input_lines.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace evpipe::load {
namespace {

std::string scratch_path(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir && *dir ? dir : "/tmp") + "/input_lines_" + std::to_string(::getpid()) + "_" + name;
}

std::vector<std::string> as_strings(const input_lines& in) {
  return std::vector<std::string>(in.lines().begin(), in.lines().end());
}

const std::string text = "{\"a\":1}\r\n{\"b\":2}\n\n{\"c\":3}";
const std::vector<std::string> expected = {"{\"a\":1}", "{\"b\":2}", "", "{\"c\":3}"};

TEST(InputLines, ARegularFileGivesEveryLineWithoutItsEnding) {
  const std::string path = scratch_path("regular");
  std::ofstream(path, std::ios::binary) << text;
  input_lines in;
  ASSERT_TRUE(in.open(path));
  EXPECT_EQ(as_strings(in), expected);
  EXPECT_FALSE(in.open(path)) << "a second open must not replace the lines the senders read";
  ::unlink(path.c_str());
}

TEST(InputLines, APipeGivesTheSameLines) {
  const std::string path = scratch_path("fifo");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  std::thread writer([&] {
    std::ofstream out(path, std::ios::binary);
    // More than one read's worth, so the reader has to go on to the end.
    for (int i = 0; i < 3000; ++i) out << std::string(40, 'x') << i << "\n";
    out << text;
  });
  input_lines in;
  const bool opened = in.open(path);
  writer.join();
  ::unlink(path.c_str());
  ASSERT_TRUE(opened);
  auto got = as_strings(in);
  ASSERT_EQ(got.size(), 3000u + expected.size());
  EXPECT_EQ(got[2999], std::string(40, 'x') + "2999");
  EXPECT_EQ(std::vector<std::string>(got.begin() + 3000, got.end()), expected);
}

TEST(InputLines, AnEmptyFileHasNoLinesAndAMissingOneCannotBeRead) {
  const std::string path = scratch_path("empty");
  std::ofstream(path, std::ios::binary).flush();
  input_lines empty;
  ASSERT_TRUE(empty.open(path));
  EXPECT_TRUE(empty.lines().empty());
  ::unlink(path.c_str());
  input_lines missing;
  EXPECT_FALSE(missing.open(path));
}

}  // namespace
}  // namespace evpipe::load
