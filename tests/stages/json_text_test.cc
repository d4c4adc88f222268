#include "stages/json_text.h"

#include <gtest/gtest.h>

namespace evpipe::stages {
namespace {

std::string quoted(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

TEST(JsonText, EscapesWhatJsonNeeds) {
  EXPECT_EQ(quoted("plain"), "\"plain\"");
  EXPECT_EQ(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(quoted("line\nnext\ttab\x01"), "\"line\\nnext\\u0009tab\\u0001\"");
}

TEST(JsonText, KeepsUtf8AndReplacesWhatIsNot) {
  EXPECT_EQ(quoted("caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80"), "\"caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80\"");
  EXPECT_EQ(quoted("a\xff" "b"), "\"a\\ufffdb\"");             // not a lead byte
  EXPECT_EQ(quoted("\xc3"), "\"\\ufffd\"");                    // cut short
  EXPECT_EQ(quoted("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");  // a surrogate
}

}  // namespace
}  // namespace evpipe::stages
