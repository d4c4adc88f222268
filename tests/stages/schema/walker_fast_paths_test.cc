// The fast paths of stages/schema/walker.cc, each against the plain rule it
// stands in for: member lookup in the schema's order then by hash, enum
// strings compared as bytes, uuid and date-time read many bytes at a time,
// and the verdict walk that keeps no path.
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "stages/schema/compile.h"
#include "stages/schema/walker.h"

namespace evpipe::stages::schema {
namespace {

struct checked {
  bool ok;
  std::string keyword, pointer;
};

checked run(const std::shared_ptr<const program>& p, const std::string& value) {
  simdjson::dom::parser parser;
  [[maybe_unused]] simdjson::dom::element v = parser.parse(value);  // throws on bad JSON
  walker w;
  violation why;
  const bool quiet = w.check(*p, parser.doc);  // the verdict walk: no path, no message
  const bool ok = w.check(*p, parser.doc, &why);
  EXPECT_EQ(quiet, ok) << value;
  return ok ? checked{true, "", ""} : checked{false, std::string(keyword_name(why.what)), why.pointer};
}

// Names of one length sharing first, middle and last bytes, so that they
// share a hash slot and lookups must probe past each other.
const char* const crowded = R"({
  "type": "object",
  "properties": {
    "axxa": {"type": "integer"}, "axya": {"type": "string"}, "ayxa": {"type": "boolean"},
    "ayya": {"type": "null"}, "azxa": {"type": "array"}, "azya": {"type": "object"},
    "b": {"type": "integer"}, "": {"type": "string"}, "a-name-longer-than-sixteen-bytes": {"type": "integer"}
  },
  "required": ["axxa", "ayya"],
  "additionalProperties": false
})";

TEST(walker_fast_paths, members_found_in_any_order) {
  auto p = compile_schema(crowded, "t.json");
  const std::string in_order =
      R"({"axxa":1,"axya":"s","ayxa":true,"ayya":null,"azxa":[],"azya":{},"b":2,"":"e","a-name-longer-than-sixteen-bytes":3})";
  const std::string reversed =
      R"({"a-name-longer-than-sixteen-bytes":3,"":"e","b":2,"azya":{},"azxa":[],"ayya":null,"ayxa":true,"axya":"s","axxa":1})";
  EXPECT_TRUE(run(p, in_order).ok);
  EXPECT_TRUE(run(p, reversed).ok);
  // Each member's own rule applies, whichever slot or order found it.
  auto r = run(p, R"({"ayya":null,"axxa":1,"azya":[]})");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.keyword, "type");
  EXPECT_EQ(r.pointer, "/azya");
  r = run(p, R"({"axxa":1,"ayya":null,"a-name-longer-than-sixteen-bytes":"3"})");
  EXPECT_EQ(r.pointer, "/a-name-longer-than-sixteen-bytes");
  r = run(p, R"({"axxa":1,"ayya":null,"":1})");
  EXPECT_EQ(r.pointer, "/");
  // A name that shares the slot but is not a property is not allowed.
  r = run(p, R"({"axxa":1,"ayya":null,"axza":1})");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.keyword, "additionalProperties");
  EXPECT_EQ(r.pointer, "/axza");
  r = run(p, R"({"axxa":1,"ayya":null,"a-name-longer-than-sixteen-bytez":3})");
  EXPECT_EQ(r.keyword, "additionalProperties");
  // required, with members out of order.
  r = run(p, R"({"b":1,"axxa":1})");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.keyword, "required");
}

TEST(walker_fast_paths, a_repeated_property_name_keeps_its_first_rule) {
  // The parsed schema keeps both; the walker has always applied the first.
  auto p = compile_schema(R"({"properties":{"a":{"type":"integer"},"b":{},"a":{"type":"string"}}})", "t.json");
  EXPECT_TRUE(run(p, R"({"a":1})").ok);
  EXPECT_TRUE(run(p, R"({"b":0,"a":1})").ok);
  EXPECT_FALSE(run(p, R"({"a":"x"})").ok);
}

TEST(walker_fast_paths, enum_strings_and_other_values) {
  auto p = compile_schema(R"({"enum":["1","é",1,null,[1,"a"],{"k":2}]})", "t.json");
  EXPECT_TRUE(run(p, R"("1")").ok);
  EXPECT_TRUE(run(p, R"("\u00e9")").ok);  // escapes decoded: the same bytes
  EXPECT_TRUE(run(p, R"(1)").ok);
  EXPECT_TRUE(run(p, R"(1.0)").ok);  // numbers by value
  EXPECT_TRUE(run(p, R"(null)").ok);
  EXPECT_TRUE(run(p, R"([1,"a"])").ok);
  EXPECT_TRUE(run(p, R"({"k":2.0})").ok);
  EXPECT_FALSE(run(p, R"("1.0")").ok);  // a string equals only a string
  EXPECT_FALSE(run(p, R"("null")").ok);
  EXPECT_FALSE(run(p, R"("")").ok);
  EXPECT_FALSE(run(p, R"(2)").ok);
  EXPECT_EQ(run(p, R"(true)").keyword, "enum");
}

TEST(walker_fast_paths, uuid_every_position) {
  const std::string good = "123e4567-E89b-12d3-a456-426614174000";
  ASSERT_TRUE(is_uuid_text(good));
  for (size_t i = 0; i < good.size(); ++i) {
    const bool hyphen = i == 8 || i == 13 || i == 18 || i == 23;
    for (char c : {'g', 'G', '/', ':', '@', '`', '-', '0', 'F', '\0', '\x80', '\xC3'}) {
      std::string s = good;
      s[i] = c;
      const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
      EXPECT_EQ(is_uuid_text(s), hyphen ? c == '-' : hex) << "position " << i << " byte " << int(c);
    }
  }
  EXPECT_FALSE(is_uuid_text(good.substr(0, 35)));
  EXPECT_FALSE(is_uuid_text(good + "0"));
}

TEST(walker_fast_paths, date_time_every_position) {
  const std::string good = "2024-02-29T23:59:60.5+23:59";
  ASSERT_TRUE(is_rfc3339_date_time(good));
  // An x in any place is refused (the T and Z places take only t/T, z/Z).
  for (size_t i = 0; i < good.size(); ++i) {
    std::string s = good;
    s[i] = 'x';
    EXPECT_FALSE(is_rfc3339_date_time(s)) << s;
  }
  EXPECT_TRUE(is_rfc3339_date_time("2024-02-29t00:00:00z"));
  EXPECT_FALSE(is_rfc3339_date_time("2023-02-29T00:00:00Z"));
  EXPECT_TRUE(is_rfc3339_date_time("2023-12-31T00:00:00Z"));
  EXPECT_FALSE(is_rfc3339_date_time("2023-13-01T00:00:00Z"));
  EXPECT_FALSE(is_rfc3339_date_time("2023-00-01T00:00:00Z"));
  EXPECT_FALSE(is_rfc3339_date_time("2023-01-00T00:00:00Z"));
  EXPECT_FALSE(is_rfc3339_date_time("2023-01-01T24:00:00Z"));
  EXPECT_FALSE(is_rfc3339_date_time("2023-01-01T00:60:00Z"));
  EXPECT_FALSE(is_rfc3339_date_time("2023-01-01T00:00:61Z"));
  EXPECT_FALSE(is_rfc3339_date_time("2023-01-01T00:00:00"));
  EXPECT_FALSE(is_rfc3339_date_time("2023-01-01T00:00:00+01:60"));
  EXPECT_FALSE(is_rfc3339_date_time("2023-01-01T00:00:00+01:00 "));
  EXPECT_FALSE(is_rfc3339_date_time("2023-01-01 00:00:00Z"));
  EXPECT_FALSE(is_rfc3339_date_time("2023-01-01T00:00:00Zz"));
}

TEST(walker_fast_paths, simple_and_complex_patterns_in_a_schema) {
  // The first takes the bit-parallel matcher, the second (a group) RE2.
  auto p = compile_schema(R"({"properties":{"v":{"pattern":"^[0-9]+\\.[0-9]+$"},"w":{"pattern":"^(ab)+$"}}})", "t.json");
  EXPECT_TRUE(run(p, R"({"v":"1.25","w":"abab"})").ok);
  auto r = run(p, R"({"v":"1.2.5"})");
  EXPECT_EQ(r.keyword, "pattern");
  EXPECT_EQ(r.pointer, "/v");
  r = run(p, R"({"w":"aba"})");
  EXPECT_EQ(r.keyword, "pattern");
  EXPECT_EQ(r.pointer, "/w");
}

}  // namespace
}  // namespace evpipe::stages::schema

namespace evpipe::stages::schema {
namespace {

// The byte count settles a length when it can (a character is 1 to 4
// bytes); strings whose bytes leave it open are counted. Every edge of
// minLength and maxLength with characters of each width.
TEST(walker_fast_paths, string_lengths_settled_by_bytes_agree_with_counted_characters) {
  const std::string chars[] = {"a", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};  // 1 to 4 bytes each
  for (int limit = 0; limit <= 5; ++limit) {
    auto min = compile_schema(R"({"minLength":)" + std::to_string(limit) + "}", "t.json");
    auto max = compile_schema(R"({"maxLength":)" + std::to_string(limit) + "}", "t.json");
    for (const auto& c : chars) {
      for (int n = 0; n <= 6; ++n) {
        std::string s;
        for (int i = 0; i < n; ++i) s += c;
        const std::string json = "\"" + s + "\"";
        EXPECT_EQ(run(min, json).ok, n >= limit) << "minLength " << limit << ": " << json;
        EXPECT_EQ(run(max, json).ok, n <= limit) << "maxLength " << limit << ": " << json;
      }
    }
  }
}

}  // namespace
}  // namespace evpipe::stages::schema

namespace evpipe::stages::schema {
namespace {

// RFC 3339 date-time the plain way, for the fixed places that
// is_rfc3339_date_time reads 16 bytes at a time.
bool plain_date_time(const std::string& s) {
  static const std::regex form(R"(^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$)");
  std::smatch m;
  if (!std::regex_match(s, m, form)) return false;
  const int y = std::stoi(m[1]), mo = std::stoi(m[2]), d = std::stoi(m[3]);
  if (mo < 1 || mo > 12 || d < 1 || std::stoi(m[4]) > 23 || std::stoi(m[5]) > 59 || std::stoi(m[6]) > 60) return false;
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  const int days[] = {31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (d > days[mo - 1]) return false;
  return !m[9].matched || (std::stoi(m[9]) <= 23 && std::stoi(m[10]) <= 59);
}

TEST(walker_fast_paths, date_time_every_byte_value_in_every_fixed_place) {
  for (const std::string base : {"2000-01-01T00:00:00Z", "2024-02-29t23:59:60.5+23:59", "1999-12-31T19:09:09-00:30"}) {
    ASSERT_TRUE(is_rfc3339_date_time(base)) << base;
    for (size_t i = 0; i < 19; ++i) {
      for (int b = 0; b < 256; ++b) {
        std::string s = base;
        s[i] = static_cast<char>(b);
        EXPECT_EQ(is_rfc3339_date_time(s), plain_date_time(s)) << "byte " << b << " at " << i << " of " << base;
      }
    }
  }
}

// The fraction (read 8 bytes at a time) and the offset (read as the word
// that ends the text): every byte value in every place, for fractions of
// 1 to 20 digits, and every length cut short.
TEST(walker_fast_paths, date_time_every_byte_value_in_the_fraction_and_offset) {
  for (size_t digits = 1; digits <= 20; ++digits) {
    for (const std::string offset : {"Z", "+05:30", "-23:59"}) {
      const std::string base = "2024-02-29T23:59:60." + std::string(digits, '7') + offset;
      ASSERT_TRUE(is_rfc3339_date_time(base)) << base;
      for (size_t i = 19; i < base.size(); ++i) {
        for (int b = 0; b < 256; ++b) {
          std::string s = base;
          s[i] = static_cast<char>(b);
          EXPECT_EQ(is_rfc3339_date_time(s), plain_date_time(s)) << "byte " << b << " at " << i << " of " << base;
        }
      }
      for (size_t n = 19; n < base.size(); ++n) {
        EXPECT_EQ(is_rfc3339_date_time(base.substr(0, n)), plain_date_time(base.substr(0, n))) << base.substr(0, n);
      }
    }
  }
}

}  // namespace
}  // namespace evpipe::stages::schema
