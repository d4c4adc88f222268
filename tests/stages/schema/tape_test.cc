// stages/schema/tape.h reads simdjson's tape directly (simdjson 3.0.1's
// layout, doc/tape.md). These tests walk documents holding every JSON type
// both ways, through the tape and through the DOM API, and require the same
// view: a simdjson that lays out its tape differently fails here first.
#include "stages/schema/tape.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <string>

namespace {

namespace tape = evpipe::stages::schema::tape;
namespace dom = simdjson::dom;

// Compares the value at tape index `at` with `e`, recursively; returns the
// index after it, as the walker steps.
size_t same(tape::view t, size_t at, dom::element e) {
  switch (e.type()) {
    case dom::element_type::OBJECT: {
      EXPECT_EQ(tape::type_at(t, at), '{');
      dom::object o(e);
      EXPECT_EQ(tape::count(t, at), o.size());
      size_t k = at + 1;
      for (auto field : o) {
        EXPECT_EQ(tape::type_at(t, k), '"');
        EXPECT_EQ(tape::string_at(t, k), field.key);
        EXPECT_EQ(tape::member(t, at, field.key) != 0, true);
        k = same(t, k + 1, field.value);
      }
      EXPECT_EQ(tape::type_at(t, k), '}');
      EXPECT_EQ(k + 1, tape::scope_end(t, at));
      EXPECT_EQ(tape::scope_start(t, k), at);
      break;
    }
    case dom::element_type::ARRAY: {
      EXPECT_EQ(tape::type_at(t, at), '[');
      dom::array a(e);
      EXPECT_EQ(tape::count(t, at), a.size());
      size_t k = at + 1;
      for (dom::element item : a) k = same(t, k, item);
      EXPECT_EQ(tape::type_at(t, k), ']');
      EXPECT_EQ(k + 1, tape::scope_end(t, at));
      EXPECT_EQ(tape::scope_start(t, k), at);
      break;
    }
    case dom::element_type::STRING:
      EXPECT_EQ(tape::type_at(t, at), '"');
      EXPECT_EQ(tape::string_at(t, at), std::string_view(e));
      break;
    case dom::element_type::INT64:
      EXPECT_EQ(tape::type_at(t, at), 'l');
      EXPECT_EQ(tape::int64_at(t, at), int64_t(e));
      EXPECT_EQ(tape::number_at(t, at), double(int64_t(e)));
      break;
    case dom::element_type::UINT64:
      EXPECT_EQ(tape::type_at(t, at), 'u');
      EXPECT_EQ(tape::uint64_at(t, at), uint64_t(e));
      EXPECT_EQ(tape::number_at(t, at), double(uint64_t(e)));
      break;
    case dom::element_type::DOUBLE:
      EXPECT_EQ(tape::type_at(t, at), 'd');
      EXPECT_EQ(tape::double_at(t, at), double(e));
      EXPECT_EQ(tape::number_at(t, at), double(e));
      break;
    case dom::element_type::BOOL: EXPECT_EQ(tape::type_at(t, at), bool(e) ? 't' : 'f'); break;
    case dom::element_type::NULL_VALUE: EXPECT_EQ(tape::type_at(t, at), 'n'); break;
  }
  const size_t next = tape::after(t, at);
  return next;
}

void walk_both(const std::string& json) {
  SCOPED_TRACE(json);
  dom::parser parser;
  dom::element root = parser.parse(json);
  const tape::view t = tape::of(parser.doc);
  EXPECT_EQ(tape::type_at(t, 0), 'r');
  const size_t end = same(t, tape::root, root);
  EXPECT_EQ(tape::type_at(t, end), 'r') << "the document's value ends where the root word closes it";
}

TEST(tape, every_json_type_reads_as_the_dom_api_reads_it) {
  walk_both(R"({"s":"text","e":"","u":"caf\u00e9 \ud83d\ude00","nul":"a\u0000b","esc":"\"\\\/\n",)"
            R"("i":-42,"z":0,"big":18446744073709551615,"max":9223372036854775807,"min":-9223372036854775808,)"
            R"("d":3.25,"neg":-0.5,"exp":1e300,"int_d":2.0,"t":true,"f":false,"n":null,)"
            R"("a":[1,"two",3.0,[],{},[null,[true]],{"k":{"k":[false]}}],"o":{},"dup":1,"dup":2})");
  walk_both(R"([1,-1,1.5,"x",true,false,null,[],{},[[[]]],{"a":{"b":{"c":1}}}])");
  walk_both(R"("just a string")");
  walk_both("12345678901234567890");
  walk_both("-7");
  walk_both("0.1");
  walk_both("true");
  walk_both("null");
  walk_both("[]");
  walk_both("{}");
}

TEST(tape, member_finds_the_first_of_duplicate_keys_and_nothing_for_a_missing_one) {
  dom::parser parser;
  (void)parser.parse(std::string(R"({"a":1,"b":"x","a":2})"));
  const tape::view t = tape::of(parser.doc);
  const size_t a = tape::member(t, tape::root, "a");
  ASSERT_NE(a, 0u);
  EXPECT_EQ(tape::int64_at(t, a), 1);
  EXPECT_EQ(tape::string_at(t, tape::member(t, tape::root, "b")), "x");
  EXPECT_EQ(tape::member(t, tape::root, "c"), 0u);
  EXPECT_EQ(tape::member(t, tape::root, "aa"), 0u);
}

// The payload is found from the event's end when it is the last member;
// anything else there gives 0 (and the caller looks from the start).
TEST(tape, last_member_object_only_for_an_object_that_is_the_last_member) {
  auto last = [](const std::string& json) {
    dom::parser parser;
    (void)parser.parse(json);
    const tape::view t = tape::of(parser.doc);
    const size_t at = tape::last_member_object(t, tape::root, "payload");
    if (at != 0) {
      EXPECT_EQ(at, tape::member(t, tape::root, "payload")) << json;
      EXPECT_EQ(tape::type_at(t, at), '{') << json;
    }
    return at;
  };
  EXPECT_NE(last(R"({"a":1,"payload":{"x":[1,{}]}})"), 0u);
  EXPECT_NE(last(R"({"payload":{}})"), 0u);
  EXPECT_EQ(last(R"({"payload":{},"b":1})"), 0u);
  EXPECT_EQ(last(R"({"payload":{"a":1},"b":{}})"), 0u);          // the last member has another name
  EXPECT_EQ(last(R"({"payload":{"a":1},"b":[{}]})"), 0u);        // ends with ']'
  EXPECT_EQ(last(R"({"a":{"payload":{}}})"), 0u);                // nested, not a member of the root
  EXPECT_EQ(last(R"({"payloads":{}})"), 0u);
  EXPECT_EQ(last(R"({"payload":[]})"), 0u);
  EXPECT_EQ(last("{}"), 0u);
  // A number last, whose second word reads as a '}' pointing at the
  // payload's '{' (0x7D in the top byte, tape index 3 below).
  const std::string tricky = R"({"payload":{"a":1},"n":9007199254740992003})";
  dom::parser parser;
  (void)parser.parse(tricky);
  const tape::view t = tape::of(parser.doc);
  ASSERT_EQ(tape::type_at(t, 3), '{');
  ASSERT_EQ(tape::type_at(t, 9), 'l');
  ASSERT_EQ(t.words[10], 0x7D00000000000003ull);
  EXPECT_EQ(tape::last_member_object(t, tape::root, "payload"), 0u);
  EXPECT_EQ(tape::member(t, tape::root, "payload"), 3u);
}

TEST(tape, equal_is_json_equality_across_two_tapes) {
  auto eq = [](const std::string& x, const std::string& y) {
    dom::parser px, py;
    (void)px.parse(x);
    (void)py.parse(y);
    return tape::equal(tape::of(px.doc), tape::root, tape::of(py.doc), tape::root);
  };
  EXPECT_TRUE(eq("1", "1.0"));
  EXPECT_TRUE(eq("-3", "-3"));
  EXPECT_FALSE(eq("1", "2"));
  EXPECT_FALSE(eq("1", "\"1\""));
  EXPECT_FALSE(eq("-1", "18446744073709551615"));
  EXPECT_TRUE(eq("18446744073709551615", "18446744073709551615"));
  EXPECT_TRUE(eq("true", "true"));
  EXPECT_FALSE(eq("true", "false"));
  EXPECT_FALSE(eq("null", "false"));
  EXPECT_TRUE(eq(R"("a\u0000b")", R"("a\u0000b")"));
  EXPECT_FALSE(eq(R"("a")", R"("ab")"));
  EXPECT_TRUE(eq(R"([1,[2,{"x":null}]])", R"([1.0,[2,{"x":null}]])"));
  EXPECT_FALSE(eq("[1,2]", "[2,1]"));
  EXPECT_FALSE(eq("[1]", "[1,1]"));
  EXPECT_TRUE(eq(R"({"a":1,"b":[true]})", R"({"b":[true],"a":1})"));
  EXPECT_FALSE(eq(R"({"a":1})", R"({"a":1,"b":2})"));
  EXPECT_FALSE(eq(R"({"a":1})", R"({"b":1})"));
  EXPECT_FALSE(eq("{}", "[]"));
}

}  // namespace
