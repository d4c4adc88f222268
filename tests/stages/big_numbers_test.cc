// Marking numbers beyond the JSON parser (stages/big_numbers.h): exactly the
// numbers simdjson refuses are marked, nothing inside strings, and the
// marked text parses back to markers that unmark to the original numbers.
#include "stages/big_numbers.h"

#include <gtest/gtest.h>

#include <simdjson.h>

namespace evpipe::stages {
namespace {

bool parses(const std::string& json) {
  simdjson::dom::parser p;
  return p.parse(simdjson::padded_string(json)).error() == simdjson::SUCCESS;
}

TEST(BigNumbers, MarksExactlyTheNumbersTheParserRefuses) {
  // Each number alone: marked when (and only when) the parser refuses it for its size.
  for (const char* n : {"1e400", "-1E400", "2e308", "1.7976931348623159e308", "18446744073709551616",
                        "-9223372036854775809", "123456789012345678901234567890", "1000000000000000000000.0e300",
                        "0.0001e313"}) {
    const std::string json = std::string("[") + n + "]";
    ASSERT_FALSE(parses(json)) << n;
    std::string out;
    ASSERT_TRUE(mark_big_numbers(json, out)) << n;
    EXPECT_EQ(out, std::string("[\"\\u0000") + n + "\"]");
    EXPECT_TRUE(parses(out)) << out;
  }
  for (const char* n : {"0", "-0", "1e-400", "0.0000001e-330", "1.7976931348623157e308", "18446744073709551615",
                        "-9223372036854775808", "123456789012345678901234567890e-20", "0e999999", "2.5"}) {
    const std::string json = std::string("[") + n + "]";
    ASSERT_TRUE(parses(json)) << n;
    std::string out = "untouched";
    EXPECT_FALSE(mark_big_numbers(json, out)) << n;
    EXPECT_EQ(out, "untouched");
  }
}

TEST(BigNumbers, LeavesStringsAndMalformedNumbersAlone) {
  std::string out;
  // Digits in strings and keys, escaped quotes before them.
  const std::string json = R"({"a\"1e400":"1e400 \\","b":[1e400,-2,"x"],"c":{"d":99999999999999999999}})";
  ASSERT_TRUE(mark_big_numbers(json, out));
  EXPECT_EQ(out, R"({"a\"1e400":"1e400 \\","b":["\u00001e400",-2,"x"],"c":{"d":"\u000099999999999999999999"}})");
  EXPECT_TRUE(parses(out));
  // A malformed number stays malformed, so the parse still refuses it.
  out.clear();
  EXPECT_TRUE(mark_big_numbers("[1e400, 01]", out));
  EXPECT_EQ(out, "[\"\\u00001e400\", 01]");
  EXPECT_FALSE(parses(out));
  EXPECT_FALSE(mark_big_numbers("[1., 2e]", out));
}

TEST(BigNumbers, NeverMarksATextThatHoldsUPlus0000) {
  std::string out;
  EXPECT_FALSE(mark_big_numbers(R"({"s":"\u0000","n":1e400})", out));
  EXPECT_FALSE(mark_big_numbers(std::string("{\"s\":\"\0\",\"n\":1e400}", 20), out));
  EXPECT_TRUE(out.empty());
  // An escaped backslash before "u0000" is no U+0000.
  ASSERT_TRUE(mark_big_numbers(R"({"s":"C:\\u0000x","n":1e400})", out));
  EXPECT_EQ(out, R"({"s":"C:\\u0000x","n":"\u00001e400"})");
  // Only the structure to check (an HTTP array body's split): marked anyway.
  ASSERT_TRUE(mark_big_numbers(R"([{"s":"\u0000"},{"n":1e400}])", out, true));
  EXPECT_EQ(out, R"([{"s":"\u0000"},{"n":"\u00001e400"}])");
}

// What the parser must go on refusing: a number where a key belongs, and
// numbers PostgreSQL's numeric (jsonb) cannot hold.
TEST(BigNumbers, LeavesKeysAndNumbersBeyondNumericForTheParserToRefuse) {
  std::string out;
  ASSERT_TRUE(mark_big_numbers(R"({"a":1e400,"b":{1e400 :1}})", out));
  EXPECT_EQ(out, R"({"a":"\u00001e400","b":{1e400 :1}})");
  EXPECT_FALSE(parses(out));
  EXPECT_TRUE(mark_big_numbers("[1e131071, 9.99e131071, -1E+131071]", out));
  EXPECT_TRUE(parses(out));
  for (const std::string n : {std::string("1e131072"), std::string("-0.5e131073"), std::string("1e99999999999999999999"),
                              "1." + std::string(17000, '1') + "e400", std::string(131073, '7')}) {
    EXPECT_FALSE(mark_big_numbers("[" + n + "]", out)) << n.substr(0, 40);
  }
  // The scale's edge: 16,783 digits after the point less an exponent of 400
  // is 16,383 (numeric's most); one more digit is past it.
  EXPECT_TRUE(mark_big_numbers("[1." + std::string(16783, '1') + "e400]", out)) << "scale 16,383";
  EXPECT_FALSE(mark_big_numbers("[1." + std::string(16784, '1') + "e400]", out)) << "scale 16,384";
  // And the magnitude's: below 1e131072 (numeric's 131,072 digits before the point).
  EXPECT_TRUE(mark_big_numbers("[" + std::string(131072, '9') + "]", out)) << "131,072 digits";
  EXPECT_FALSE(mark_big_numbers("[1" + std::string(131072, '0') + "]", out)) << "131,073 digits";
}

TEST(BigNumbers, TheParsedMarkersUnmarkToTheNumbers) {
  std::string marked;
  ASSERT_TRUE(mark_big_numbers(R"({"e":-2.5E+400,"n":[18446744073709551616,1],"s":"ok"})", marked));
  simdjson::dom::parser p;
  auto doc = p.parse(simdjson::padded_string(marked));
  ASSERT_FALSE(doc.error());
  std::string_view s, number;
  ASSERT_FALSE(doc["e"].get_string().get(s));
  ASSERT_TRUE(big_number_of(s, number));
  EXPECT_EQ(number, "-2.5E+400");
  EXPECT_FALSE(is_integer_literal(number));
  ASSERT_FALSE(doc["n"].at(0).get_string().get(s));
  ASSERT_TRUE(big_number_of(s, number));
  EXPECT_TRUE(is_integer_literal(number));
  EXPECT_FALSE(big_number_of("ok", number));
  std::string json = simdjson::minify(doc.value());
  unmark_big_numbers(json);
  EXPECT_EQ(json, R"({"e":-2.5E+400,"n":[18446744073709551616,1],"s":"ok"})");
}

}  // namespace
}  // namespace evpipe::stages
