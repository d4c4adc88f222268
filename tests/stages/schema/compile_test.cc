// The compiler refuses what it does not support, naming the file and the
// JSON pointer (stages/schema/compile.cc); nothing is silently ignored.
#include "stages/schema/compile.h"

#include <gtest/gtest.h>

namespace evpipe::stages::schema {
namespace {

std::string refusal(const std::string& schema) {
  try {
    (void)compile_schema(schema, "kind_x.json");
  } catch (const schema_error& e) {
    return e.what();
  }
  return "";
}

struct refused {
  const char* schema;
  const char* message;  // a part of the message: the pointer and the problem
};

class unsupported : public ::testing::TestWithParam<refused> {};

TEST_P(unsupported, is_refused_naming_file_and_pointer) {
  std::string m = refusal(GetParam().schema);
  EXPECT_NE(m.find("kind_x.json"), std::string::npos) << m;
  EXPECT_NE(m.find(GetParam().message), std::string::npos) << "got: " << m;
}

const refused cases[] = {
    {R"({"multipleOf":2})", "at #/multipleOf: keyword \"multipleOf\" is not supported"},
    {R"({"properties":{"a":{"uniqueItems":true}}})", "at #/properties/a/uniqueItems: keyword \"uniqueItems\""},
    {R"({"items":{"contains":{}}})", "at #/items/contains"},
    {R"({"patternProperties":{"^a":{}}})", "at #/patternProperties"},
    {R"({"propertyNames":{}})", "at #/propertyNames"},
    {R"({"dependentRequired":{}})", "at #/dependentRequired"},
    {R"({"minProperties":1})", "at #/minProperties"},
    {R"({"not":{}})", "at #/not"},
    {R"({"if":{},"then":{}})", "at #/if"},
    {R"({"unevaluatedProperties":false})", "at #/unevaluatedProperties"},
    {R"({"prefixItems":[{}]})", "at #/prefixItems"},
    {R"({"items":[{}]})", "at #/items: items must be one schema"},
    {R"({"definitions":{}})", "at #/definitions"},
    {R"({"$anchor":"a"})", "at #/$anchor"},
    {R"({"$dynamicRef":"#a"})", "at #/$dynamicRef"},
    {R"({"properties":{"a":{"$id":"x"}}})", "at #/properties/a/$id"},  // $id only at the root
    {R"({"$ref":"other.json#/a"})", "at #/$ref: \"other.json#/a\": only references within the file"},
    {R"({"$ref":"#/$defs/missing"})", "points at nothing"},
    {R"({"$ref":"#a"})", "is not a JSON pointer"},
    {R"({"$ref":"#"})", "loop that never descends"},
    {R"({"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"allOf":[{"$ref":"#/$defs/a"}]}}})", "loop that never descends"},
    {R"({"format":"email"})", "at #/format: format \"email\" is not supported"},
    {R"({"pattern":"(?<=a)b"})", "at #/pattern: \"(?<=a)b\" is not a pattern RE2 accepts"},
    {R"({"type":"float"})", "at #/type: must be one of"},
    {R"({"type":[]})", "at #/type: must name at least one type"},
    {R"({"minLength":-1})", "at #/minLength: must be a non-negative integer"},
    {R"({"maxItems":1.5})", "at #/maxItems: must be a non-negative integer"},
    {R"({"minimum":"1"})", "at #/minimum: must be a number"},
    {R"({"required":"a"})", "at #/required: must be an array of strings"},
    {R"({"anyOf":[]})", "at #/anyOf: must be a non-empty array"},
    {R"({"oneOf":[{"type":"string"}, 3]})", "at #/oneOf/1: a schema must be an object or true/false"},
    {R"({"$schema":"http://json-schema.org/draft-07/schema#"})", "at #/$schema: only"},
    {R"({"properties":{"a":{"$schema":"https://json-schema.org/draft/2020-12/schema"}}})", "at #/properties/a/$schema"},
    {R"([1])", "at #: a schema must be an object"},
    {R"({"type":"string",)", "not valid JSON"},
    {R"({"$defs":{"unused":{"maxContains":1}}})", "at #/$defs/unused/maxContains"},  // checked even when unreferenced
};

INSTANTIATE_TEST_SUITE_P(keywords, unsupported, ::testing::ValuesIn(cases));

TEST(compile, supported_keywords_compile) {
  EXPECT_EQ(refusal(R"({
    "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://example.com/k", "title": "k",
    "type": "object", "required": ["a"], "additionalProperties": false,
    "properties": {
      "a": {"type": "string", "minLength": 1, "maxLength": 9, "pattern": "^x", "format": "uuid"},
      "b": {"type": "number", "minimum": 0, "maximum": 9, "exclusiveMinimum": -1, "exclusiveMaximum": 10},
      "c": {"type": "array", "items": {"$ref": "#/$defs/e"}, "minItems": 0, "maxItems": 3},
      "d": {"enum": [1, "x"], "const": 1, "format": "date-time"},
      "f": {"allOf": [true], "anyOf": [{}], "oneOf": [false, {}]}
    },
    "$defs": {"e": {"type": ["string", "null"], "$comment": "c", "examples": [], "default": null}}
  })"),
            "");
}

}  // namespace
}  // namespace evpipe::stages::schema
