#include "stages/validate.h"

#include <gtest/gtest.h>

#include <simdjson.h>

#include <string>

namespace evpipe::stages {
namespace {

std::string event(std::string trace = "\"550e8400-e29b-41d4-a716-446655440000\"",
                  std::string ts = "\"2025-01-15T10:30:00Z\"", std::string kind = "\"project_created\"",
                  std::string key = "\"k-1\"", std::string payload = "{\"a\":1}", std::string extra = "") {
  return "{\"trace_id\":" + trace + ",\"ts\":" + ts + ",\"kind\":" + kind + ",\"idempotency_key\":" + key +
         ",\"payload\":" + payload + extra + "}";
}

validation check(const std::string& line, envelope_limits limits = {}) {
  envelope_validator v(limits);
  envelope env;
  return v.check(line, env);
}

TEST(Validate, AcceptsStandardEnvelopeAndExtractsFields) {
  envelope_validator v;
  envelope env;
  auto r = v.check(event("\"550e8400-e29b-41d4-a716-446655440000\"", "\"2025-01-15T10:30:00Z\"", "\"a\\u0062c\"",
                         "\"key\\n1\"", "{\"x\":[1,2,{\"y\":null}]}", ",\"topic\":\"t/1\""),
                   env);
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(env.kind, "abc");
  EXPECT_EQ(env.idempotency_key, "key\n1");
  EXPECT_EQ(env.trace_id, "550e8400-e29b-41d4-a716-446655440000");
  EXPECT_TRUE(env.has_topic);
  EXPECT_EQ(env.topic, "t/1");
}

TEST(Validate, FieldOrderDoesNotMatter) {
  auto r = check(R"({"payload":{},"idempotency_key":"k","kind":"x","ts":"2025-01-15T10:30:00Z","trace_id":"550e8400-e29b-41d4-a716-446655440000"})");
  EXPECT_TRUE(r.ok()) << r.message;
}

TEST(Validate, InvalidJson) {
  for (std::string bad : {"", "not json", "{", "{\"a\":}", "[1,2]", "42", "\"str\"", "{\"a\":tru}",
                          "{\"a\":1} trailing", "{\"a\":1}}", "\xEF\xBB\xBF{\"a\":1}"}) {
    auto r = check(bad);
    EXPECT_EQ(r.why, reason::invalid_json) << "input: " << bad << " -> " << r.message;
    EXPECT_FALSE(r.message.empty());
  }
  // Broken JSON deep in the payload is found too, even after valid fields.
  EXPECT_EQ(check(event("\"550e8400-e29b-41d4-a716-446655440000\"", "\"2025-01-15T10:30:00Z\"", "\"k\"", "\"k\"",
                        "{\"a\":[1,2,nul]}"))
                .why,
            reason::invalid_json);
}

TEST(Validate, RejectsWhatJsonbCannotStore) {
  auto r = check(event("\"550e8400-e29b-41d4-a716-446655440000\"", "\"2025-01-15T10:30:00Z\"", "\"k\"", "\"k\"",
                       "{\"a\":\"x\\u0000y\"}"));
  EXPECT_EQ(r.why, reason::invalid_json);
  EXPECT_NE(r.message.find("u0000"), std::string::npos) << r.message;
  r = check(event("\"550e8400-e29b-41d4-a716-446655440000\"", "\"2025-01-15T10:30:00Z\"", "\"k\"", "\"k\"",
                  "{\"a\":\"\\ud800\"}"));
  EXPECT_EQ(r.why, reason::invalid_json) << "lone surrogate";
  r = check(std::string("{\"trace_id\":\"") + "\xff\xfe" + "\"}");
  EXPECT_EQ(r.why, reason::invalid_json) << "invalid UTF-8";
}

// An envelope's numbers must fit the parser (schemas/envelope.md); a bare
// message for a route may hold bigger ones, read through markers.
TEST(Validate, NumbersBeyondTheParserOnlyForBareMessages) {
  const std::string big = event("\"550e8400-e29b-41d4-a716-446655440000\"", "\"2025-01-15T10:30:00Z\"", "\"k\"",
                                "\"k\"", "{\"a\":1e400}");
  auto r = check(big);
  EXPECT_EQ(r.why, reason::invalid_json);
  EXPECT_NE(r.message.find("out of range"), std::string::npos) << r.message;
  envelope_validator v;
  EXPECT_EQ(v.check_json(big, big.size()).why, reason::invalid_json) << "not unless asked";
  EXPECT_FALSE(v.marked_numbers());
  ASSERT_TRUE(v.check_json(big, big.size(), true).ok());
  EXPECT_TRUE(v.marked_numbers());
  std::string_view marker;
  ASSERT_FALSE(v.document()["payload"]["a"].get_string().get(marker));
  EXPECT_EQ(marker, std::string_view("\0" "1e400", 6));
  ASSERT_TRUE(v.check_json(R"({"a":1})", 7, true).ok());
  EXPECT_FALSE(v.marked_numbers()) << "only the document it was set for";
  const std::string backslash = R"({"path":"C:\\u0000x","n":1e400})";
  ASSERT_TRUE(v.check_json(backslash, backslash.size(), true).ok()) << "an escaped backslash is no U+0000";
  EXPECT_TRUE(v.marked_numbers());
  // Still refused: a malformed number, and a big one beside U+0000.
  EXPECT_EQ(v.check_json(R"({"a":1e400,"b":01})", 18, true).why, reason::invalid_json);
  EXPECT_EQ(v.check_json(R"({"a":1e400,"b":"\u0000"})", 24, true).why, reason::invalid_json);
  EXPECT_FALSE(v.marked_numbers());
}

TEST(Validate, DepthLimit) {
  std::string deep = "{\"a\":";
  std::string nested;
  for (int i = 0; i < 100; ++i) nested += "[";
  for (int i = 0; i < 100; ++i) nested += "]";
  auto r = check(event("\"550e8400-e29b-41d4-a716-446655440000\"", "\"2025-01-15T10:30:00Z\"", "\"k\"", "\"k\"",
                       "{\"a\":" + nested + "}"));
  EXPECT_EQ(r.why, reason::invalid_json);
}

TEST(Validate, MissingFieldsAreNamed) {
  auto r = check(R"({"trace_id":"550e8400-e29b-41d4-a716-446655440000","kind":"x","payload":{}})");
  EXPECT_EQ(r.why, reason::missing_field);
  EXPECT_NE(r.message.find("ts"), std::string::npos);
  EXPECT_NE(r.message.find("idempotency_key"), std::string::npos);
  EXPECT_EQ(check("{}").why, reason::missing_field);
}

TEST(Validate, DuplicateEnvelopeFieldIsRefused) {
  auto r = check(event("\"550e8400-e29b-41d4-a716-446655440000\"", "\"2025-01-15T10:30:00Z\"", "\"k\"", "\"a\"",
                       "{}", ",\"idempotency_key\":\"b\""));
  EXPECT_EQ(r.why, reason::invalid_json);
  EXPECT_NE(r.message.find("idempotency_key"), std::string::npos);
}

TEST(Validate, TraceIdForms) {
  for (std::string ok : {"550e8400-e29b-41d4-a716-446655440000", "550E8400-E29B-41D4-A716-446655440000",
                         "{550e8400-e29b-41d4-a716-446655440000}", "550e8400e29b41d4a716446655440000",
                         "550e-8400-e29b-41d4-a716-4466-5544-0000", "{550e8400e29b41d4a716446655440000}"}) {
    EXPECT_TRUE(is_pg_uuid(ok)) << ok;
  }
  for (std::string bad : {"", "nope", "550e8400-e29b-41d4-a716-44665544000",
                          "550e8400-e29b-41d4-a716-4466554400000", "550e8400-e29b-41d4-a716-44665544000g",
                          "{550e8400-e29b-41d4-a716-446655440000", "550e8400-e29b-41d4-a716-446655440000}",
                          "550e84-00e29b-41d4-a716-446655440000", " 550e8400-e29b-41d4-a716-446655440000",
                          "550e8400--e29b-41d4-a716-446655440000", "-550e8400-e29b-41d4-a716-446655440000"}) {
    EXPECT_FALSE(is_pg_uuid(bad)) << bad;
  }
  EXPECT_EQ(check(event("\"nope\"")).why, reason::invalid_trace_id);
  EXPECT_EQ(check(event("12")).why, reason::invalid_trace_id);
  EXPECT_EQ(check(event("null")).why, reason::invalid_trace_id);
}

TEST(Validate, TimestampForms) {
  for (std::string ok : {"2025-01-15T10:30:00Z", "2025-01-15T10:30:00.123456Z", "2025-01-15T10:30:00.1+05:30",
                         "2025-01-15t10:30:00z", "2025-01-15 10:30:00", "2025-01-15T10:30:00-0800",
                         "2025-01-15T10:30:00+01", "2024-02-29T00:00:00Z", "2025-01-15T10:30Z",
                         "2016-12-31T23:59:60Z", "2025-01-15T10:30:00.123456789+00:00"}) {
    EXPECT_TRUE(is_iso8601_datetime(ok)) << ok;
  }
  for (std::string bad : {"", "2025-01-15", "2025-13-01T00:00:00Z", "2025-02-29T00:00:00Z", "2100-02-29T00:00:00Z",
                          "2025-04-31T00:00:00Z", "2025-01-15T24:00:00Z", "2025-01-15T10:60:00Z",
                          "2025-01-15T10:30:61Z", "2025-01-15T10:30:00.Z", "2025-01-15T10:30:00+5",
                          "2025-01-15T10:30:00+24:00", "2025-01-15T10:30:00Zjunk", "25-01-15T10:30:00Z",
                          "2025-1-15T10:30:00Z", "2025-01-15X10:30:00Z", "1642247400", "2025-01-00T10:30:00Z"}) {
    EXPECT_FALSE(is_iso8601_datetime(bad)) << bad;
  }
  EXPECT_EQ(check(event("\"550e8400-e29b-41d4-a716-446655440000\"", "\"yesterday\"")).why, reason::invalid_ts);
  EXPECT_EQ(check(event("\"550e8400-e29b-41d4-a716-446655440000\"", "1642247400")).why, reason::invalid_ts);
}

TEST(Validate, KindKeyPayloadTopicRules) {
  const std::string id = "\"550e8400-e29b-41d4-a716-446655440000\"", ts = "\"2025-01-15T10:30:00Z\"";
  EXPECT_EQ(check(event(id, ts, "\"\"")).why, reason::invalid_kind);
  EXPECT_EQ(check(event(id, ts, "7")).why, reason::invalid_kind);
  EXPECT_EQ(check(event(id, ts, "\"k\"", "\"\"")).why, reason::invalid_idempotency_key);
  EXPECT_EQ(check(event(id, ts, "\"k\"", "[\"a\"]")).why, reason::invalid_idempotency_key);
  EXPECT_EQ(check(event(id, ts, "\"k\"", "\"" + std::string(256, 'x') + "\"")).why, reason::invalid_idempotency_key);
  EXPECT_TRUE(check(event(id, ts, "\"k\"", "\"" + std::string(255, 'x') + "\"")).ok());
  envelope_limits small;
  small.max_key_bytes = 4;
  EXPECT_EQ(check(event(id, ts, "\"k\"", "\"abcde\""), small).why, reason::invalid_idempotency_key);
  EXPECT_EQ(check(event(id, ts, "\"k\"", "\"k\"", "[1]")).why, reason::invalid_payload);
  EXPECT_EQ(check(event(id, ts, "\"k\"", "\"k\"", "\"text\"")).why, reason::invalid_payload);
  EXPECT_EQ(check(event(id, ts, "\"k\"", "\"k\"", "null")).why, reason::invalid_payload);
  EXPECT_EQ(check(event(id, ts, "\"k\"", "\"k\"", "{}", ",\"topic\":\"\"")).why, reason::invalid_topic);
  EXPECT_EQ(check(event(id, ts, "\"k\"", "\"k\"", "{}", ",\"topic\":5")).why, reason::invalid_topic);
  EXPECT_EQ(check(event(id, ts, "\"k\"", "\"k\"", "{}", ",\"topic\":\"" + std::string(256, 't') + "\"")).why,
            reason::invalid_topic);
  // The topic column is VARCHAR(255): characters, whatever their bytes.
  std::string cjk255, emoji255;
  for (int i = 0; i < 255; ++i) cjk255 += "\xe6\x97\xa5";     // 日, 3 bytes
  for (int i = 0; i < 255; ++i) emoji255 += "\xf0\x9f\x98\x80";  // 😀, 4 bytes
  EXPECT_TRUE(check(event(id, ts, "\"k\"", "\"k\"", "{}", ",\"topic\":\"" + cjk255 + "\"")).ok());
  EXPECT_TRUE(check(event(id, ts, "\"k\"", "\"k\"", "{}", ",\"topic\":\"" + emoji255 + "\"")).ok());
  EXPECT_EQ(check(event(id, ts, "\"k\"", "\"k\"", "{}", ",\"topic\":\"" + cjk255 + "x\"")).why, reason::invalid_topic);
  EXPECT_EQ(utf8_chars(emoji255), 255u);
  EXPECT_EQ(varchar_prefix(cjk255 + "abc", 256), cjk255 + "a");
}

TEST(Validate, SizeLimit) {
  envelope_limits small;
  small.max_event_bytes = 100;
  auto line = event("\"550e8400-e29b-41d4-a716-446655440000\"", "\"2025-01-15T10:30:00Z\"", "\"k\"", "\"k\"",
                    "{\"pad\":\"" + std::string(100, 'x') + "\"}");
  auto r = check(line, small);
  EXPECT_EQ(r.why, reason::too_large);
  EXPECT_NE(r.message.find("100"), std::string::npos);
}

TEST(Validate, ParsesInPlaceWithPadding) {
  // Two events in one buffer: the first is validated in place, reading ahead
  // into the second, which must not leak into the result.
  std::string a = event();
  std::string buf = a + "\n" + std::string(200, ' ');
  envelope_validator v;
  envelope env;
  auto r = v.check(std::string_view(buf).substr(0, a.size()), buf.size(), env);
  EXPECT_TRUE(r.ok()) << r.message;
}

TEST(Validate, ReasonCodesAreStable) {
  EXPECT_EQ(reason_code(reason::invalid_json), "invalid_json");
  EXPECT_EQ(reason_code(reason::missing_field), "missing_field");
  EXPECT_EQ(reason_code(reason::too_large), "too_large");
  EXPECT_EQ(reason_code(reason::invalid_idempotency_key), "invalid_idempotency_key");
}

}  // namespace
}  // namespace evpipe::stages
