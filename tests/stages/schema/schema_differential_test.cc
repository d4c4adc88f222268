// Differential test: for every shipped schema (schemas/kinds/), thousands of
// generated payloads, valid and invalid, checked by evpipe's walker and by
// valijson (the reference validator, Debian libvalijson-dev, used only here).
// The verdicts must be the same on every one.
//
// valijson 1.0 implements draft 7, not 2020-12, and the harness bridges the
// documented differences in the copy of the schema it gives valijson, never
// in evpipe's (docs/schemas.md, "Tested against valijson"):
//  - valijson does not check `format: uuid`: the copy says it as a pattern;
//  - valijson applies `format` to non-strings (and fails on them): the copy
//    wraps each format as "not a string, or a string of that format";
//  - valijson's date-time accepts February 29 of any year, 5-digit years and
//    '|' as an offset sign, and refuses 3.0 as an integer: the generator
//    makes none of those (the unit tests cover evpipe's side of them).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "stages/schema/compile.h"
#include "stages/schema/walker.h"

namespace evpipe::stages::schema {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const char* const uuid_pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

// The schema as valijson is given it (see the top of the file).
json for_valijson(json s) {
  if (s.is_object()) {
    s.erase("$schema");
    for (auto& [k, v] : s.items()) {
      if (k != "const" && k != "enum") v = for_valijson(v);
    }
    if (s.contains("format")) {
      std::string f = s["format"];
      s.erase("format");
      json string_branch = f == "uuid" ? json{{"type", "string"}, {"pattern", uuid_pattern}}
                                       : json{{"type", "string"}, {"format", f}};
      json wrapped = {{"anyOf", json::array({json{{"not", {{"type", "string"}}}}, string_branch})}};
      if (!s.contains("allOf")) s["allOf"] = json::array();
      s["allOf"].push_back(wrapped);
    }
  } else if (s.is_array()) {
    for (auto& v : s) v = for_valijson(v);
  }
  return s;
}

// Strings for each pattern the shipped schemas use: first some that match,
// then some that do not. A new pattern without samples fails the test, so
// that it gets some.
struct samples {
  std::vector<std::string> matching, other;
};
const std::map<std::string, samples> pattern_samples = {
    {R"(^[0-9]+\.[0-9]+\.[0-9]+$)", {{"1.0.0", "10.20.30", "0.0.1"}, {"1.0", "1.0.0-rc1", "v1.0.0", "1.0.0\n", "a.b.c", ""}}},
    {R"(^[0-9]{1,3}(\.[0-9]{1,3}){3}$)", {{"10.0.0.1", "192.168.100.200", "999.0.0.1"}, {"1.2.3", "1.2.3.4.5", "1234.1.1.1", "10.0.0.1\n"}}},
    {R"(^[0-9a-fA-F:]*:[0-9a-fA-F:.]*$)", {{"::1", "fe80::1", "2001:db8::ff00:42:8329", "::ffff:10.0.0.1"}, {"10.0.0.1x", "fe80:zz", "g::"}}},
    {R"(^[0-9]+[smhd]$)", {{"24h", "30m", "7d", "0s"}, {"24", "h", "24hours", "1.5h", "24H"}}},
    {R"(^[a-z0-9][a-z0-9_.-]*$)", {{"acme.reports", "p1", "my-plugin_2", "x"}, {"Plugin", "-x", "", "ok\n", "a b", "é"}}},
    {R"(^/)", {{"/api/v1/admin/users", "/"}, {"api/v1", "", " /x"}}},
    {R"(^[a-z_]+:[a-z_]+$)", {{"admin:read", "task_admin:write"}, {"admin", "admin:", "Admin:read", "a:b:c"}}},
};

struct generator {
  const json& root;
  std::mt19937_64 rng;
  double wrong = 0.08;  // chance that a generated value breaks its own subschema on purpose
  std::string missing_pattern;

  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }
  int64_t pick(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }

  const json& resolve(const json& s) {
    if (s.is_object() && s.contains("$ref")) {
      std::string ref = s["$ref"];
      return resolve(root.at(json::json_pointer(ref.substr(1))));
    }
    return s;
  }

  json any_value() {
    switch (pick(0, 6)) {
      case 0: return nullptr;
      case 1: return chance(0.5);
      case 2: return pick(-5, 5);
      case 3: return 2.5;
      case 4: return "x";
      case 5: return json::array({1});
      default: return json::object({{"k", 1}});
    }
  }

  std::string text(int64_t len) {
    static const char* pieces[] = {"a", "b", "Z", "0", "é", "😀", " ", "-", "_"};
    std::string s;
    for (int64_t i = 0; i < len; ++i) s += pieces[pick(0, 8)];
    return s;
  }

  std::string date_time() {
    int year = chance(0.2) ? 2024 : int(pick(1970, 2099));
    int month = int(pick(1, 12));
    int day = int(pick(1, 28));
    if (chance(0.1)) day = month == 2 ? ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28) : 30;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d", year, month, day, int(pick(0, 23)), int(pick(0, 59)),
                  int(pick(0, 60)));
    std::string s = buf;
    if (chance(0.3)) s += "." + std::to_string(pick(0, 999999));
    s += chance(0.5) ? "Z" : (chance(0.5) ? "+05:30" : "-08:00");
    if (chance(wrong * 3)) {
      switch (pick(0, 7)) {
        case 0: s[5] = '1', s[6] = '3'; break;             // month 13
        case 1: s[8] = '3', s[9] = '2'; break;             // day 32
        case 2: s[11] = '2', s[12] = '4'; break;           // hour 24
        case 3: s[14] = '6'; break;                        // minute 6x
        case 4: s[10] = ' '; break;                        // space separator
        case 5: s.pop_back(); if (s.back() != ':') s = s.substr(0, 19); break;  // no offset
        case 6: s = s.substr(0, 16) + "Z"; break;          // no seconds
        default: s = std::string(s.substr(0, 5)) + "02-30" + s.substr(10); break;  // February 30
      }
    }
    return s;
  }

  std::string uuid() {
    static const char* hex = "0123456789abcdefABCDEF";
    std::string s;
    for (int i = 0; i < 36; ++i) s += (i == 8 || i == 13 || i == 18 || i == 23) ? '-' : hex[pick(0, 21)];
    if (chance(wrong * 3)) {
      switch (pick(0, 3)) {
        case 0: s.erase(8, 1); break;
        case 1: s[3] = 'g'; break;
        case 2: s = "{" + s + "}"; break;
        default: s += "0"; break;
      }
    }
    return s;
  }

  json string_for(const json& s) {
    if (s.contains("format")) return s["format"] == "uuid" ? uuid() : date_time();
    std::vector<std::string> patterns;
    if (s.contains("pattern")) patterns.push_back(s["pattern"]);
    if (s.contains("anyOf")) {
      for (const auto& b : s["anyOf"]) {
        if (b.contains("pattern")) patterns.push_back(b["pattern"]);
      }
    }
    if (!patterns.empty()) {
      const std::string& p = patterns[pick(0, int64_t(patterns.size()) - 1)];
      auto it = pattern_samples.find(p);
      if (it == pattern_samples.end()) {
        missing_pattern = p;
        return "";
      }
      const auto& pool = wrong == 0 || chance(0.5) ? it->second.matching : it->second.other;
      std::string v = pool[pick(0, int64_t(pool.size()) - 1)];
      if (s.contains("maxLength") && chance(wrong)) v += std::string(s["maxLength"].get<size_t>(), 'a');
      return v;
    }
    int64_t lo = s.value("minLength", 0), hi = s.value("maxLength", lo + 12);
    // The edges, and one past each, most of the time.
    // The edges, and one past each when aiming at broken values.
    const int64_t edges = wrong == 0 ? 1 : 3;
    int64_t len = chance(0.6) ? std::vector<int64_t>{lo, hi, std::max<int64_t>(0, lo - 1), hi + 1}[pick(0, edges)]
                              : pick(lo, std::min<int64_t>(hi, lo + 30));
    return text(std::min<int64_t>(len, 400));
  }

  json number_for(const json& s, bool integer) {
    std::vector<double> edges;
    for (const char* k : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}) {
      if (s.contains(k)) edges.push_back(s[k].get<double>());
    }
    if (edges.empty()) edges.push_back(0);
    double base = edges[pick(0, int64_t(edges.size()) - 1)];
    double delta = integer ? double(pick(-2, 2)) : std::vector<double>{-1, -0.5, -1e-9, 0, 1e-9, 0.25, 3}[pick(0, 6)];
    double v = integer ? double(int64_t(base) + int64_t(delta)) : chance(0.2) ? double(int64_t(base) + pick(-2, 2))
                                                                               : base + delta;
    if (wrong == 0) {
      // Aiming at a valid value: moved inside the bounds when it fell outside.
      double lo = s.value("minimum", -1e9), hi = s.value("maximum", 1e9);
      if (s.contains("exclusiveMinimum")) lo = std::max(lo, s["exclusiveMinimum"].get<double>() + 1);
      if (s.contains("exclusiveMaximum")) hi = std::min(hi, s["exclusiveMaximum"].get<double>() - 1);
      if (v < lo || v > hi) v = integer ? std::ceil(lo) : lo;
    }
    if (integer || (v == std::trunc(v) && chance(0.5))) return int64_t(v);  // an integer where a number is asked, too
    return v;
  }

  json make(const json& schema_in, int depth) {
    const json& s = resolve(schema_in);
    if (s.is_boolean()) return any_value();
    if (chance(wrong / 2)) return any_value();  // wrong type, most of the time
    if (s.contains("const")) return chance(wrong) ? any_value() : s["const"];
    if (s.contains("enum")) return chance(wrong) ? json("not_in_enum") : s["enum"][pick(0, int64_t(s["enum"].size()) - 1)];
    std::string type = "object";
    if (s.contains("type")) {
      const json& t = s["type"];
      type = t.is_array() ? t[pick(0, int64_t(t.size()) - 1)].get<std::string>() : t.get<std::string>();
    } else if (s.contains("properties") || s.contains("required")) {
      type = "object";
    } else if (s.contains("pattern") || s.contains("format")) {
      type = "string";
    }
    if (type == "null") return nullptr;
    if (type == "boolean") return chance(0.5);
    if (type == "string") return string_for(s);
    if (type == "integer") return number_for(s, true);
    if (type == "number") return number_for(s, false);
    if (type == "array") {
      int64_t lo = s.value("minItems", 0), hi = s.value("maxItems", lo + 4);
      int64_t n = chance(0.3) ? std::vector<int64_t>{lo, hi, std::max<int64_t>(0, lo - 1), hi + 1}[pick(0, 3)]
                              : pick(lo, std::min<int64_t>(hi, lo + 4));
      json a = json::array();
      for (int64_t i = 0; i < n && depth < 8; ++i) a.push_back(s.contains("items") ? make(s["items"], depth + 1) : any_value());
      return a;
    }
    json o = json::object();
    if (s.contains("properties")) {
      std::vector<std::string> required;
      if (s.contains("required")) required = s["required"].get<std::vector<std::string>>();
      for (const auto& [name, sub] : s["properties"].items()) {
        bool req = std::find(required.begin(), required.end(), name) != required.end();
        if (req ? !chance(wrong) : chance(0.6)) o[name] = make(sub, depth + 1);
      }
    }
    if (chance(wrong)) o["unexpected_field"] = any_value();
    return o;
  }
};

struct totals {
  size_t valid = 0, invalid = 0;
};

// The sanitizer build (scripts/test.sh: build-sanitize, Debug with
// -fsanitize=address,undefined) spends about 6 ms of CPU per document (the
// generator, valijson and nlohmann::json at -O0 under ASan): 4000 per schema
// took 180 s there. That build is for memory and undefined-behaviour errors
// along the same paths, not for coverage, so it checks a fixed 200 documents
// per schema (9 s of CPU for the 8 schemas, measured; 300 each took 15 s)
// and the Release build keeps the full budget. GCC says ASan is on with
// __SANITIZE_ADDRESS__, clang with __has_feature(address_sanitizer).
#if defined(__SANITIZE_ADDRESS__)
constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif
#else
constexpr bool sanitized = false;
#endif

TEST(schema_differential, shipped_schemas_agree_with_valijson) {
  const fs::path dir = fs::path(EVPIPE_SOURCE_DIR) / "schemas" / "kinds";
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 6u);
  const size_t per_schema = sanitized ? 200 : 4000;              // documents per schema,
  const auto budget = std::chrono::seconds(sanitized ? 600 : 45);  // or fewer when this runs out (a loaded machine)
  const size_t at_least = sanitized ? 200 : 1000;                 // documents per schema, whatever the load
  size_t mismatches = 0;
  for (const auto& file : files) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    const std::string name = fs::relative(file, dir).string();
    auto ours = compile_schema(text.str(), name);
    const json original = json::parse(text.str());
    const json reference_text = for_valijson(original);
    valijson::Schema reference;
    valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
    valijson::adapters::NlohmannJsonAdapter schema_adapter(reference_text);
    parser.populateSchema(schema_adapter, reference);
    valijson::Validator validator;

    generator gen{.root = original, .rng = std::mt19937_64(std::hash<std::string>{}(name))};
    walker w;
    simdjson::dom::parser sj;
    totals t;
    const auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < per_schema && std::chrono::steady_clock::now() - start < budget; ++i) {
      gen.wrong = i % 2 ? 0.0 : 0.08;  // half aim at valid documents, half at broken ones
      json doc = gen.make(original, 0);
      ASSERT_EQ(gen.missing_pattern, "") << name << ": add samples for this pattern to pattern_samples";
      const std::string doc_text = doc.dump();
      [[maybe_unused]] simdjson::dom::element parsed = sj.parse(doc_text);  // throws on bad JSON
      const bool evpipe_ok = w.check(*ours, sj.doc);
      valijson::adapters::NlohmannJsonAdapter target(doc);
      const bool reference_ok = validator.validate(reference, target, nullptr);
      (evpipe_ok ? t.valid : t.invalid)++;
      if (evpipe_ok != reference_ok && ++mismatches <= 10) {
        violation why;
        (void)w.check(*ours, sj.doc, &why);
        ADD_FAILURE() << name << ": evpipe says " << (evpipe_ok ? "valid" : "invalid") << ", valijson "
                      << (reference_ok ? "valid" : "invalid") << " for " << doc_text
                      << (evpipe_ok ? "" : "\n  evpipe: " + why.pointer + " " + std::string(keyword_name(why.what)) +
                                               " " + why.detail);
      }
    }
    std::printf("%-36s %5zu valid, %5zu invalid, same verdict on all but %zu\n", name.c_str(), t.valid, t.invalid,
                mismatches);
    // Thousands in all (hundreds in the sanitizer build), and neither verdict rare.
    EXPECT_GE(t.valid + t.invalid, at_least) << name;
    EXPECT_GE(t.valid * 5, t.valid + t.invalid) << name;
    EXPECT_GE(t.invalid * 5, t.valid + t.invalid) << name;
  }
  EXPECT_EQ(mismatches, 0u);
}

}  // namespace
}  // namespace evpipe::stages::schema
