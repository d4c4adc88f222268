#pragma once
// The events and the schema set of bench/schema_bench.cc and
// bench/schema_callgrind.cc, so both measure the same thing.
#include <simdjson.h>

#include <fstream>
#include <memory>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "stages/schema/compile.h"
#include "stages/schema/schema_set.h"
#include "stages/validate.h"

namespace evpipe::bench {

namespace schema = evpipe::stages::schema;

inline std::string uuid(std::mt19937_64& rng) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 36; ++i) s += (i == 8 || i == 13 || i == 18 || i == 23) ? '-' : hex[rng() % 16];
  return s;
}

// project_created events whose payload has all 10 fields, all valid.
inline std::vector<std::string> make_events(size_t n = 1024) {
  std::mt19937_64 rng(42);
  static const char* statuses[] = {"planning", "active", "on_hold", "completed"};
  std::vector<std::string> out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = R"({"trace_id":")" + uuid(rng) + R"(","ts":"2025-01-15T10:30:00Z","kind":"project_created",)" +
             R"("idempotency_key":"project_created_)" + std::to_string(i) + R"(","payload":{"project_id":")" +
             uuid(rng) + R"(","name":"Project )" + std::to_string(rng() % 100000) + R"(","status":")" +
             statuses[rng() % 4] + R"(","created_by":")" + uuid(rng) +
             R"(","timestamp":"2025-01-15T10:30:00.123456+00:00","description":"Migrate the tracker to the new )" +
             R"(event pipeline","tags":["infra","q1","events"],"priority":)" + std::to_string(1 + rng() % 5) +
             R"(,"budget":)" + std::to_string(rng() % 100000) + R"(.5,"metadata":{"source":"api","version":"1.0.0"}}})";
    out[i].reserve(out[i].size() + simdjson::SIMDJSON_PADDING);
  }
  return out;
}

// The shipped project_created.json; `strip` 1 drops its `pattern`, 2 its
// `format`s too: how much of the walk those keywords take.
inline std::shared_ptr<const schema::schema_set> shipped_set(int strip = 0) {
  schema::set_options o;
  auto set = std::make_shared<schema::schema_set>(o);
  std::ifstream in(std::string(EVPIPE_SOURCE_DIR) + "/schemas/kinds/project_created.json");
  std::stringstream text;
  text << in.rdbuf();
  std::string schema_text = text.str();
  if (strip >= 1) schema_text = std::regex_replace(schema_text, std::regex(R"(, "pattern": "(?:[^"\\]|\\.)*")"), "");
  if (strip >= 2) schema_text = std::regex_replace(schema_text, std::regex(R"(, "format": "[^"]*")"), "");
  set->add("project_created", "", schema::compile_schema(schema_text, "project_created.json"));
  return set;
}

// One event as pipeline/intake.cc checks it with payload schemas: the
// envelope, then, if it passes, the payload against its kind's schema on the
// same parsed document; the schema's verdict replaces the envelope's only
// when it fails.
inline stages::validation envelope_and_schema(stages::envelope_validator& v, stages::envelope& env,
                                              const schema::schema_set& set, schema::walker& w, const std::string& e) {
  auto r = v.check(e, e.capacity(), env);
  if (r.ok()) {
    if (auto s = set.check(env.kind, v.parsed(), w); !s.ok()) r = std::move(s);
  }
  return r;
}

}  // namespace evpipe::bench
