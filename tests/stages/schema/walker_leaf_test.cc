// The leaves of a compiled schema (stages/schema/program.h: leaf,
// member_leaf, tape_text) and the walker's fast path over them
// (stages/schema/walker.cc: check_leaf, text_is). A leaf only accepts and
// hands everything else to its node, so the verdicts here are compared with
// the plain rule computed in the test, at each edge the leaf precomputes: the
// merged number range, the byte counts that settle a length, the types, and
// names and enum strings around the 12 bytes one compare covers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "stages/schema/compile.h"
#include "stages/schema/tape.h"
#include "stages/schema/walker.h"

namespace evpipe::stages::schema {
namespace {

struct checked {
  bool ok;
  std::string keyword, pointer;
};

checked run(const program& p, const std::string& value) {
  simdjson::dom::parser parser;
  [[maybe_unused]] simdjson::dom::element v = parser.parse(value);  // throws on bad JSON
  walker w;
  violation why;
  const bool quiet = w.check(p, parser.doc);
  const bool ok = w.check(p, parser.doc, &why);
  EXPECT_EQ(quiet, ok) << value;
  return ok ? checked{true, "", ""} : checked{false, std::string(keyword_name(why.what)), why.pointer};
}

// The leaf of property `name` of the root.
const leaf& leaf_of(const program& p, const std::string& name) {
  const node& root = p.nodes[0];
  for (const auto& m : root.members) {
    if (m.index < root.properties.size() && root.properties[m.index].name == name) return m.check;
  }
  ADD_FAILURE() << "no property " << name;
  return root.as_leaf;
}

TEST(walker_leaf, each_kind_of_subschema_gets_its_leaf) {
  auto p = compile_schema(R"({
    "type": "object",
    "properties": {
      "s": {"type": "string", "minLength": 2, "maxLength": 10},
      "u": {"type": "string", "format": "uuid"},
      "d": {"type": "string", "format": "date-time"},
      "e": {"enum": ["a", "b"]},
      "p": {"type": "string", "pattern": "^a+$"},
      "sp": {"type": "string", "pattern": "^a+$", "format": "uuid"},
      "n": {"type": "number", "minimum": 1, "exclusiveMaximum": 5},
      "i": {"type": "integer"},
      "any": {},
      "o": {"type": "object", "properties": {"x": {}}},
      "a": {"type": "array", "items": {"type": "string"}},
      "c": {"const": 1},
      "eo": {"enum": ["a", 1]},
      "ref": {"$ref": "#/$defs/u"},
      "one": {"oneOf": [{"type": "string"}, {"type": "null"}]}
    },
    "$defs": {"u": {"type": "string", "format": "uuid"}}
  })",
                          "t.json");
  EXPECT_EQ(p->nodes[0].as_leaf.kind, leaf_kind::object);
  const leaf& s = leaf_of(*p, "s");
  EXPECT_EQ(s.kind, leaf_kind::scalar);
  EXPECT_EQ(s.strings, string_check::none);
  EXPECT_EQ(s.tape_types, tape::type_bit('"'));
  EXPECT_EQ(s.min_bytes, 5u);  // 5 bytes hold at least 2 characters; 4 may be one
  EXPECT_EQ(s.byte_span, 5u);  // up to 10 bytes: at most 10 characters
  EXPECT_EQ(leaf_of(*p, "u").strings, string_check::uuid);
  EXPECT_EQ(leaf_of(*p, "ref").strings, string_check::uuid);  // the plain $ref is skipped
  EXPECT_EQ(leaf_of(*p, "d").strings, string_check::date_time);
  EXPECT_EQ(leaf_of(*p, "e").strings, string_check::enum_values);
  EXPECT_EQ(leaf_of(*p, "e").tape_types, tape::type_bit('"'));  // only a string can be one of them
  EXPECT_EQ(leaf_of(*p, "p").strings, string_check::pattern);
  EXPECT_EQ(leaf_of(*p, "sp").strings, string_check::several);
  const leaf& n = leaf_of(*p, "n");
  EXPECT_EQ(n.kind, leaf_kind::scalar);
  EXPECT_EQ(n.low, 1.0);
  EXPECT_EQ(n.high, std::nextafter(5.0, 0.0));
  EXPECT_EQ(n.tape_types, tape::type_bit('l') | tape::type_bit('u') | tape::type_bit('d'));
  // A double under "integer" is left to the node: whether it is integral.
  EXPECT_EQ(leaf_of(*p, "i").tape_types, tape::type_bit('l') | tape::type_bit('u'));
  EXPECT_EQ(leaf_of(*p, "any").kind, leaf_kind::any);
  EXPECT_EQ(leaf_of(*p, "o").kind, leaf_kind::object);
  EXPECT_EQ(leaf_of(*p, "a").kind, leaf_kind::array);
  EXPECT_EQ(leaf_of(*p, "c").kind, leaf_kind::node);
  EXPECT_EQ(leaf_of(*p, "eo").kind, leaf_kind::node);
  EXPECT_EQ(leaf_of(*p, "one").kind, leaf_kind::node);
  // Each leaf's first step (program.h, leaf_op).
  EXPECT_EQ(s.op, leaf_op::string);
  EXPECT_EQ(leaf_of(*p, "u").op, leaf_op::uuid);
  EXPECT_EQ(leaf_of(*p, "ref").op, leaf_op::uuid);
  EXPECT_EQ(leaf_of(*p, "d").op, leaf_op::date_time);
  EXPECT_EQ(leaf_of(*p, "e").op, leaf_op::enum_values);
  EXPECT_EQ(leaf_of(*p, "p").op, leaf_op::pattern);
  EXPECT_EQ(leaf_of(*p, "sp").op, leaf_op::general);
  EXPECT_EQ(n.op, leaf_op::number);
  EXPECT_EQ(leaf_of(*p, "i").op, leaf_op::number);
  EXPECT_EQ(leaf_of(*p, "any").op, leaf_op::any);
  EXPECT_EQ(leaf_of(*p, "o").op, leaf_op::object);
  EXPECT_EQ(leaf_of(*p, "a").op, leaf_op::array);
  EXPECT_EQ(leaf_of(*p, "c").op, leaf_op::general);
  EXPECT_EQ(leaf_of(*p, "one").op, leaf_op::general);
  // The member table ends with an entry no name matches.
  EXPECT_EQ(p->nodes[0].members.size(), p->nodes[0].properties.size() + 1);
  EXPECT_EQ(p->nodes[0].members.back().name.size, UINT32_MAX);
}

// minimum, maximum and the exclusive ones, merged into one closed range of
// doubles: each bound with its neighbours, as integers and as doubles.
TEST(walker_leaf, numbers_at_each_bound_and_its_neighbours) {
  const double bounds[] = {0.0, 1.0, -2.5, 1e-300, 9007199254740993.0, 1e300};
  for (const char* kw : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}) {
    const std::string k = kw;
    for (double b : bounds) {
      char text[64];
      std::snprintf(text, sizeof text, "%.17g", b);
      auto p = compile_schema(R"({"properties":{"x":{")" + k + R"(":)" + text + "}}}", "t.json");
      const double bound = p->nodes[1].minimum + p->nodes[1].maximum + p->nodes[1].exclusive_minimum +
                           p->nodes[1].exclusive_maximum;  // the one that is set, as parsed
      for (double x : {std::nextafter(bound, -INFINITY), bound, std::nextafter(bound, INFINITY), -bound, 0.0}) {
        std::snprintf(text, sizeof text, "%.17g", x);
        const bool expected = k == "minimum"            ? x >= bound
                              : k == "maximum"          ? x <= bound
                              : k == "exclusiveMinimum" ? x > bound
                                                        : x < bound;
        const checked c = run(*p, std::string(R"({"x":)") + text + "}");
        EXPECT_EQ(c.ok, expected) << k << " " << bound << " with " << text;
        if (!c.ok) {
          EXPECT_EQ(c.keyword, k);
        }
      }
    }
  }
  // Integers as simdjson keeps them (int64, and uint64 past INT64_MAX) meet
  // the bounds as doubles.
  auto p = compile_schema(R"({"properties":{"x":{"type":"integer","minimum":-9223372036854775808,"maximum":18446744073709551615}}})",
                          "t.json");
  EXPECT_TRUE(run(*p, R"({"x":-9223372036854775808})").ok);
  EXPECT_TRUE(run(*p, R"({"x":18446744073709551615})").ok);
  EXPECT_TRUE(run(*p, R"({"x":3.0})").ok);  // integral: the node says it is an integer
  EXPECT_EQ(run(*p, R"({"x":3.5})").keyword, "type");
  EXPECT_EQ(run(*p, R"({"x":"3"})").keyword, "type");
}

TEST(walker_leaf, types_each_way) {
  auto p = compile_schema(R"({"properties":{"x":{"type":["string","null"],"maxLength":1},"y":{"minimum":1}}})", "t.json");
  EXPECT_TRUE(run(*p, R"({"x":null})").ok);
  EXPECT_TRUE(run(*p, R"({"x":"a"})").ok);
  EXPECT_EQ(run(*p, R"({"x":"ab"})").keyword, "maxLength");
  EXPECT_EQ(run(*p, R"({"x":1})").keyword, "type");
  EXPECT_EQ(run(*p, R"({"x":true})").keyword, "type");
  EXPECT_EQ(run(*p, R"({"x":[]})").keyword, "type");
  // No type: number keywords look only at numbers.
  for (const char* v : {R"("0")", "null", "false", "[0]", R"({"a":0})", "1", "1.5"}) {
    EXPECT_TRUE(run(*p, std::string(R"({"y":)") + v + "}").ok) << v;
  }
  EXPECT_EQ(run(*p, R"({"y":0.5})").keyword, "minimum");
  // A member after an array or an object that a leaf let pass is found.
  EXPECT_EQ(run(*p, R"({"y":[0,{"a":[1]}],"x":2})").pointer, "/x");
  EXPECT_EQ(run(*p, R"({"y":{"a":[1]},"x":"ab"})").pointer, "/x");
}

// Each leaf_op against values of every type, and of every string shape its
// check looks at: the verdict of the member's leaf (the walk of an object)
// is the verdict of the same subschema walked as a node (the walk of a
// root value, which checks each keyword in turn), and so is the keyword.
TEST(walker_leaf, each_first_step_agrees_with_its_node_on_every_type) {
  const std::vector<std::pair<std::string, leaf_op>> subschemas = {
      {R"({"type":"string","minLength":2,"maxLength":40})", leaf_op::string},
      {R"({"type":["string","null"],"maxLength":40})", leaf_op::string},
      {R"({"type":["string","boolean"],"minLength":2})", leaf_op::string},
      {R"({"type":"string","format":"uuid"})", leaf_op::uuid},
      {R"({"type":["string","null"],"format":"uuid","maxLength":36})", leaf_op::uuid},
      {R"({"type":"string","format":"date-time"})", leaf_op::date_time},
      {R"({"type":["null","string"],"format":"date-time","minLength":30})", leaf_op::date_time},
      {R"({"enum":["api","ui","import","mqtt","2025-01-15T10:30:00Z"]})", leaf_op::enum_values},
      {R"({"type":"string","pattern":"^[0-9]+\\.[0-9]+$"})", leaf_op::pattern},
      {R"({"type":["string","null"],"pattern":"[a-f]{4}"})", leaf_op::pattern},
      {R"({"type":"number","minimum":-1,"exclusiveMaximum":100})", leaf_op::number},
      {R"({"type":"integer","maximum":5})", leaf_op::number},
      {R"({"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]})", leaf_op::object},
      {R"({"type":"array","items":{"type":"string"},"maxItems":2})", leaf_op::array},
      {R"({"type":"array","items":{"type":"string","minLength":2,"maxLength":3}})", leaf_op::array},
      // Bounds the byte count settles (at most 3 bytes; 1 to 8 bytes), so
      // that the items' own loop decides on them.
      {R"({"type":"array","items":{"type":"string","maxLength":3}})", leaf_op::array},
      {R"({"type":"array","items":{"type":"string","minLength":1,"maxLength":8}})", leaf_op::array},
      {R"({})", leaf_op::any},
      {R"({"type":["string","number"],"minimum":0,"maxLength":3})", leaf_op::general},
  };
  const std::vector<std::string> values = {
      R"("")", R"("a")", R"("ab")", R"("1.5")", R"("x1.5y")", R"("abcd")", R"("api")", R"("ui")", R"("apx")",
      R"("2025-01-15T10:30:00Z")", R"("2025-02-30T10:30:00Z")", R"("123e4567-e89b-12d3-a456-426614174000")",
      R"("123e4567-e89b-12d3-a456-42661417400g")", R"("a string that is longer than forty bytes, by a few")",
      "null", "true", "false", "0", "-1", "-2", "5", "6", "99.5", "100", "3.0", "3.5", "18446744073709551615",
      "-9223372036854775808", "[]", R"(["a","b"])", R"(["a","b","c"])", "[1]", R"(["ab","abc"])", R"(["ab","a"])",
      R"(["ab","abcd"])", R"(["ab",null,"abc"])", R"(["ab",["cd"]])", R"(["ab","éé"])",
      // Each item off at the first, a middle and the last place, by one byte either way.
      R"(["abcd","a","abc"])", R"(["a","abcd","abc"])", R"(["a","abc","abcd"])", R"(["","a","abc"])",
      R"(["a","","abc"])", R"(["a","abc",""])", R"(["abcdefghi","a"])", R"(["a","abcdefgh","abcdefghi"])",
      R"(["abc","abcdefgh","a"])", R"(["ééé","a"])", R"(["a","éééé","ééééé"])", "{}", R"({"a":1})",
      R"({"a":"1"})"};
  for (const auto& [schema, op] : subschemas) {
    auto as_member = compile_schema(R"({"properties":{"x":)" + schema + "}}", "t.json");
    auto as_root = compile_schema(schema, "t.json");
    ASSERT_EQ(leaf_of(*as_member, "x").op, op) << schema;
    for (const auto& v : values) {
      const checked leaf_verdict = run(*as_member, R"({"x":)" + v + "}");
      const checked node_verdict = run(*as_root, v);
      EXPECT_EQ(leaf_verdict.ok, node_verdict.ok) << schema << " with " << v;
      EXPECT_EQ(leaf_verdict.keyword, node_verdict.keyword) << schema << " with " << v;
      // The walk goes on after the value: a member after it is still checked.
      EXPECT_EQ(run(*as_member, R"({"x":)" + v + R"(,"y":1})").ok, node_verdict.ok) << schema << " with " << v;
    }
  }
}

// One compare covers the length and 12 bytes of text: names and enum
// strings of 11 to 21 bytes that share their first 12 bytes, each found,
// and each one byte off not found.
TEST(walker_leaf, names_and_enum_strings_around_twelve_bytes) {
  std::vector<std::string> names;
  for (size_t n : {0, 1, 3, 4, 11, 12, 13, 16, 17, 21}) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s += static_cast<char>('a' + i % 26);
    names.push_back(s);
  }
  std::string props, list;
  for (const auto& n : names) {
    props += (props.empty() ? "" : ",") + ("\"" + n + "\":{\"type\":\"integer\"}");
    list += (list.empty() ? "" : ",") + ("\"" + n + "\"");
  }
  auto p = compile_schema(R"({"properties":{)" + props + R"(},"additionalProperties":false})", "t.json");
  auto e = compile_schema(R"({"properties":{"v":{"enum":[)" + list + "]}}}", "t.json");
  for (const auto& n : names) {
    EXPECT_TRUE(run(*p, "{\"" + n + "\":1}").ok) << n;
    EXPECT_EQ(run(*p, "{\"" + n + "\":\"1\"}").pointer, "/" + n);  // its own rule
    EXPECT_TRUE(run(*e, "{\"v\":\"" + n + "\"}").ok) << n;
    if (n.empty()) continue;
    for (std::string off : {n.substr(0, n.size() - 1) + "#", n + "#", "#" + n.substr(1)}) {
      if (std::find(names.begin(), names.end(), off) != names.end()) continue;
      EXPECT_EQ(run(*p, "{\"" + off + "\":1}").keyword, "additionalProperties") << off;
      EXPECT_EQ(run(*e, "{\"v\":\"" + off + "\"}").keyword, "enum") << off;
    }
  }
  // All members, in the schema's order and reversed.
  std::string in_order, reversed;
  for (size_t i = 0; i < names.size(); ++i) {
    in_order += (i ? "," : "") + ("\"" + names[i] + "\":" + std::to_string(i));
    reversed += (i ? "," : "") + ("\"" + names[names.size() - 1 - i] + "\":" + std::to_string(i));
  }
  EXPECT_TRUE(run(*p, "{" + in_order + "}").ok);
  EXPECT_TRUE(run(*p, "{" + reversed + "}").ok);
  // Bytes past the text are never part of the verdict: a key that is a
  // prefix of the next string in the buffer, and escapes that decode to
  // the same bytes.
  EXPECT_TRUE(run(*p, R"({"abcdefghijk":1,"abcdefghijkl":2})").ok);
  EXPECT_TRUE(run(*p, R"({"\u0061bc":1})").ok);
  EXPECT_EQ(run(*p, R"({"abc\u0000":1})").keyword, "additionalProperties");
}

// An enum of strings is looked up by a perfect hash of a string's first 8
// buffer bytes (its length and up to 4 bytes of text, node::enum_slots), or
// compared value by value when no multiplier tells the values apart.
TEST(walker_leaf, enum_strings_found_by_their_hash_or_in_turn) {
  auto slots_of = [](const program& p) { return p.nodes[leaf_of(p, "v").node].enum_slots.size(); };
  // Same length and first 4 bytes: no hash separates them.
  auto same_head = compile_schema(R"({"properties":{"v":{"enum":["abcdX","abcdY","abcdZ"]}}})", "t.json");
  EXPECT_EQ(slots_of(*same_head), 0u);
  for (std::string v : {"abcdX", "abcdY", "abcdZ"}) EXPECT_TRUE(run(*same_head, "{\"v\":\"" + v + "\"}").ok) << v;
  EXPECT_EQ(run(*same_head, R"({"v":"abcdW"})").keyword, "enum");
  // Shorter than 4 bytes: what follows the text in simdjson's buffer (the
  // next string) is not part of the hash.
  auto short_values = compile_schema(R"({"properties":{"v":{"enum":["","a","bb","ccc"]},"w":{}}})", "t.json");
  EXPECT_GT(slots_of(*short_values), 0u);
  for (std::string v : {"", "a", "bb", "ccc"}) {
    for (std::string next : {"", "zzzzzzzz", "a", "\\u0000\\u0000"}) {
      EXPECT_TRUE(run(*short_values, "{\"v\":\"" + v + "\",\"w\":\"" + next + "\"}").ok) << v << " then " << next;
    }
  }
  // The hash reads what follows a short text (the NUL, the next string's
  // length) as nothing: the same word as the value compiled into the table.
  // (A wrong word would still get the right verdict, from the node's full
  // check, so this is checked on the words themselves.)
  for (std::string v : {"", "a", "bb", "ccc", "dddd", "eeeee"}) {
    for (std::string next : {"", "zzzzzzzz", "\\u0001"}) {
      simdjson::dom::parser parser;
      [[maybe_unused]] simdjson::dom::element doc = parser.parse("{\"v\":\"" + v + "\",\"" + next + "\":1}");
      const tape::view t = tape::of(parser.doc);
      const auto* at = reinterpret_cast<const uint8_t*>(tape::string_at(t, tape::root + 2).data()) - 4;
      EXPECT_EQ(enum_word(at), enum_word(tape_text::of(v).bytes)) << v << " then " << next;
    }
  }
  for (std::string v : {"b", "aa", "cc", "cccc", "a\\u0000"}) EXPECT_EQ(run(*short_values, "{\"v\":\"" + v + "\"}").keyword, "enum") << v;
  // Random enums of 2 to 64 values over a small alphabet (many share heads
  // and lengths), against a plain search, hashed or not.
  std::mt19937 rng(7);
  auto word = [&](size_t max) {
    std::string w;
    for (size_t i = rng() % (max + 1); i > 0; --i) w += "ab"[rng() % 2];
    return w;
  };
  size_t hashed = 0;
  for (int round = 0; round < 200; ++round) {
    std::vector<std::string> values;
    for (size_t k = 2 + rng() % 63; values.size() < k;) {
      std::string w = word(10);
      if (std::find(values.begin(), values.end(), w) == values.end()) values.push_back(w);
    }
    std::string list;
    for (const auto& v : values) list += (list.empty() ? "\"" : ",\"") + v + "\"";
    auto p = compile_schema(R"({"properties":{"v":{"enum":[)" + list + "]}}}", "t.json");
    hashed += slots_of(*p) > 0;
    for (int probe = 0; probe < 40; ++probe) {
      const std::string w = probe < 10 ? values[rng() % values.size()] : word(12);
      const bool in = std::find(values.begin(), values.end(), w) != values.end();
      const auto r = run(*p, "{\"v\":\"" + w + "\"}");
      EXPECT_EQ(r.ok, in) << w << " in " << list;
      if (!in) EXPECT_EQ(r.keyword, "enum") << w;
    }
  }
  EXPECT_GT(hashed, 20u);  // both paths ran
  EXPECT_LT(hashed, 200u);
}

}  // namespace
}  // namespace evpipe::stages::schema
