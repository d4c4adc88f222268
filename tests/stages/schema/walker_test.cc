// Every supported keyword on both sides of its edge (stages/schema/walker.cc),
// with the keyword and JSON pointer a failure reports.
#include "stages/schema/walker.h"

#include <gtest/gtest.h>

#include "stages/schema/compile.h"

namespace evpipe::stages::schema {
namespace {

struct verdict {
  bool ok;
  std::string keyword;
  std::string pointer;
  std::string detail;
};

verdict run(const std::string& schema, const std::string& value) {
  auto p = compile_schema(schema, "test.json");
  simdjson::dom::parser parser;
  [[maybe_unused]] simdjson::dom::element v = parser.parse(value);  // throws on bad JSON
  walker w;
  violation why;
  bool ok = w.check(*p, parser.doc, &why);
  EXPECT_EQ(ok, w.check(*p, parser.doc)) << "the verdict must not depend on reporting";
  return ok ? verdict{true, "", "", ""} : verdict{false, std::string(keyword_name(why.what)), why.pointer, why.detail};
}

struct edge {
  const char* schema;
  const char* value;
  bool ok;
  const char* keyword;  // the keyword a failure names
  const char* pointer = "";
};

class keyword_edges : public ::testing::TestWithParam<edge> {};

TEST_P(keyword_edges, verdict_keyword_and_pointer) {
  const edge& e = GetParam();
  verdict v = run(e.schema, e.value);
  EXPECT_EQ(v.ok, e.ok) << e.schema << " with " << e.value << ": " << v.keyword << " " << v.detail;
  if (!e.ok && !v.ok) {
    EXPECT_EQ(v.keyword, e.keyword) << e.schema << " with " << e.value;
    EXPECT_EQ(v.pointer, e.pointer) << e.schema << " with " << e.value;
  }
}

const edge edges[] = {
    // type
    {R"({"type":"string"})", R"("a")", true, ""},
    {R"({"type":"string"})", R"(1)", false, "type"},
    {R"({"type":"integer"})", R"(3)", true, ""},
    {R"({"type":"integer"})", R"(3.0)", true, ""},  // no fractional part: an integer (2020-12)
    {R"({"type":"integer"})", R"(3.5)", false, "type"},
    {R"({"type":"number"})", R"(3.5)", true, ""},
    {R"({"type":"number"})", R"("3.5")", false, "type"},
    {R"({"type":"boolean"})", R"(false)", true, ""},
    {R"({"type":"boolean"})", R"(0)", false, "type"},
    {R"({"type":"null"})", R"(null)", true, ""},
    {R"({"type":"null"})", R"(false)", false, "type"},
    {R"({"type":"array"})", R"([])", true, ""},
    {R"({"type":"array"})", R"({})", false, "type"},
    {R"({"type":"object"})", R"({})", true, ""},
    {R"({"type":"object"})", R"([])", false, "type"},
    {R"({"type":["string","null"]})", R"(null)", true, ""},
    {R"({"type":["string","null"]})", R"(true)", false, "type"},
    {R"({"type":"integer"})", R"(18446744073709551615)", true, ""},
    // required
    {R"({"required":["a","b"]})", R"({"a":1,"b":2})", true, ""},
    {R"({"required":["a","b"]})", R"({"a":1})", false, "required"},
    {R"({"properties":{"a":{},"b":{}},"required":["b"]})", R"({"b":null})", true, ""},
    {R"({"properties":{"a":{},"b":{}},"required":["b"]})", R"({"a":null})", false, "required"},
    {R"({"required":["a"]})", R"("not an object")", true, ""},  // applies to objects only
    // properties
    {R"({"properties":{"n":{"type":"integer"}}})", R"({"n":1})", true, ""},
    {R"({"properties":{"n":{"type":"integer"}}})", R"({"n":"1"})", false, "type", "/n"},
    {R"({"properties":{"a/b~c":{"type":"integer"}}})", R"({"a/b~c":"x"})", false, "type", "/a~1b~0c"},
    {R"({"properties":{"o":{"properties":{"p":{"const":1}}}}})", R"({"o":{"p":2}})", false, "const", "/o/p"},
    // additionalProperties
    {R"({"properties":{"a":{}},"additionalProperties":false})", R"({"a":1})", true, ""},
    {R"({"properties":{"a":{}},"additionalProperties":false})", R"({"a":1,"b":2})", false, "additionalProperties", "/b"},
    {R"({"additionalProperties":{"type":"string"}})", R"({"x":"y"})", true, ""},
    {R"({"additionalProperties":{"type":"string"}})", R"({"x":1})", false, "type", "/x"},
    {R"({"additionalProperties":true})", R"({"x":1})", true, ""},
    // enum, const
    {R"({"enum":["a",1,null,{"k":[1,2]}]})", R"("a")", true, ""},
    {R"({"enum":["a",1,null,{"k":[1,2]}]})", R"(1.0)", true, ""},
    {R"({"enum":["a",1,null,{"k":[1,2]}]})", R"({"k":[1,2]})", true, ""},
    {R"({"enum":["a",1,null,{"k":[1,2]}]})", R"({"k":[2,1]})", false, "enum"},
    {R"({"enum":["a",1,null,{"k":[1,2]}]})", R"("b")", false, "enum"},
    {R"({"enum":[true]})", R"(1)", false, "enum"},
    {R"({"const":{"a":1,"b":"x"}})", R"({"b":"x","a":1})", true, ""},
    {R"({"const":{"a":1,"b":"x"}})", R"({"b":"x","a":1,"c":0})", false, "const"},
    {R"({"const":-1})", R"(18446744073709551615)", false, "const"},
    // consts and enums of several nodes: each compared with its own values
    // (the walker finds them on one tape of all of them, program::literals)
    {R"({"properties":{"a":{"const":[1,{"x":2}]},"b":{"enum":[null,2.5,"s",[3]]},"c":{"const":7,"enum":["z",7]}}})", R"({"a":[1,{"x":2}],"b":2.5,"c":7})", true, ""},
    {R"({"properties":{"a":{"const":[1,{"x":2}]},"b":{"enum":[null,2.5,"s",[3]]},"c":{"const":7,"enum":["z",7]}}})", R"({"a":[1,{"x":2}],"b":[3],"c":7.0})", true, ""},
    {R"({"properties":{"a":{"const":[1,{"x":2}]},"b":{"enum":[null,2.5,"s",[3]]},"c":{"const":7,"enum":["z",7]}}})", R"({"b":null,"a":[1,{"x":3}]})", false, "const", "/a"},
    {R"({"properties":{"a":{"const":[1,{"x":2}]},"b":{"enum":[null,2.5,"s",[3]]},"c":{"const":7,"enum":["z",7]}}})", R"({"b":7})", false, "enum", "/b"},
    {R"({"properties":{"a":{"const":[1,{"x":2}]},"b":{"enum":[null,2.5,"s",[3]]},"c":{"const":7,"enum":["z",7]}}})", R"({"b":"s","c":"z"})", false, "const", "/c"},
    {R"({"properties":{"a":{"const":[1,{"x":2}]},"b":{"enum":[null,2.5,"s",[3]]},"c":{"const":7,"enum":["z",7]}}})", R"({"c":2.5})", false, "const", "/c"},
    // minimum, maximum, exclusiveMinimum, exclusiveMaximum
    {R"({"minimum":5})", R"(5)", true, ""},
    {R"({"minimum":5})", R"(4.999)", false, "minimum"},
    {R"({"maximum":5})", R"(5)", true, ""},
    {R"({"maximum":5})", R"(5.001)", false, "maximum"},
    {R"({"exclusiveMinimum":5})", R"(5.001)", true, ""},
    {R"({"exclusiveMinimum":5})", R"(5)", false, "exclusiveMinimum"},
    {R"({"exclusiveMaximum":5})", R"(4.999)", true, ""},
    {R"({"exclusiveMaximum":5})", R"(5)", false, "exclusiveMaximum"},
    {R"({"minimum":-1.5})", R"(-1)", true, ""},
    {R"({"minimum":-1.5})", R"(-2)", false, "minimum"},
    {R"({"minimum":5})", R"("4")", true, ""},  // numbers only
    // minLength, maxLength: code points, not bytes
    {R"({"minLength":2})", R"("ab")", true, ""},
    {R"({"minLength":2})", R"("a")", false, "minLength"},
    {R"({"maxLength":2})", R"("éé")", true, ""},  // 4 bytes, 2 characters
    {R"({"maxLength":2})", R"("ééé")", false, "maxLength"},
    {R"({"maxLength":1})", R"("😀")", true, ""},
    {R"({"minLength":2})", R"("😀")", false, "minLength"},
    // pattern (RE2, unanchored as in JSON Schema)
    {R"({"pattern":"^[a-z]+-[0-9]{2}$"})", R"("ab-12")", true, ""},
    {R"({"pattern":"^[a-z]+-[0-9]{2}$"})", R"("ab-123")", false, "pattern"},
    {R"({"pattern":"b"})", R"("abc")", true, ""},
    {R"({"pattern":"b"})", R"("ac")", false, "pattern"},
    // format
    {R"({"format":"uuid"})", R"("550e8400-e29b-41d4-a716-446655440000")", true, ""},
    {R"({"format":"uuid"})", R"("550E8400-E29B-41D4-A716-446655440000")", true, ""},
    {R"({"format":"uuid"})", R"("550e8400e29b41d4a716446655440000")", false, "format"},
    {R"({"format":"uuid"})", R"("550e8400-e29b-41d4-a716-44665544000g")", false, "format"},
    {R"({"format":"date-time"})", R"("2024-02-29T23:59:60.5+14:00")", true, ""},
    {R"({"format":"date-time"})", R"("2023-02-29T00:00:00Z")", false, "format"},  // not a leap year
    {R"({"format":"date-time"})", R"("2025-01-15T10:30:00")", false, "format"},   // offset required
    {R"({"format":"date-time"})", R"("2025-01-15 10:30:00Z")", false, "format"},
    {R"({"format":"date-time"})", R"("2025-01-15t10:30:00z")", true, ""},
    {R"({"format":"date-time"})", R"("2025-01-15T24:00:00Z")", false, "format"},
    {R"({"format":"uuid"})", R"(12)", true, ""},  // strings only
    // items, minItems, maxItems
    {R"({"items":{"type":"integer"}})", R"([1,2,3])", true, ""},
    {R"({"items":{"type":"integer"}})", R"([1,"2",3])", false, "type", "/1"},
    {R"({"minItems":2})", R"([1,2])", true, ""},
    {R"({"minItems":2})", R"([1])", false, "minItems"},
    {R"({"maxItems":2})", R"([1,2])", true, ""},
    {R"({"maxItems":2})", R"([1,2,3])", false, "maxItems"},
    {R"({"properties":{"l":{"items":{"properties":{"n":{"maxLength":1}}}}}})", R"({"l":[{"n":"a"},{"n":"ab"}]})",
     false, "maxLength", "/l/1/n"},
    // $ref within the file, $defs
    {R"({"$defs":{"pos":{"type":"integer","minimum":1}},"properties":{"n":{"$ref":"#/$defs/pos"}}})", R"({"n":1})", true, ""},
    {R"({"$defs":{"pos":{"type":"integer","minimum":1}},"properties":{"n":{"$ref":"#/$defs/pos"}}})", R"({"n":0})", false,
     "minimum", "/n"},
    {R"({"$ref":"#/$defs/a","maxLength":3,"$defs":{"a":{"type":"string"}}})", R"("abcd")", false, "maxLength"},  // siblings apply (2020-12)
    {R"({"properties":{"next":{"$ref":"#"}},"required":["v"]})", R"({"v":1,"next":{"v":2,"next":{"v":3}}})", true, ""},
    {R"({"properties":{"next":{"$ref":"#"}},"required":["v"]})", R"({"v":1,"next":{"v":2,"next":{}}})", false,
     "required", "/next/next"},
    {R"({"$defs":{"a b":{"const":1}},"$ref":"#/$defs/a%20b"})", R"(1)", true, ""},
    // allOf, anyOf, oneOf
    {R"({"allOf":[{"minimum":1},{"maximum":3}]})", R"(2)", true, ""},
    {R"({"allOf":[{"minimum":1},{"maximum":3}]})", R"(4)", false, "maximum"},
    {R"({"anyOf":[{"type":"string"},{"minimum":10}]})", R"(10)", true, ""},
    {R"({"anyOf":[{"type":"string"},{"minimum":10}]})", R"(9)", false, "anyOf"},
    {R"({"oneOf":[{"type":"integer"},{"minimum":10}]})", R"(9)", true, ""},
    {R"({"oneOf":[{"type":"integer"},{"minimum":10}]})", R"(10)", false, "oneOf"},  // both
    {R"({"oneOf":[{"type":"integer"},{"minimum":10}]})", R"(1.5)", false, "oneOf"},  // neither
    // boolean schemas
    {R"(true)", R"({"anything":[1]})", true, ""},
    {R"({"properties":{"gone":false}})", R"({"here":1})", true, ""},
    {R"({"properties":{"gone":false}})", R"({"gone":1})", false, "false", "/gone"},
    // annotations are accepted and change nothing
    {R"({"$schema":"https://json-schema.org/draft/2020-12/schema","title":"t","description":"d","$comment":"c",
        "examples":[1],"default":1,"deprecated":false,"type":"integer"})", R"(1)", true, ""},
};

INSTANTIATE_TEST_SUITE_P(every_keyword, keyword_edges, ::testing::ValuesIn(edges));

TEST(walker, reports_the_first_failure_in_document_order) {
  verdict v = run(R"({"properties":{"a":{"type":"string"},"b":{"type":"string"}}})", R"({"b":1,"a":2})");
  EXPECT_EQ(v.pointer, "/b");
  EXPECT_EQ(v.detail, "expected string, got number");
}

TEST(walker, reused_walker_starts_each_check_at_the_root) {
  auto p = compile_schema(R"({"items":{"properties":{"x":{"type":"integer"}}}})", "t.json");
  simdjson::dom::parser parser;
  walker w;
  violation why;
  ASSERT_FALSE(parser.parse(std::string(R"([{"x":1},{"x":"no"}])")).error());
  EXPECT_FALSE(w.check(*p, parser.doc, &why));
  EXPECT_EQ(why.pointer, "/1/x");
  simdjson::dom::parser parser2;
  ASSERT_FALSE(parser2.parse(std::string(R"([{"x":"no"}])")).error());
  EXPECT_FALSE(w.check(*p, parser2.doc, &why));
  EXPECT_EQ(why.pointer, "/0/x");
  EXPECT_EQ(why.schema_at, "#/items/properties/x");
}

TEST(formats, rfc3339_and_uuid_text) {
  EXPECT_TRUE(is_rfc3339_date_time("2000-02-29T00:00:00Z"));
  EXPECT_FALSE(is_rfc3339_date_time("1900-02-29T00:00:00Z"));
  EXPECT_FALSE(is_rfc3339_date_time("2025-04-31T00:00:00Z"));
  EXPECT_FALSE(is_rfc3339_date_time("2025-01-15T10:30:00.Z"));
  EXPECT_FALSE(is_rfc3339_date_time("2025-01-15T10:30:00+0100"));
  EXPECT_FALSE(is_rfc3339_date_time("2025-01-15T10:30:00+24:00"));
  EXPECT_TRUE(is_rfc3339_date_time("2025-01-15T10:30:00-01:30"));
  EXPECT_FALSE(is_uuid_text("{550e8400-e29b-41d4-a716-446655440000}"));
}

}  // namespace
}  // namespace evpipe::stages::schema
